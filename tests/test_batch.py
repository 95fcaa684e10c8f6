"""The batch engine and the batch command, against the fake server over loopback."""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest

import llmadapters as la
from llmadapters.batch import (
    BatchItem,
    LatencyHistogram,
    Shard,
    completed_ids,
    duplicate_ids,
    output_record,
    read_jsonl,
    write_record,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from llmadapters.testing import FakeServer

FAST_RETRY = {"initial_delay": 0.01, "max_delay": 0.02}


def line(i: int, model: str = "local/echo", **extra: Any) -> dict[str, Any]:
    return {
        "custom_id": f"q{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": f"question {i}"}], **extra},
    }


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


async def test_ten_thousand_lines_with_faults_give_one_record_each(fake_server: FakeServer) -> None:
    """10% of lines fail: half with a retryable 503 on their first attempt, half with a
    final 400. Every line gets exactly one result; the 503s succeed on retry."""
    providers = {"local": {"base_url": fake_server.base_url, "headers": {"x-fake-fail-times": "1"}}}
    n = 10_000

    def requests() -> Iterator[dict[str, Any]]:
        for i in range(n):
            model = "local/echo+fail-503" if i % 20 == 0 else "local/echo+fail-400" if i % 20 == 10 else "local/echo"
            yield line(i, model)

    seen: dict[str, la.BatchResult] = {}
    async with la.AsyncClient({}, providers=providers, retry=FAST_RETRY) as client:
        async for result in client.batch(requests(), concurrency=128):
            assert result.custom_id not in seen
            seen[result.custom_id] = result
    assert len(seen) == n
    failed = {cid for cid, r in seen.items() if not r.ok}
    assert failed == {f"q{i}" for i in range(10, n, 20)}
    assert all(isinstance(seen[cid].error, la.BadRequestError) for cid in failed)
    assert all(seen[f"q{i}"].attempts == 2 and seen[f"q{i}"].ok for i in range(0, n, 20))
    assert seen["q1"].response is not None
    assert seen["q1"].response.choices[0].message.content == "question 1"


@pytest.mark.parametrize("cap", [None, 2], ids=["uncapped", "capped-below-the-workers"])
async def test_memory_is_bounded_by_concurrency_not_input(fake_server: FakeServer, cap: int | None) -> None:
    """Also when most workers wait for a slot of a lower cap: that lane is busy, not held
    up by a rate limit, and the input is not read ahead for it."""
    concurrency, n = 16, 5_000
    produced = consumed = ahead = 0

    def requests() -> Iterator[dict[str, Any]]:
        nonlocal produced
        for i in range(n):
            produced += 1
            yield line(i)

    local: dict[str, Any] = {"base_url": fake_server.base_url}
    if cap is not None:
        local["limits"] = {"max_concurrency": cap}
    async with la.AsyncClient({}, providers={"local": local}) as client:
        async for _ in client.batch(requests(), concurrency=concurrency):
            consumed += 1
            ahead = max(ahead, produced - consumed)
    assert consumed == n
    # Taken from the input but not yet yielded: in the lane's queue (2 x concurrency + 16),
    # with a worker, or in the results queue (+1 in the consumer's hands).
    assert ahead <= 4 * concurrency + 17


async def test_a_slow_provider_does_not_hold_up_another(fake_server: FakeServer) -> None:
    providers = {
        "slow": {"base_url": fake_server.base_url, "headers": {"x-fake-ttft-ms": "1500"}},
        "fast": {"base_url": fake_server.base_url},
    }
    interleaved = [line(i, "slow/echo" if i % 2 == 0 else "fast/echo") for i in range(16)]
    order: list[str] = []
    async with la.AsyncClient({}, providers=providers) as client:
        async for result in client.batch(interleaved, concurrency=4):
            order.append(result.custom_id)
    fast = {f"q{i}" for i in range(1, 16, 2)}
    assert set(order[:8]) == fast  # all fast lines answered before the first slow one


