"""``--via batch-api``: jobs through the provider's Batch API, against the fake server's
files and batches endpoints over loopback; killed at every stage and resumed."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
from typing import IO, TYPE_CHECKING, Any

import httpx2
import llmadapters_moonshot
import llmadapters_qwen
import llmadapters_zhipu
import pytest
from test_spend import cli

import llmadapters as la
from llmadapters.batch import BatchItem, BatchSummary, completed_ids, read_jsonl
from llmadapters.batch_api import BatchAPIJob, JobState, state_path
from llmadapters.plugins import Registry
from llmadapters.providers.base import BatchAPI, ProviderSpec

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from llmadapters.testing import FakeServer

# A provider with the fake server's Batch API and files of 3 lines at most.
TINY = ProviderSpec(name="tiny", key_required=False, batch_api=BatchAPI(max_lines=3))
EVENTS = ("uploaded", "submitting", "created", "polled", "downloaded", "written", "done")


class Killed(BaseException):
    """Stands for a kill: nothing of ours catches it."""


def write_input(path: Path, n: int, model: str = "tiny/echo") -> Path:
    rows = [
        {"custom_id": f"q{i}", "body": {"model": model, "messages": [{"role": "user", "content": f"question {i}"}]}}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def state_left(out: Path) -> bool:
    return os.path.exists(state_path(out))


def appending(path: Path) -> IO[str]:
    return path.open("a", encoding="utf-8")


async def run_job(
    server: FakeServer,
    src: Path,
    out: Path,
    *,
    headers: dict[str, str] | None = None,
    kill_at: tuple[str, int] | None = None,
    finish_online: bool = False,
    prices: dict[str, Any] | None = None,
    spec: ProviderSpec = TINY,
) -> BatchSummary:
    """One run of the job (as one process would run it), killed at the ``kill_at[1]``th
    ``kill_at[0]`` event when given."""
    registry = Registry.builtin()
    registry.add_providers([spec])
    settings = {"base_url": server.base_url, "headers": headers or {}, "prices": prices or {}, "api_key": "sk-test"}
    seen: collections.Counter[str] = collections.Counter()

    def on_event(event: dict[str, Any]) -> None:
        seen[event["event"]] += 1
        if kill_at is not None and (event["event"], seen[event["event"]]) == kill_at:
            raise Killed

    def items() -> Iterator[BatchItem]:
        with open(src, "rb") as f:
            yield from read_jsonl(f)

    summary = BatchSummary()
    async with la.AsyncClient({}, providers={spec.name: settings}, registry=registry) as client:
        with appending(out) as sink:
            state = JobState.load(state_path(out), spec.name)
            job = BatchAPIJob(
                client,
                spec.name,
                items,
                sink,
                completed_ids(out),
                state,
                summary,
                finish_online=finish_online,
                poll_interval=0.01,
                on_event=on_event,
            )
            await job.run()
    return summary


async def test_a_job_is_split_into_files_and_written_as_the_online_mode_writes(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    src = write_input(tmp_path / "in.jsonl", 8)
    lines = src.read_text().splitlines()
    lines[4] = json.dumps(
        {"custom_id": "q4", "body": {"model": "tiny/fail-400", "messages": [{"role": "user", "content": "x"}]}}
    )
    lines[5] = "not json"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    summary = await run_job(fake_server, src, out, prices={"echo": {"input": 1e6, "output": 2e6}})
    written = {r["custom_id"]: r for r in records(out)}
    assert sorted(written) == sorted([f"q{i}" for i in range(8) if i != 5] + ["line-6"])
    assert len(fake_server.batches.batches) == 3  # 7 valid lines in files of 3
    assert fake_server.batches.lines_answered == 7
    ok = written["q0"]
    assert ok["response"]["status_code"] == 200
    assert ok["response"]["body"]["choices"][0]["message"]["content"] == "question 0"
    assert ok["error"] is None
    refused = written["q4"]
    assert refused["response"]["status_code"] == 400
    assert refused["error"]["code"] == "BadRequestError"
    assert "not JSON" in written["line-6"]["error"]["message"]
    assert not state_left(out)
    # 6 replies of 6 prompt and 2 completion tokens, at half the online price (1 and 2 a token)
    assert summary.as_dict()["cost"]["total"] == {"USD": pytest.approx(6 * (6 * 1 + 2 * 2) * 0.5)}


async def test_resuming_a_finished_job_submits_nothing(fake_server: FakeServer, tmp_path: Path) -> None:
    src = write_input(tmp_path / "in.jsonl", 4)
    out = tmp_path / "out.jsonl"
    await run_job(fake_server, src, out)
    await run_job(fake_server, src, out)
    assert len(records(out)) == 4
    assert len(fake_server.batches.batches) == 2
    assert fake_server.batches.lines_answered == 4


@pytest.mark.parametrize("event", EVENTS)
async def test_killed_at_each_stage_and_resumed_submits_nothing_twice(
    fake_server: FakeServer, tmp_path: Path, event: str
) -> None:
    src = write_input(tmp_path / "in.jsonl", 10)
    out = tmp_path / "out.jsonl"
    headers = {"x-fake-batch-delay-s": "0.05"}
    with pytest.raises(Killed):
        await run_job(fake_server, src, out, headers=headers, kill_at=(event, 2))
    assert state_left(out)
    await run_job(fake_server, src, out, headers=headers)
    ids = [r["custom_id"] for r in records(out)]
    assert sorted(ids) == sorted(f"q{i}" for i in range(10))  # one record each
    assert all(r["error"] is None for r in records(out))
    assert len(fake_server.batches.batches) == 4  # no batch created twice
    assert fake_server.batches.lines_answered == 10  # no line submitted twice
    assert not state_left(out)


async def test_expired_lines_get_error_records_or_are_finished_online(fake_server: FakeServer, tmp_path: Path) -> None:
    src = write_input(tmp_path / "in.jsonl", 3)
    headers = {"x-fake-batch-outcome": "expired", "x-fake-batch-answered": "1"}
    out = tmp_path / "kept.jsonl"
    await run_job(fake_server, src, out, headers=headers)
    by_id = {r["custom_id"]: r for r in records(out)}
    assert by_id["q0"]["error"] is None
    assert by_id["q1"]["response"] is None
    assert by_id["q1"]["error"]["message"].startswith("batch_expired: ")

    online = tmp_path / "online.jsonl"
    await run_job(fake_server, src, online, headers=headers, finish_online=True)
    assert sorted(r["custom_id"] for r in records(online)) == ["q0", "q1", "q2"]
    assert all(r["error"] is None for r in records(online))
    # The second job: q0 answered by its batch, q1 and q2 online, each once.
    assert fake_server.answered["question 0"] == 2
    assert fake_server.answered["question 1"] == 1
    assert fake_server.answered["question 2"] == 1


async def test_a_failed_batch_is_finished_online(fake_server: FakeServer, tmp_path: Path) -> None:
    src = write_input(tmp_path / "in.jsonl", 2)
    out = tmp_path / "out.jsonl"
    await run_job(fake_server, src, out, headers={"x-fake-batch-outcome": "failed"}, finish_online=True)
    assert [r["error"] for r in records(out)] == [None, None]
    assert fake_server.batches.lines_answered == 0


async def test_a_batch_cancelled_while_the_job_was_down_is_finished_online_on_resume(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    src = write_input(tmp_path / "in.jsonl", 3)
    out = tmp_path / "out.jsonl"
    headers = {"x-fake-batch-delay-s": "0.2", "x-fake-batch-answered": "2"}
    with pytest.raises(Killed):
        await run_job(fake_server, src, out, headers=headers, kill_at=("created", 1))
    (batch_id,) = fake_server.batches.batches
    async with httpx2.AsyncClient() as http:
        cancelled = (await http.post(f"{fake_server.base_url}/batches/{batch_id}/cancel")).json()
    assert cancelled["status"] == "cancelling"
    await run_job(fake_server, src, out, headers=headers, finish_online=True)
    assert fake_server.batches.batches[batch_id].status == "cancelled"
    assert sorted(r["custom_id"] for r in records(out)) == ["q0", "q1", "q2"]
    assert fake_server.batches.lines_answered == 2
    assert fake_server.answered["question 2"] == 1  # online


@pytest.mark.parametrize(
    ("spec", "endpoint", "window"),
    [
        (llmadapters_zhipu.ZHIPU, "/v4/chat/completions", None),
        (llmadapters_qwen.QWEN, "/v1/chat/completions", "24h"),
        (llmadapters_moonshot.MOONSHOT, "/v1/chat/completions", "24h"),
    ],
)
async def test_the_shipped_batch_apis_create_batches_as_their_docs_say(
    fake_server: FakeServer, tmp_path: Path, spec: ProviderSpec, endpoint: str, window: str | None
) -> None:
    rows = [
        {
            "custom_id": f"q{i}",
            "body": {"model": f"{spec.name}/{model}", "messages": [{"role": "user", "content": "hi"}]},
        }
        for i, model in enumerate(["a", "a", "b"])
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out.jsonl"
    await run_job(fake_server, src, out, spec=spec)
    batches = list(fake_server.batches.batches.values())
    assert {(b.endpoint, b.completion_window) for b in batches} == {(endpoint, window)}
    one_model_per_file = spec.batch_api is not None and spec.batch_api.one_model_per_file
    assert len(batches) == (2 if one_model_per_file else 1)
    assert sorted(r["custom_id"] for r in records(out)) == ["q0", "q1", "q2"]
    sent = json.loads(fake_server.batches.files[batches[0].input_file_id][1].splitlines()[0])
    assert sent["url"] == endpoint
    assert fake_server.seen_headers[-1]["authorization"] == "Bearer sk-test"


def test_the_command_refuses_a_provider_without_a_batch_api_and_an_unresumed_job(tmp_path: Path) -> None:
    (tmp_path / "llmadapters.toml").write_text('[providers.local]\nbase_url = "http://127.0.0.1:9/v1"\n')
    src = write_input(tmp_path / "in.jsonl", 2, model="local/echo")
    ran = cli(str(src), "-o", "out.jsonl", "--via", "batch-api", cwd=tmp_path)
    assert ran.returncode == 2
    assert "provider 'local' has no Batch API; those that have one: fake, openai" in ran.stderr
    (tmp_path / "out.jsonl.batch-api.json").write_text('{"provider": "fake", "chunks": []}')
    ran = cli(
        str(write_input(tmp_path / "f.jsonl", 2, "fake/echo")), "-o", "out.jsonl", "--via", "batch-api", cwd=tmp_path
    )
    assert ran.returncode == 2
    assert "holds a job already submitted: add --resume" in ran.stderr


@pytest.fixture
def fake_server_process() -> Iterator[str]:
    """A fake server in its own process, so that killing the job does not kill it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmadapters.cli", "fake-server", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    yield proc.stdout.readline().rsplit(" ", 1)[-1].strip()
    proc.terminate()
    proc.wait(timeout=10)


