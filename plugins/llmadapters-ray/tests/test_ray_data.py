"""ChatCompletionsUDF and ``llmadapters batch --on ray`` on a local Ray (2 CPUs), against
the fake server, and a real redis-server for the limits shared by every actor."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as aioredis
from llmadapters_ray import ChatCompletionsUDF, share_limits
from llmadapters_redis.testing import END, most_in_a_window, note_grants

from llmadapters.cli import main
from llmadapters.config import load_settings

if TYPE_CHECKING:
    from llmadapters.testing import FakeServer


def answer(
    ray: Any, rows: list[dict[str, Any]], udf: type[ChatCompletionsUDF] = ChatCompletionsUDF, **kwargs: Any
) -> list[dict[str, Any]]:
    actors = kwargs.setdefault("actors", 2)
    dataset = ray.data.from_items(rows).map_batches(
        udf, fn_constructor_kwargs=kwargs, compute=ray.data.ActorPoolStrategy(size=actors), batch_size=50
    )
    return list(dataset.take_all())


def test_every_row_gets_its_reply_or_its_error_and_one_error_fails_no_other_row(
    ray_cluster: Any, llmadapters_fake_server: FakeServer
) -> None:
    config = {"providers": {"local": {"base_url": llmadapters_fake_server.base_url, "retry": {"max_attempts": 2}}}}
    rows: list[dict[str, Any]] = [{"id": i, "prompt": f"question {i}", "model": "local/echo"} for i in range(120)]
    rows[7]["model"] = "local/fail-400"  # refused, not retried
    rows[8]["model"] = "local/fail-500"  # retried, then failed
    rows[9]["model"] = "nosuch/echo"  # no such provider: refused before any call
    out = answer(
        ray_cluster, rows, config=config, prompt_column="prompt", model_column="model", params={"max_tokens": 5}
    )
    by_id = {row["id"]: row for row in out}
    assert sorted(by_id) == list(range(120))
    assert by_id[7]["error"].startswith("BadRequestError: ")
    assert by_id[7]["generated_text"] is None
    assert by_id[7]["attempts"] == 1
    assert by_id[8]["error"].startswith("ServerError: ")
    assert by_id[8]["attempts"] == 2
    assert by_id[9]["error"].startswith("BadRequestError: invalid request: ")
    assert "nosuch" in by_id[9]["error"]
    for i in set(range(120)) - {7, 8, 9}:
        row = by_id[i]
        assert (row["generated_text"], row["error"], row["attempts"]) == (f"question {i}", None, 1)
        assert (row["prompt_tokens"], row["completion_tokens"]) == (6, 2)
        assert row["prompt"] == f"question {i}"  # the input's columns are kept


def test_a_messages_column_is_sent_as_each_rows_conversation(
    ray_cluster: Any, llmadapters_fake_server: FakeServer
) -> None:
    config = {"providers": {"local": {"base_url": llmadapters_fake_server.base_url}}}
    rows = [
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"hi {i}"}]}
        for i in range(10)
    ]
    rows.append({"messages": []})  # not a request: its error, and the others go on
    out = answer(ray_cluster, rows, config=config, model="local/echo")
    texts = Counter(row["generated_text"] for row in out)
    assert texts == Counter({**{f"hi {i}": 1 for i in range(10)}, None: 1})
    [bad] = [row for row in out if row["error"] is not None]
    assert "'messages' must be a non-empty list" in bad["error"]


def test_without_a_shared_backend_each_actor_gets_an_equal_share_of_the_limits() -> None:
    settings = load_settings(
        {
            "defaults": {"limits": {"rpm": 600, "tpm": 90_000, "max_concurrency": 9}},
            "providers": {
                "own": {"limits": {"rpm": 100, "max_concurrency": 2}},
                "shared": {"limits": {"backend": "redis", "url": "redis://127.0.0.1:1/0", "rpm": 1000}},
            },
        }
    )
    shared = share_limits(settings, 4)
    assert (shared.limits.rpm, shared.limits.tpm, shared.limits.max_concurrency) == (150, 22_500, 2)
    own = shared.limits_of("own")
    assert (own.rpm, own.max_concurrency) == (25, 1)  # at least one call each
    assert shared.limits_of("shared") == settings.limits_of("shared")  # one budget for all already
    assert share_limits(settings, 1) == settings
    with pytest.raises(ValueError, match="actors must be >= 1"):
        share_limits(settings, 0)


async def test_2000_rows_over_two_providers_keep_to_each_ones_shared_rate_across_actors(
    ray_cluster: Any, llmadapters_fake_server: FakeServer, redis_url: str
) -> None:
    rate = 120.0  # requests per second per provider: 1,000 rows each take about 8 s
    limits = {"backend": "redis", "url": redis_url, "rpm": rate * 60}
    config = {
        "defaults": {"plugins": ["redis"]},
        "providers": {
            name: {"base_url": llmadapters_fake_server.base_url, "limits": limits} for name in ("alpha", "beta")
        },
    }
    rows = [{"id": i, "prompt": f"p{i}", "model": f"{('alpha', 'beta')[i % 2]}/echo"} for i in range(2000)]
    # No read timeout (redis-py's connections have 5 s): MONITOR waits for commands,
    # and none come while the actors start.
    redis = aioredis.from_url(redis_url, socket_timeout=None)
    async with redis.monitor() as monitor:
        noting = asyncio.ensure_future(note_grants(monitor))
        out = await asyncio.to_thread(
            answer, ray_cluster, rows, config=config, prompt_column="prompt", model_column="model"
        )
        await redis.echo(END)
        grants: dict[str, list[float]] = {}
        for grant in await noting:
            grants.setdefault(grant.key, []).append(grant.at)
    await redis.aclose()
    assert sorted(row["id"] for row in out) == list(range(2000))
    assert [row for row in out if row["error"] is not None or row["generated_text"] != row["prompt"]] == []
    assert len(llmadapters_fake_server.arrivals) == 2000  # no call sent twice
    # One budget per provider, shared by both actors: each granted its 1,000 calls once,
    # and by Redis's clock never more than GCRA allows in any window (the rate x the
    # window, plus the one-second burst, +1 for the clock's rounding). The actors' share
    # is not split (share_limits leaves a shared backend's budgets whole).
    scopes = sorted(grants)
    assert [scope.split("{")[1].split("}")[0] for scope in scopes] == ["alpha", "beta"], scopes
    for scope in scopes:
        granted = sorted(grants[scope])
        assert len(granted) == 1000, scope
        for window in (1.0, 4.0):
            assert most_in_a_window(granted, window) <= rate * window + rate + 1, (scope, window)
        observed = (len(granted) - 1) / (granted[-1] - granted[0])
        print(f"{scope}: 1,000 calls from 2 actors, shared limit {rate:.0f}/s: granted {observed:.1f}/s")


class KilledMidBatch(ChatCompletionsUDF):
    """Kills its own actor, once (a file marks it), while the calls of the batch holding
    the row ``kill me`` are in flight: its results are never handed back to Ray."""

    def __init__(self, *, marker: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.marker = marker

    def first_kill(self) -> bool:
        try:
            with open(self.marker, "x") as f:
                f.write(str(os.getpid()))
        except FileExistsError:
            return False
        return True

    async def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if "kill me" in list(batch["prompt"]) and self.first_kill():
            calls = asyncio.ensure_future(super().__call__(batch))
            await asyncio.sleep(0.3)  # the calls wait out the server's 1 s before a reply
            os.kill(os.getpid(), signal.SIGKILL)
            await calls
        return await super().__call__(batch)


def test_an_actor_killed_mid_batch_loses_no_row_and_writes_none_twice(
    ray_cluster: Any, llmadapters_fake_server: FakeServer, tmp_path: Path
) -> None:
    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors cannot import tests
    marker = tmp_path / "killed"
    config = {
        "providers": {"local": {"base_url": llmadapters_fake_server.base_url, "headers": {"x-fake-ttft-ms": "1000"}}}
    }
    rows = [{"id": i, "prompt": "kill me" if i == 75 else f"p{i}"} for i in range(300)]
    out = answer(
        ray_cluster, rows, KilledMidBatch, config=config, model="local/echo", prompt_column="prompt", marker=str(marker)
    )
    assert marker.exists()  # an actor was killed: Ray sent its batch again to a new one
    assert int(marker.read_text()) != os.getpid()
    assert sorted(row["id"] for row in out) == list(range(300))
    assert all(row["generated_text"] == row["prompt"] and row["error"] is None for row in out)
    # The limit of the guarantee: the calls in flight when the actor died may have
    # reached the server, and are made again with the batch.
    assert len(llmadapters_fake_server.arrivals) >= 300
    print(f"300 rows, one actor killed mid-batch: {len(llmadapters_fake_server.arrivals)} calls reached the server")


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_the_cli_on_ray_writes_the_records_the_local_engine_writes(
    ray_cluster: Any, llmadapters_fake_server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "llmadapters.toml"
    config.write_text(
        f'[defaults]\nplugins = ["ray"]\n\n[providers.local]\nbase_url = "{llmadapters_fake_server.base_url}"\n'
    )
    requests = [
        json.dumps(
            {
                "custom_id": f"r{i}",
                "body": {"model": "local/echo", "messages": [{"role": "user", "content": f"q{i} é"}]},
            }
        )
        for i in range(150)
    ]
    requests[3] = json.dumps({"model": "local/fail-400", "messages": [{"role": "user", "content": "refused"}]})
    requests[4] = "{not json"
    requests[5] = json.dumps({"custom_id": "empty", "messages": []})
    requests[6] = json.dumps(
        {"custom_id": "vectors", "url": "/v1/embeddings", "body": {"model": "local/embed", "input": ["a", "b"]}}
    )
    source = _jsonl(tmp_path / "in.jsonl", requests)
    here, there = tmp_path / "here.jsonl", tmp_path / "there.jsonl"
    assert main(["batch", str(source), "-o", str(here), "--config", str(config), "-q"]) == 1  # some errors
    assert main(["batch", str(source), "-o", str(there), "--config", str(config), "-q", "--on", "ray"]) == 1

    def records(path: Path) -> dict[str, Any]:
        """By custom_id, each reply without its ``created`` time (the second it was made)."""
        found = [json.loads(line) for line in path.read_text().splitlines()]
        assert len(found) == len({r["custom_id"] for r in found})
        for record in found:
            if record["error"] is None and record["custom_id"] != "vectors":
                assert record["response"]["body"].pop("created") > 0
        return {r["custom_id"]: r for r in found}

    local, on_ray = records(here), records(there)
    assert len(on_ray) == 150
    assert on_ray == local
    assert on_ray["line-4"]["response"]["status_code"] == 400  # the server's refusal, as sent
    assert on_ray["line-5"]["error"]["code"] == "BadRequestError"
    assert "not JSON" in on_ray["line-5"]["error"]["message"]
    assert on_ray["line-5"]["response"] is None
    assert on_ray["empty"]["response"] is None
    assert on_ray["r7"]["response"]["body"]["choices"][0]["message"]["content"] == "q7 é"
    assert [len(item["embedding"]) for item in on_ray["vectors"]["response"]["body"]["data"]] == [64, 64]


def test_the_cli_on_ray_resumes_a_run_and_sends_nothing_done_again(
    ray_cluster: Any, llmadapters_fake_server: FakeServer, tmp_path: Path
) -> None:
    config = tmp_path / "llmadapters.toml"
    config.write_text(
        f'[defaults]\nplugins = ["ray"]\n\n[providers.local]\nbase_url = "{llmadapters_fake_server.base_url}"\n'
    )
    lines = [
        json.dumps({"custom_id": f"r{i}", "model": "local/echo", "messages": [{"role": "user", "content": f"q{i}"}]})
        for i in range(100)
    ]
    out = tmp_path / "out.jsonl"
    _jsonl(tmp_path / "first.jsonl", lines[:40])
    assert (
        main(["batch", str(tmp_path / "first.jsonl"), "-o", str(out), "--config", str(config), "-q", "--on", "ray"])
        == 0
    )
    source = _jsonl(tmp_path / "all.jsonl", lines)
    assert main(["batch", str(source), "-o", str(out), "--config", str(config), "-q", "--on", "ray", "--resume"]) == 0
    ids = [json.loads(line)["custom_id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(f"r{i}" for i in range(100))
    assert len(llmadapters_fake_server.arrivals) == 100


def test_the_cli_starts_a_ray_of_its_own_answers_on_it_and_prints_its_summary(tmp_path: Path) -> None:
    lines = [
        json.dumps({"model": "fake/echo", "messages": [{"role": "user", "content": f"hi {i}"}]}) for i in range(100)
    ]
    source = _jsonl(tmp_path / "in.jsonl", [*lines, json.dumps({"model": "fake/fail-400", "messages": lines[:1]})])
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "llmadapters.cli", "batch", str(source), "-o", str(tmp_path / "out.jsonl")]
    run = subprocess.run([*command, "--on", "ray"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert run.returncode == 1, run.stderr  # one request refused
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(r["custom_id"] for r in records) == sorted(f"line-{i}" for i in range(1, 102))
    assert "requests 101: 100 ok, 1 errors (BadRequestError 1)" in run.stderr
    assert "Starting execution" not in run.stderr  # Ray Data's own progress is off


def test_the_cli_refuses_an_unknown_runner_and_an_address_without_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _jsonl(
        tmp_path / "in.jsonl", [json.dumps({"model": "fake/echo", "messages": [{"role": "user", "content": "hi"}]})]
    )
    config = tmp_path / "llmadapters.toml"
    config.write_text('[defaults]\nplugins = ["ray"]\n')
    out = tmp_path / "out.jsonl"
    assert main(["batch", str(source), "-o", str(out), "--config", str(config), "--on", "spark"]) == 2
    assert "--on spark: no batch runner of that name (known: ray)" in capsys.readouterr().err
    assert main(["batch", str(source), "-o", str(out), "--address", "127.0.0.1:6379"]) == 2
    assert "--address is the cluster of a runner: add --on RUNNER" in capsys.readouterr().err
    assert not out.exists()


ROOT = Path(__file__).resolve().parents[3]


def test_the_guides_example_prints_what_the_guide_shows(tmp_path: Path) -> None:
    example = ROOT / "plugins" / "llmadapters-ray" / "examples" / "ray_dataset.py"
    guide = (ROOT / "docs" / "guides" / "ray.md").read_text()
    assert '--8<-- "plugins/llmadapters-ray/examples/ray_dataset.py"' in guide
    # A Ray of its own, on loopback, sending no usage report.
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    run = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == "200 rows, 0 failed, 1000 completion tokens\nwhat is 7 + 7?\n"
    assert f"```text\n{run.stdout}```" in guide


def test_the_benchmark_runs_and_replaces_its_section_of_the_performance_page_and_nothing_else(
    tmp_path: Path,
) -> None:
    old = "<!-- bench/ray_data.py: begin -->\n## Ray Data\n\nan earlier run\n<!-- bench/ray_data.py: end -->\n"
    (tmp_path / "performance.md").write_text(f"# Performance\n\nwritten by bench/run.py\n\n{old}\nafter it\n")
    script = ROOT / "bench" / "ray_data.py"
    args = [sys.executable, str(script), "--rows", "128", "--rounds", "1", "--out", str(tmp_path)]
    run = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    results = json.loads((tmp_path / "ray-performance.json").read_text())
    assert results["rows"] == 128
    assert results["local_rows_per_s"] > 0
    assert results["ray_rows_per_s"] > 0
    page = (tmp_path / "performance.md").read_text()
    head, section = "# Performance\n\nwritten by bench/run.py\n\n", "<!-- bench/ray_data.py: begin -->\n## Ray Data\n"
    assert page.startswith(head + section)
    assert page.endswith("<!-- bench/ray_data.py: end -->\n\nafter it\n")
    assert page.count("## Ray Data") == 1
    assert "an earlier run" not in page
    assert f"{results['ray_rows_per_s']:,} rows/s" in page
    assert "# Ray Data, measured" in (tmp_path / "ray-performance.md").read_text()