async def test_invalid_requests_become_error_results_and_the_rest_go_on(fake_server: FakeServer) -> None:
    rows: list[Any] = [
        line(0),
        {"custom_id": "bad-url", "method": "POST", "url": "/v1/moderations", "body": {"input": "x"}},
        {"custom_id": "no-messages", "body": {"model": "local/echo"}},
        ["not", "an", "object"],
        {"custom_id": "unknown", "body": {"model": "nowhere/echo", "messages": [{"role": "user", "content": "x"}]}},
        line(5),
    ]
    async with la.AsyncClient({}, providers={"local": {"base_url": fake_server.base_url}}) as client:
        results = {r.custom_id: r async for r in client.batch(rows)}
    assert {cid for cid, r in results.items() if r.ok} == {"q0", "q5"}
    assert str(results["bad-url"].error) == (
        "invalid request: request 1: only POST /v1/chat/completions and /v1/embeddings are supported, "
        "got POST /v1/moderations"
    )
    assert "'messages' must be a non-empty list" in str(results["no-messages"].error)
    assert "expected a JSON object" in str(results["line-4"].error)
    assert "unknown provider 'nowhere'" in str(results["unknown"].error)
    assert all(r.attempts == 0 for cid, r in results.items() if not r.ok)


async def test_stopping_the_consumer_cancels_in_flight_calls(fake_server: FakeServer) -> None:
    providers = {"local": {"base_url": fake_server.base_url, "headers": {"x-fake-ttft-ms": "200"}}}
    before = len(asyncio.all_tasks())
    async with la.AsyncClient({}, providers=providers) as client:
        run = client.batch((line(i) for i in range(1000)), concurrency=8)
        async for _ in run:
            break
        await asyncio.sleep(0.05)
        assert len(asyncio.all_tasks()) <= before + len(fake_server._connections)
    assert run.read < 100  # the input was not read ahead
    await asyncio.sleep(0.3)
    assert fake_server.active == 0


def test_sync_client_batch_runs_concurrently() -> None:
    with la.Client({}) as client:
        rows = [{"model": "fake/echo", "messages": [{"role": "user", "content": f"s{i}"}]} for i in range(200)]
        started = time.monotonic()
        results = list(client.batch(rows, concurrency=50))
        assert len(results) == 200
        assert {r.response.choices[0].message.content for r in results if r.response} == {f"s{i}" for i in range(200)}
        assert time.monotonic() - started < 10


def test_read_jsonl_numbers_lines_and_keeps_bad_ones() -> None:
    items = list(read_jsonl(['{"messages": [{"role": "user", "content": "a"}]}\n', "\n", "{oops\n", '"text"\n']))
    assert [(i.index, i.custom_id, i.line, i.problem is None) for i in items] == [
        (0, "line-1", 1, True),
        (1, "line-3", 3, False),
        (2, "line-4", 4, False),
    ]
    assert isinstance(items[0], BatchItem)
    assert items[1].problem is not None
    assert items[1].problem.startswith("line 3: not JSON")


def test_a_line_nested_too_deep_for_json_is_a_bad_line_not_the_end_of_the_run() -> None:
    deep = '{"messages": [{"role": "user", "content": ' + "[" * 5000 + "]" * 5000 + "}]}"
    good = '{"messages": [{"role": "user", "content": "a"}]}'
    items = list(read_jsonl([good, deep, good]))
    assert [(i.custom_id, i.problem) for i in items] == [
        ("line-1", None),
        ("line-2", "line 2: JSON nested too deep to read"),
        ("line-3", None),
    ]


async def test_a_message_nested_too_deep_fails_its_line_alone(fake_server: FakeServer) -> None:
    nested: object = "x"
    for _ in range(3000):
        nested = [nested]
    rows = [{"model": "fake/echo", "messages": [{"role": "user", "content": c}]} for c in ("a", nested, "b")]
    async with la.AsyncClient({}, providers={"fake": {"base_url": fake_server.base_url}}) as client:
        results = {r.custom_id: r async for r in client.batch(rows)}
    assert [results[f"line-{i}"].ok for i in (1, 2, 3)] == [True, False, True]
    assert "nested more than 200 levels deep" in str(results["line-2"].error)