def test_the_command_killed_while_polling_resumes_and_answers_each_line_once(
    tmp_path: Path, fake_server_process: str
) -> None:
    (tmp_path / "llmadapters.toml").write_text(
        f'[providers.fake]\nbase_url = "{fake_server_process}"\nheaders = {{ x-fake-batch-delay-s = "1" }}\n'
    )
    src = write_input(tmp_path / "in.jsonl", 20, model="fake/echo")
    args = [sys.executable, "-m", "llmadapters.cli", "batch", str(src), "-o", "out.jsonl", "--via", "batch-api"]
    proc = subprocess.Popen([*args, "--poll-interval", "0.05"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for text in proc.stderr:  # wait until the batch is created and being polled
        if text.startswith("polled"):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    state = json.loads((tmp_path / "out.jsonl.batch-api.json").read_text())
    assert [chunk["batch_id"] is not None for chunk in state["chunks"]] == [True]
    resumed = subprocess.run(
        [*args, "--resume", "--poll-interval", "0.05"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    ids = [r["custom_id"] for r in records(tmp_path / "out.jsonl")]
    assert sorted(ids) == sorted(f"q{i}" for i in range(20))
    with httpx2.Client() as http:
        answered = http.get(f"{fake_server_process}/fake/stats").json()["answered"]
        batches = http.get(f"{fake_server_process}/batches").json()["data"]
    assert len(batches) == 1
    assert all(answered[f"question {i}"] == 1 for i in range(20))


async def test_a_key_echoed_by_the_server_is_masked_in_batch_api_errors(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    src = write_input(tmp_path / "in.jsonl", 1)
    out = tmp_path / "out.jsonl"
    headers = {"x-fake-batch-outcome": "nonsense-sk-test"}  # refused with a 400 quoting it
    with pytest.raises(la.BadRequestError) as raised:
        await run_job(fake_server, src, out, headers=headers)
    assert "sk-test" not in str(raised.value)
    assert "sk-test" not in repr(raised.value.body)
    assert "nonsense-****" in str(raised.value)


def test_a_budget_is_held_to_the_job_s_estimate_before_it_is_submitted(tmp_path: Path) -> None:
    """A Batch API job cannot be stopped midway: a budget, given on the command line or in
    the config, refuses a job that may pass it before anything is sent."""
    src = tmp_path / "in.jsonl"
    rows = [
        {
            "custom_id": f"q{i}",
            "body": {"model": "fake/echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100},
        }
        for i in range(5)
    ]
    src.write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "llmadapters.toml").write_text(
        '[defaults]\nmax_cost = "0.000001"\n[providers.fake.prices.echo]\ninput = 1.0\noutput = 2.0\n'
    )
    refused = cli(str(src), "-o", "out.jsonl", "--via", "batch-api", "--poll-interval", "0.05", cwd=tmp_path)
    assert refused.returncode == 2
    assert "a Batch API job cannot be stopped midway, and this one's cost is at most" in refused.stderr
    assert not (tmp_path / "out.jsonl").exists()
    assert not (tmp_path / "out.jsonl.batch-api.json").exists()
    sent = cli(
        str(src), "-o", "out.jsonl", "--via", "batch-api", "--max-cost", "5", "--poll-interval", "0.05", cwd=tmp_path
    )
    assert sent.returncode == 0, sent.stderr
    assert sorted(r["custom_id"] for r in records(tmp_path / "out.jsonl")) == [f"q{i}" for i in range(5)]


def test_the_command_finishes_expired_lines_online(tmp_path: Path) -> None:
    (tmp_path / "llmadapters.toml").write_text(
        '[providers.fake.headers]\nx-fake-batch-outcome = "expired"\nx-fake-batch-answered = "2"\n'
    )
    src = write_input(tmp_path / "in.jsonl", 5, model="fake/echo")
    kept = cli(str(src), "-o", "kept.jsonl", "--via", "batch-api", "--poll-interval", "0.05", cwd=tmp_path)
    assert kept.returncode == 1  # three lines expired: error records
    errors = [r["error"] for r in records(tmp_path / "kept.jsonl") if r["error"] is not None]
    assert [e["message"].split(":")[0] for e in errors] == ["batch_expired"] * 3
    online = cli(
        str(src), "-o", "online.jsonl", "--via", "batch-api", "--poll-interval", "0.05", "--finish-online", cwd=tmp_path
    )
    assert online.returncode == 0, online.stderr
    assert "online batch_id=" in online.stderr
    assert sorted(r["custom_id"] for r in records(tmp_path / "online.jsonl")) == [f"q{i}" for i in range(5)]
    assert all(r["error"] is None for r in records(tmp_path / "online.jsonl"))