def test_completed_ids_repairs_a_cut_last_line(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"custom_id": "a"}\n{"custom_id": "b"}\n{"custom_id": "c", "resp')
    assert completed_ids(out) == {"a", "b"}
    assert out.read_text() == '{"custom_id": "a"}\n{"custom_id": "b"}\n'
    assert completed_ids(tmp_path / "missing.jsonl") == set()


# -- the command ------------------------------------------------------------------------


def cli(
    *args: str, cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmadapters.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        input=stdin,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def _small_files() -> None:
    """In the child: files of 16 KiB at most, a write past it an OSError (EFBIG), as a
    full disk would be."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, 16 * 1024))


def test_an_output_that_cannot_be_written_stops_the_run_with_a_clear_error_and_resume_finishes(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [line(i, "fake/echo") for i in range(200)])
    args = [sys.executable, "-m", "llmadapters.cli", "batch", str(src), "-o", "out.jsonl", "--summary-json", "s.json"]
    ran = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120, preexec_fn=_small_files)
    assert ran.returncode == 1
    assert "cannot write out.jsonl: File too large; the run stopped, the records written are kept" in ran.stderr
    assert "Traceback" not in ran.stderr
    assert json.loads((tmp_path / "s.json").read_text())["requests"] > 0  # the summary is written
    resumed = cli("batch", str(src), "-o", "out.jsonl", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(r["custom_id"] for r in records(tmp_path / "out.jsonl")) == sorted(f"q{i}" for i in range(200))


def test_resuming_lines_without_custom_ids_warns_that_they_are_matched_by_line_number(tmp_path: Path) -> None:
    bodies = [{"model": "fake/echo", "messages": [{"role": "user", "content": f"question {i}"}]} for i in range(3)]
    src = write_jsonl(tmp_path / "in.jsonl", bodies)
    assert cli("batch", str(src), "-o", "out.jsonl", cwd=tmp_path).returncode == 0
    resumed = cli("batch", str(src), "-o", "out.jsonl", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0
    assert "line 1 (and maybe others) has no custom_id, so it is matched to the output by its line number" in (
        resumed.stderr
    )
    with_ids = write_jsonl(tmp_path / "ids.jsonl", [line(i, "fake/echo") for i in range(3)])
    assert cli("batch", str(with_ids), "-o", "ids.out.jsonl", cwd=tmp_path).returncode == 0
    resumed = cli("batch", str(with_ids), "-o", "ids.out.jsonl", "--resume", cwd=tmp_path)
    assert "no custom_id" not in resumed.stderr


def test_cli_batch_writes_openai_batch_output_and_a_summary(tmp_path: Path) -> None:
    rows: list[Any] = [line(i, "fake/echo") for i in range(50)]
    rows[7] = line(7, "fake/fail-400")
    rows.insert(20, "{this is not json")
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    run = cli("batch", str(src), "-o", "out.jsonl", "--summary-json", "summary.json", cwd=tmp_path)
    assert run.returncode == 1, run.stderr  # some lines ended in an error
    out = records(tmp_path / "out.jsonl")
    assert len(out) == 51
    by_id = {r["custom_id"]: r for r in out}
    assert by_id["q3"]["response"]["status_code"] == 200
    assert by_id["q3"]["response"]["body"]["choices"][0]["message"]["content"] == "question 3"
    assert by_id["q3"]["error"] is None
    assert by_id["q7"]["response"]["status_code"] == 400
    assert by_id["q7"]["error"]["code"] == "BadRequestError"
    assert by_id["line-21"]["response"] is None
    assert by_id["line-21"]["error"]["message"].startswith("invalid request: line 21: not JSON")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["requests"], summary["ok"], summary["errors"]) == (51, 49, 2)
    assert summary["errors_by_kind"] == {"BadRequestError": 2}
    assert summary["tokens"]["out"] > 0
    assert "requests 51: 49 ok, 2 errors (BadRequestError 2)" in run.stderr


def test_cli_batch_stdin_to_stdout_with_a_default_model(tmp_path: Path) -> None:
    rows = "".join(json.dumps({"messages": [{"role": "user", "content": f"m{i}"}]}) + "\n" for i in range(5))
    run = cli("batch", "-", "-o", "-", "--model", "fake/echo", "--quiet", cwd=tmp_path, stdin=rows)
    assert run.returncode == 0, run.stderr
    out = [json.loads(x) for x in run.stdout.splitlines()]
    assert sorted(r["custom_id"] for r in out) == [f"line-{i}" for i in range(1, 6)]
    assert run.stderr == ""


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "llmadapters batch: cannot read missing.jsonl: no such file"),
        ("duplicates", "llmadapters batch: in.jsonl: duplicate custom_id: 'q1' on lines 2, 4"),
        ("unwritable", "llmadapters batch: cannot write no/such/dir/out.jsonl: No such file or directory"),
        ("exists", "llmadapters batch: out.jsonl exists: add --resume to continue it, or choose another file"),
        (
            "config",
            "llmadapters batch: bad.toml: defaults.transport: unknown transport 'htpx' (did you mean 'httpx'?); "
            "available: httpx, openai",
        ),
    ],
)
def test_cli_batch_usage_problems_send_nothing(tmp_path: Path, setup: str, message: str) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [line(0, "fake/echo"), line(1, "fake/echo"), line(2, "fake/echo")])
    output = "out.jsonl"
    options: list[str] = []
    if setup == "config":
        (tmp_path / "bad.toml").write_text('[defaults]\ntransport = "htpx"\n')
        options = ["--config", "bad.toml"]
    elif setup == "duplicates":
        write_jsonl(src, [line(0, "fake/echo"), line(1, "fake/echo"), line(2, "fake/echo"), line(1, "fake/echo")])
    elif setup == "unwritable":
        output = "no/such/dir/out.jsonl"
    elif setup == "exists":
        (tmp_path / "out.jsonl").write_text('{"custom_id": "old"}\n')
    run = cli("batch", "missing.jsonl" if setup == "missing" else "in.jsonl", "-o", output, *options, cwd=tmp_path)
    assert (run.returncode, run.stderr.strip()) == (2, message)
    if setup == "exists":
        assert (tmp_path / "out.jsonl").read_text() == '{"custom_id": "old"}\n'
    else:
        assert not (tmp_path / "out.jsonl").exists()


def test_shards_split_an_input_exactly_once_between_them() -> None:
    ids = [f"q{i}" for i in range(1000)] + [f"line-{i}" for i in range(1, 200)]
    shards = [Shard.parse(f"{i}/4") for i in range(1, 5)]
    owners = [[shard for shard in shards if cid in shard] for cid in ids]
    assert all(len(owner) == 1 for owner in owners)
    sizes = [sum(owner == [shard] for owner in owners) for shard in shards]
    assert min(sizes) > 0.2 * len(ids)  # roughly even
    assert all(cid in Shard.parse("1/1") for cid in ids)
    assert sum("\ud800" in shard for shard in shards) == 1  # valid JSON, not encodable UTF-8


@pytest.mark.parametrize("text", ["0/4", "5/4", "2", "a/b", "1/0", "2/-4"])
def test_bad_shards_are_usage_errors(tmp_path: Path, text: str) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [line(0, "fake/echo")])
    run = cli("batch", str(src), "-o", "out.jsonl", "--shard", text, cwd=tmp_path)
    assert run.returncode == 2
    assert "argument --shard: expected I/N" in run.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_cli_batch_shards_answer_every_request_once_and_resume_alone(tmp_path: Path) -> None:
    rows = [line(i, "fake/echo") for i in range(40)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    seen: list[str] = []
    for i in range(1, 4):
        run = cli("batch", str(src), "-o", f"out.{i}.jsonl", "--shard", f"{i}/3", "--summary-json", f"s{i}.json",
                  cwd=tmp_path)  # fmt: skip
        assert run.returncode == 0, run.stderr
        mine = [r["custom_id"] for r in records(tmp_path / f"out.{i}.jsonl")]
        assert mine
        assert all(cid in Shard(i, 3) for cid in mine)
        summary = json.loads((tmp_path / f"s{i}.json").read_text())
        assert (summary["shard"], summary["requests"]) == (f"{i}/3", len(mine))
        seen += mine
    assert sorted(seen) == sorted(f"q{i}" for i in range(40))  # merged: each request exactly once
    again = cli("batch", str(src), "-o", "out.2.jsonl", "--shard", "2/3", "--resume", "--summary-json", "r.json",
                cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr
    resumed = json.loads((tmp_path / "r.json").read_text())
    assert (resumed["requests"], resumed["skipped_as_done"]) == (0, len(records(tmp_path / "out.2.jsonl")))


def test_cli_batch_empty_input(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text("")
    run = cli("batch", "in.jsonl", "-o", "out.jsonl", "--summary-json", "s.json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "s.json").read_text())["requests"] == 0
    assert "None" not in run.stderr  # no latency to show: no "latency p50 None s"
    assert "requests 0: 0 ok, 0 errors" in run.stderr


def test_cli_batch_progress_as_json_lines(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [line(i, "fake/echo") for i in range(20)])
    run = cli("batch", str(src), "-o", "out.jsonl", "--progress", "json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    progress = [json.loads(x) for x in run.stderr.splitlines() if x.startswith("{")]
    assert progress[-1]["done"] == progress[-1]["total"] == 20


def _stats(base_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base_url}/fake/stats", timeout=10) as response:  # loopback only
        data: dict[str, Any] = json.load(response)
    return data


@pytest.fixture
def external_fake_server() -> Iterator[str]:
    """A fake server in its own process, so that killing the batch does not kill it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmadapters.cli", "fake-server", "--port", "0", "--ttft-ms", "40"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    base_url = proc.stdout.readline().rsplit(" ", 1)[-1].strip()
    yield base_url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGINT])
def test_killed_then_resumed_loses_nothing_and_repeats_nothing(
    tmp_path: Path, external_fake_server: str, kill: signal.Signals
) -> None:
    n = 1500
    src = write_jsonl(tmp_path / "in.jsonl", [line(i, "local/echo") for i in range(n)])
    config = tmp_path / "llmadapters.toml"
    config.write_text(f'[providers.local]\nbase_url = "{external_fake_server}"\n')
    args = [sys.executable, "-m", "llmadapters.cli", "batch", str(src), "-o", "out.jsonl", "-c", "16", "--quiet"]
    proc = subprocess.Popen(args, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    out = tmp_path / "out.jsonl"
    deadline = time.monotonic() + 60
    while (not out.exists() or len(out.read_text().splitlines()) < 200) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(kill)
    proc.wait(timeout=60)
    assert proc.returncode == (-signal.SIGKILL if kill == signal.SIGKILL else 130)
    first = completed_ids(out)
    assert 200 <= len(first) < n

    resumed = subprocess.run([*args[:-1], "--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    ids = [r["custom_id"] for r in records(out)]
    assert sorted(ids) == sorted(f"q{i}" for i in range(n))  # every line once
    answered = _stats(external_fake_server)["answered"]
    # Nothing recorded by the first run was sent again.
    assert all(answered[f"question {cid[1:]}"] == 1 for cid in first)


def test_twenty_kills_at_random_points_never_leave_a_broken_output(tmp_path: Path, external_fake_server: str) -> None:
    rng = random.Random(20261126)
    n = 3000
    src = write_jsonl(tmp_path / "in.jsonl", [line(i, "local/echo") for i in range(n)])
    (tmp_path / "llmadapters.toml").write_text(f'[providers.local]\nbase_url = "{external_fake_server}"\n')
    out = tmp_path / "out.jsonl"
    args = [
        sys.executable,
        "-m",
        "llmadapters.cli",
        "batch",
        str(src),
        "-o",
        str(out),
        "-c",
        "32",
        "--quiet",
        "--resume",
    ]
    cut_lines = 0
    for _ in range(20):
        proc = subprocess.Popen(args, cwd=tmp_path, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.2))
        proc.kill()
        proc.wait(timeout=30)
        data = out.read_bytes() if out.exists() else b""
        *complete, last = data.split(b"\n")
        for record in complete:  # every complete line is a whole record
            assert json.loads(record)["custom_id"].startswith("q")
        cut_lines += bool(last)  # a cut last line is repaired by the next --resume
    final = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    ids = [r["custom_id"] for r in records(out)]
    assert sorted(ids) == sorted(f"q{i}" for i in range(n))
    print(f"20 kills survived; {cut_lines} left a cut last line, repaired on resume")


def test_latency_percentiles_stay_within_half_a_percent_in_bounded_memory() -> None:
    rng = random.Random(7)
    latencies = [rng.lognormvariate(-1, 1.5) for _ in range(50_000)] + [0.0] * 10
    histogram = LatencyHistogram()
    assert histogram.percentile(50) is None
    for value in latencies:
        histogram.add(value)
    ordered = sorted(latencies)
    for p in (1, 50, 95, 99, 100):
        exact = ordered[max(1, -(-p * len(ordered) // 100)) - 1]
        measured = histogram.percentile(p)
        assert measured is not None
        assert abs(measured - exact) <= 0.005 * exact, (p, measured, exact)
    assert histogram.percentile(0.01) == 0.0  # the zero latencies have a bucket of their own
    assert len(histogram.counts) < 3000  # buckets, not one entry per latency


def _id_lines(ids: list[str]) -> list[str]:
    return [json.dumps({"custom_id": i, "messages": [{"role": "user", "content": "x"}]}) for i in ids]


def test_duplicate_ids_are_found_exactly_among_many() -> None:
    ids = [f"req-{n}" for n in range(20_000)] + ["req-17", "req-19999", "req-17"]
    lines = _id_lines(ids)
    duplicates, count = duplicate_ids(lambda: lines)
    assert count == 20_003
    assert duplicates == {"req-17": [18, 20001, 20003], "req-19999": [20000, 20002]}
    assert duplicate_ids(lambda: lines[:20_000]) == ({}, 20_000)
    shard = Shard(1, 2)
    assert duplicate_ids(lambda: lines, shard)[1] == sum(i in shard for i in ids)


def test_ids_sharing_a_fingerprint_are_not_taken_for_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmadapters.batch import jsonl

    # Every id gets the same fingerprint: all are suspects, and the second reading tells
    # the true duplicates from the rest.
    monkeypatch.setattr(jsonl, "_mark", lambda custom_id: (7, len(custom_id)))
    lines = _id_lines(["a", "bb", "a", "cc", "d"])
    assert duplicate_ids(lambda: lines) == ({"a": [1, 3]}, 5)


# -- 429s, request ids, sending failed lines again ------------------------------------


async def test_a_line_answered_429_is_sent_again_until_it_succeeds(fake_server: FakeServer) -> None:
    # Five 429s in a row: more than the retry policy's 3 attempts, which a batch line
    # does not count against; every send keeps the line's Idempotency-Key.
    refusing = {"x-fake-fail-times": "5", "x-fake-retry-after": "0"}
    providers = {"local": {"base_url": fake_server.base_url, "headers": refusing}}
    rows = [line(0, "local/echo+fail-429"), line(1, "local/echo")]
    async with la.AsyncClient({}, providers=providers) as client:
        results = {r.custom_id: r async for r in client.batch(rows)}
        limits = client.limits()["local"]
    assert results["q0"].ok, results["q0"].error
    assert results["q0"].attempts == 6
    assert results["q1"].attempts == 1
    assert limits["rate_limited"] == 5
    record = output_record(results["q0"])
    assert record["response"]["status_code"] == 200
    assert record["response"]["request_id"]  # the server's x-request-id, not null
    assert results["q0"].response is not None
    assert results["q0"].response.http is not None
    assert results["q0"].response.http.request_id == record["response"]["request_id"]


def test_cli_retry_failed_sends_the_failed_lines_again_and_keeps_one_record_each(
    tmp_path: Path, external_fake_server: str
) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [line(i, "flaky/echo" if i % 3 == 0 else "fake/echo") for i in range(9)])
    down = tmp_path / "down.toml"
    down.write_text(
        f'[providers.flaky]\nbase_url = "http://127.0.0.1:{_closed_port()}/v1"\nretry = {{ max_attempts = 1 }}\n'
    )
    up = tmp_path / "up.toml"
    up.write_text(f'[providers.flaky]\nbase_url = "{external_fake_server}"\n')
    first = cli("batch", "in.jsonl", "-o", "out.jsonl", "--config", str(down), "-q", cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    failed = {r["custom_id"] for r in records(tmp_path / "out.jsonl") if r["error"]}
    assert failed == {"q0", "q3", "q6"}
    again = cli("batch", "in.jsonl", "-o", "out.jsonl", "--config", str(up), "-q", "--retry-failed", cwd=tmp_path)
    assert again.returncode == 2
    assert "--retry-failed continues an output file: add --resume" in again.stderr
    again = cli(
        "batch", "in.jsonl", "-o", "out.jsonl", "--config", str(up), "--resume", "--retry-failed", "-q", cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    out = records(tmp_path / "out.jsonl")
    assert sorted(r["custom_id"] for r in out) == sorted(f"q{i}" for i in range(9))  # one record each
    assert all(r["error"] is None for r in out)
    superseded = records(tmp_path / "out.jsonl.retried")
    assert {r["custom_id"] for r in superseded} == failed
    assert src.exists()
    # An output file that is not batch records is refused, and left as it was.
    (tmp_path / "odd.jsonl").write_text('{"custom_id": "q0", "error": {"code": "X"}}\n[1, 2]\n')
    odd = cli("batch", "in.jsonl", "-o", "odd.jsonl", "--resume", "--retry-failed", "-q", cwd=tmp_path)
    assert odd.returncode == 2
    assert "odd.jsonl: not a batch output file" in odd.stderr
    assert (tmp_path / "odd.jsonl").read_text() == '{"custom_id": "q0", "error": {"code": "X"}}\n[1, 2]\n'
    assert not (tmp_path / "odd.jsonl.retried").exists()


def test_cli_retry_failed_with_a_shard_sends_again_only_that_shards_failed_lines(
    tmp_path: Path, external_fake_server: str
) -> None:
    write_jsonl(tmp_path / "in.jsonl", [line(i, "flaky/echo" if i % 2 == 0 else "fake/echo") for i in range(20)])
    down = tmp_path / "down.toml"
    down.write_text(
        f'[providers.flaky]\nbase_url = "http://127.0.0.1:{_closed_port()}/v1"\nretry = {{ max_attempts = 1 }}\n'
    )
    up = tmp_path / "up.toml"
    up.write_text(f'[providers.flaky]\nbase_url = "{external_fake_server}"\n')
    # One output holding both shards' records (e.g. the shards' outputs put together).
    assert cli("batch", "in.jsonl", "-o", "out.jsonl", "--config", str(down), "-q", cwd=tmp_path).returncode == 1
    failed = {r["custom_id"] for r in records(tmp_path / "out.jsonl") if r["error"]}
    shard = Shard(1, 2)
    mine, others = {i for i in failed if i in shard}, {i for i in failed if i not in shard}
    assert mine
    assert others
    again = cli(
        "batch", "in.jsonl", "-o", "out.jsonl", "--config", str(up), "--resume", "--retry-failed", "--shard", "1/2",
        "-q", cwd=tmp_path,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    out = records(tmp_path / "out.jsonl")
    assert sorted(r["custom_id"] for r in out) == sorted(f"q{i}" for i in range(20))  # one record each
    assert {r["custom_id"] for r in out if r["error"]} == others  # the other shard's: kept, not sent
    assert {r["custom_id"] for r in records(tmp_path / "out.jsonl.retried")} == mine


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_bad_line_deadlines_are_usage_errors(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [line(0, "fake/echo")])
    for bad in ("0", "-3", "soon", "inf"):
        run = cli("batch", str(src), "-o", "out.jsonl", "--line-deadline", bad, cwd=tmp_path)
        assert run.returncode == 2
        assert "expected a positive number of seconds" in run.stderr
        assert not (tmp_path / "out.jsonl").exists()
    run = cli("batch", str(src), "-o", "out.jsonl", "--summary-json", "nowhere/s.json", cwd=tmp_path)
    assert run.returncode == 2
    assert "--summary-json nowhere/s.json: its directory does not exist" in run.stderr
    assert not (tmp_path / "out.jsonl").exists()


async def test_a_bug_in_a_middleware_ends_the_run_with_its_error(fake_server: FakeServer) -> None:
    async def broken(call: Any, call_next: Any) -> Any:
        if call.request.messages[0]["content"] == "question 1":
            raise KeyError("a bug")
        return await call_next(call)

    providers = {"local": {"base_url": fake_server.base_url}}
    async with la.AsyncClient({}, providers=providers, middleware=[broken]) as client:

        async def drain() -> None:
            async for _ in client.batch([line(i) for i in range(5)]):
                pass

        with pytest.raises(KeyError, match="a bug"):
            await asyncio.wait_for(drain(), 60)  # raised, not hung


# -- malformed lines and fallback chains (issue 20) --------------------------------------


def test_cli_batch_a_malformed_model_costs_its_line_and_a_chain_falls_back(tmp_path: Path) -> None:
    question = [{"role": "user", "content": "chained"}]
    rows: list[Any] = [
        line(0, "fake/echo"),
        {"custom_id": "int", "model": 5, "messages": question},
        {"custom_id": "chain", "model": ["fake/echo+fail-400", "fake/echo"], "messages": question},
        {"custom_id": "dead", "model": ["fake/echo+fail-400", "fake/fail-401"], "messages": question},
        {"custom_id": "empty", "model": [], "messages": question},
        {"custom_id": "provider", "model": "fake/echo", "provider": {"order": ["x"]}, "messages": question},
        {"custom_id": "nosuch", "model": "nosuch/some-model", "messages": question},
        line(1, "fake/echo"),
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    run = cli("batch", str(src), "-o", "out.jsonl", "--quiet", cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    by_id = {r["custom_id"]: r for r in records(tmp_path / "out.jsonl")}
    assert len(by_id) == len(rows)
    assert by_id["q0"]["error"] is None
    assert by_id["q1"]["error"] is None
    assert by_id["chain"]["error"] is None
    assert by_id["chain"]["response"]["body"]["choices"][0]["message"]["content"] == "chained"
    assert by_id["int"]["error"]["message"] == (
        "invalid request: line 2: model must be a 'provider/model' string or a list of them (a fallback chain), got 5"
    )
    assert by_id["dead"]["error"]["code"] == "AuthenticationError"
    assert by_id["dead"]["error"]["message"] == (
        "every model of the fallback chain failed: fake/echo+fail-400: HTTP 400 from fake: Invalid request "
        "(injected); fake/fail-401: HTTP 401 from fake: Incorrect API key provided (injected)"
    )
    assert by_id["empty"]["error"]["message"].startswith("invalid request: line 5: model: an empty list")
    assert by_id["provider"]["error"]["message"].startswith("invalid request: line 6: provider must be")
    assert by_id["nosuch"]["error"]["message"].startswith(
        "invalid request: line 7: model 'nosuch/some-model': unknown provider 'nosuch'"
    )


async def test_client_batch_fallback_chains_move_lines_between_lanes(fake_server: FakeServer) -> None:
    providers = {"alpha": {"base_url": fake_server.base_url}, "beta": {"base_url": fake_server.base_url}}
    chains = [["alpha/echo+fail-500", "beta/echo"], ["beta/echo+reset", "alpha/echo"], ["alpha/echo"]]
    rows = [{"model": chains[i % 3], "messages": [{"role": "user", "content": f"m{i}"}]} for i in range(60)]
    async with la.AsyncClient({}, providers=providers, middleware=[]) as client:
        results = [r async for r in client.batch([*rows, {"model": 5, "messages": rows[0]["messages"]}])]
    assert len(results) == 61
    by_index = {r.index: r for r in results}
    assert by_index[60].error is not None
    assert "got 5" in str(by_index[60].error)
    for i in range(60):
        reply = by_index[i].response
        assert reply is not None, by_index[i].error
        assert (reply.provider, reply.choices[0].message.content) == (["beta", "alpha", "alpha"][i % 3], f"m{i}")
        assert by_index[i].attempts == [2, 2, 1][i % 3]


async def test_client_batch_refuses_duplicate_ids_as_the_command_does(fake_server: FakeServer) -> None:
    rows = [line(0), line(1), line(0), line(2), line(1)]
    providers = {"local": {"base_url": fake_server.base_url}}
    async with la.AsyncClient({}, providers=providers) as client:
        with pytest.raises(ValueError, match=r"^duplicate custom_id: 'q0' on requests 0, 2; 'q1' on requests 1, 4$"):
            client.batch(rows)
    assert fake_server.requests_served == 0


def test_read_jsonl_names_lines_that_are_not_utf8_or_not_text() -> None:
    good = json.dumps({"custom_id": "ok", "messages": [{"role": "user", "content": "hi"}]}).encode()
    lone = b'{"custom_id": "lone\\ud800", "messages": [{"role": "user", "content": "x\\udc00"}]}'
    pair = b'{"custom_id": "pair", "messages": [{"role": "user", "content": "\\ud83d\\ude00"}]}'
    items = list(read_jsonl([b"\xef\xbb\xbf" + good + b"\n", b'{"custom_id": "\xff"}\n', lone, pair]))
    assert [(i.custom_id, i.problem) for i in items] == [
        ("ok", None),
        ("line-2", "line 2: not UTF-8 text (byte 0xff at offset 15)"),
        ("lone\ud800", "line 3: a \\uD800-\\uDFFF escape without its pair: not text, so it cannot be sent"),
        ("pair", None),
    ]


def test_a_record_the_output_cannot_encode_is_written_with_escapes(tmp_path: Path) -> None:
    result = la.BatchResult(index=0, custom_id="lone\ud800", error=la.BadRequestError("x\udc00", status=400))
    with open(tmp_path / "out.jsonl", "w", encoding="utf-8") as out:
        write_record(out, result)
    assert (tmp_path / "out.jsonl").read_bytes().isascii()
    assert completed_ids(tmp_path / "out.jsonl") == {"lone\ud800"}
