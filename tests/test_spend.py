"""Cost in the batch summary, budgets that stop a run, and ``--estimate``, against the
fake server over loopback."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

import llmadapters as la
from llmadapters.batch import BatchSummary
from llmadapters.types import Cost

if TYPE_CHECKING:
    from pathlib import Path

    from llmadapters.testing import FakeServer

# A call of model "m" with max_tokens=10 is answered with exactly 10 tokens: at 100,000
# per million output tokens (and nothing for input), each costs exactly 1.
PRICES = {"m": {"input": 0.0, "output": 100_000.0}}


def request(i: int, model: str = "m", **extra: Any) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": f"question {i}"}], "max_tokens": 10, **extra}
    return {"custom_id": f"q{i}", "body": body}


async def test_a_budget_stops_new_calls_and_lets_those_in_flight_finish(fake_server: FakeServer) -> None:
    providers = {"local": {"base_url": fake_server.base_url, "prices": PRICES, "headers": {"x-fake-ttft-ms": "30"}}}
    async with la.AsyncClient({"defaults": {"model": "local/m"}}, providers=providers) as client:
        run = client.batch([request(i) for i in range(100)], concurrency=8, max_cost="25.5 USD")
        results = [result async for result in run]
    assert run.budget is not None
    assert run.budget.reached is not None
    assert "budget reached: spent 25 USD of 25.5 USD" in str(run.budget.reached)
    # Every call that started was let finish and was yielded; none more was sent.
    assert len(results) == 25
    assert all(r.ok for r in results)
    assert fake_server.requests_served == 25
    assert fake_server.peak_active > 1  # calls were in flight together when the budget closed
    assert run.budget.spent == pytest.approx(25.0)
    assert run.dropped + len(results) == run.read


async def test_replies_from_the_cache_cost_nothing_against_the_budget_or_in_the_summary(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    config = {
        "defaults": {"model": "local/m", "cache": {"path": str(tmp_path / "cache.sqlite")}},
        "providers": {
            "local": {
                "base_url": fake_server.base_url,
                "prices": PRICES,
                "middleware": ["logging", "cache", "retry", "ratelimit", "timeout"],
            }
        },
    }
    async with la.AsyncClient(config) as client:
        first = [r async for r in client.batch([request(i) for i in range(12)])]
        summary = BatchSummary()
        run = client.batch([request(i) for i in range(12)], max_cost="2 USD")  # the first run cost 12
        again = [r async for r in run]
        for result in again:
            summary.add(result)
    assert all(r.ok for r in first)
    assert len(again) == 12  # all answered, from the cache
    assert all(r.response is not None and r.response.http is not None and r.response.http.cached for r in again)
    assert fake_server.requests_served == 12
    assert run.budget is not None
    assert run.budget.reached is None
    assert run.budget.spent == 0
    totals = summary.as_dict()
    assert totals["cached"] == 12
    assert not totals["cost"]["unpriced"]


async def test_a_budget_reached_ends_the_run_whatever_its_estimates_sum_to(fake_server: FakeServer) -> None:
    """The estimates of calls in flight, added and taken back in another order, need not
    come back to 0.0: the run ended only if they did, and hung otherwise."""
    providers = {"fake": {"base_url": fake_server.base_url, "prices": {"echo": {"input": 1.0, "output": 1.0}}}}
    lines = [
        {
            "custom_id": f"q{i}",
            "body": {"messages": [{"role": "user", "content": f"question number {i} " * 10}], "max_tokens": 50},
        }
        for i in range(20)
    ]
    async with la.AsyncClient({}, providers=providers) as client:
        run = client.batch(lines, model="fake/echo", concurrency=4, max_cost=0.0003)
        results = await asyncio.wait_for(_all(run), 60)  # (a hang fails here, not the suite)
    assert run.budget is not None
    assert run.budget.reached is not None
    assert 0 < len(results) < 20
    assert (run.budget.calls_out, run.budget.reserved) == (0, 0.0)


async def _all(run: la.BatchRun) -> list[la.BatchResult]:
    return [result async for result in run]


async def test_a_budget_refuses_a_model_it_cannot_price(fake_server: FakeServer) -> None:
    providers = {"local": {"base_url": fake_server.base_url, "prices": PRICES}}
    async with la.AsyncClient({}, providers=providers) as client:
        run = client.batch([request(0, "local/unpriced")], max_cost=Cost(1.0))
        results = [result async for result in run]
    assert results == []
    assert fake_server.requests_served == 0
    assert run.budget is not None
    assert "no price is known for local/unpriced" in str(run.budget.reached)
    assert "[providers.local.prices.unpriced]" in str(run.budget.reached)


async def test_the_summary_adds_up_cost_by_model_and_counts_unpriced_replies(fake_server: FakeServer) -> None:
    prices = {**PRICES, "n": {"input": 1_000_000.0, "output": 0.0, "currency": "CNY"}}
    providers = {"local": {"base_url": fake_server.base_url, "prices": prices}}
    summary = BatchSummary()
    rows = [request(i, "local/m") for i in range(3)]
    rows += [request(3, "local/n"), request(4, "local/free-for-all")]
    async with la.AsyncClient({}, providers=providers) as client:
        async for result in client.batch(rows):
            summary.add(result)
    cost = summary.as_dict()["cost"]
    # 3 x 1 USD; "question 3" is 2 words + 4 prompt tokens at 1 CNY each
    assert cost == {
        "total": {"CNY": 6.0, "USD": 3.0},
        "by_model": {"local/m": {"USD": 3.0}, "local/n": {"CNY": 6.0}},
        "unpriced": {"local/free-for-all": 1},
    }


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmadapters.cli", "batch", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**os.environ, "LLMADAPTERS_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def job(tmp_path: Path) -> Path:
    (tmp_path / "llmadapters.toml").write_text(
        '[defaults]\nmodel = "fake/m"\n[providers.fake.prices.m]\ninput = 0.0\noutput = 100000.0\n'
    )
    return write(tmp_path / "in.jsonl", [request(i) for i in range(20)])


def test_the_command_stops_at_its_budget_and_resume_finishes_the_rest(tmp_path: Path, job: Path) -> None:
    first = cli(str(job), "-o", "out.jsonl", "-c", "2", "--max-cost", "5.5", "--summary-json", "s.json", cwd=tmp_path)
    assert first.returncode == 3, first.stderr
    assert "budget reached: spent 5 USD of 5.5 USD" in first.stderr
    assert "15 requests not sent: add --resume (and a larger --max-cost) to continue" in first.stderr
    done = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(done) == 5
    assert all(r["error"] is None for r in done)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["cost"]["total"] == {"USD": 5.0}
    assert summary["budget_reached"].startswith("budget reached")

    second = cli(str(job), "-o", "out.jsonl", "--resume", "--max-cost", "100", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    ids = [json.loads(x)["custom_id"] for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(f"q{i}" for i in range(20))  # each once: nothing sent twice
    assert "cost 15 USD" in second.stderr


def test_the_budget_can_come_from_the_config(tmp_path: Path, job: Path) -> None:
    config = tmp_path / "llmadapters.toml"
    config.write_text(config.read_text().replace("[defaults]\n", '[defaults]\nmax_cost = "2.5 USD"\n'))
    ran = cli(str(job), "-o", "out.jsonl", "-c", "1", cwd=tmp_path)
    assert ran.returncode == 3, ran.stderr
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2


def test_a_bad_budget_is_a_usage_error(tmp_path: Path, job: Path) -> None:
    ran = cli(str(job), "-o", "out.jsonl", "--max-cost", "lots", cwd=tmp_path)
    assert ran.returncode == 2
    assert "--max-cost: expected a positive amount" in ran.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_the_estimate_is_within_ten_percent_of_the_actual_tokens_and_sends_nothing(tmp_path: Path) -> None:
    (tmp_path / "llmadapters.toml").write_text(
        "[providers.fake.prices.m]\ninput = 2.0\ncached_input = 1.0\noutput = 8.0\n"
    )
    rows = []
    for i in range(40):
        messages = [
            {"role": "system", "content": "answer briefly"},
            {"role": "user", "content": " ".join(f"word{j}" for j in range(1 + i % 14))},
        ]
        rows.append({"custom_id": f"q{i}", "body": {"model": "fake/m", "messages": messages, "max_tokens": 5 + i}})
    src = write(tmp_path / "in.jsonl", rows)
    estimate = cli(str(src), "--estimate", "--summary-json", "estimate.json", cwd=tmp_path)
    assert estimate.returncode == 0, estimate.stderr
    assert "nothing sent" in estimate.stderr
    assert not (tmp_path / "out.jsonl").exists()
    guessed = json.loads((tmp_path / "estimate.json").read_text())

    ran = cli(str(src), "-o", "out.jsonl", "--quiet", "--summary-json", "actual.json", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    actual = json.loads((tmp_path / "actual.json").read_text())
    assert guessed["prompt_tokens"] == pytest.approx(actual["tokens"]["in"], rel=0.10)
    assert guessed["output_tokens_bound"] >= actual["tokens"]["out"]
    assert guessed["output_tokens_bound"] == pytest.approx(actual["tokens"]["out"], rel=0.10)
    assert guessed["cost"]["USD"] == pytest.approx(actual["cost"]["total"]["USD"], rel=0.10)
    assert guessed["by_model"]["fake/m"]["requests"] == 40


def test_the_estimate_of_a_batch_api_job_is_at_its_batch_price(tmp_path: Path, job: Path) -> None:
    online = cli(str(job), "--estimate", "--summary-json", "online.json", cwd=tmp_path)
    batched = cli(str(job), "--estimate", "--via", "batch-api", "--summary-json", "batched.json", cwd=tmp_path)
    assert online.returncode == batched.returncode == 0
    assert "at the Batch API's price" in batched.stderr
    # 20 requests of at most 10 output tokens at 100,000 per million: 20 online, half by batch
    assert json.loads((tmp_path / "online.json").read_text())["cost"] == {"USD": 20.0}
    assert json.loads((tmp_path / "batched.json").read_text())["cost"] == {"USD": 10.0}


def test_the_sync_client_takes_a_budget_too() -> None:
    client = la.Client({"providers": {"fake": {"prices": PRICES}}})
    try:
        results = list(client.batch([request(i, "fake/m") for i in range(5)], concurrency=1, max_cost="2.5"))
    finally:
        client.close()
    assert [r.custom_id for r in results] == ["q0", "q1"]


@pytest.mark.parametrize(("concurrency", "limit"), [(1, 7.5), (7, 30.25), (32, 55.0)])
async def test_a_budget_is_never_passed_and_used_until_the_next_call_would_pass_it(
    fake_server: FakeServer, concurrency: int, limit: float
) -> None:
    """Calls of different sizes (max_tokens 5 to 15, each answered with exactly that
    many tokens at 0.1 a token): the run spends at most the budget, and stops only when
    the next call's estimate would not fit."""
    providers = {"local": {"base_url": fake_server.base_url, "prices": PRICES, "headers": {"x-fake-ttft-ms": "5"}}}
    rows = [request(i, "local/m", max_tokens=5 + i % 11) for i in range(200)]
    async with la.AsyncClient({}, providers=providers) as client:
        run = client.batch(rows, concurrency=concurrency, max_cost=limit)
        results = [result async for result in run]
    spent = sum(r.response.cost.amount for r in results if r.response is not None and r.response.cost is not None)
    assert run.budget is not None
    assert spent == pytest.approx(run.budget.spent)
    assert spent <= limit + 1e-9
    answered = {r.custom_id for r in results}
    unsent = [row for row in rows if row["custom_id"] not in answered]
    assert unsent  # the budget stopped the run
    # A call that was waiting when the run stopped would have passed the budget.
    assert any(spent + row["body"]["max_tokens"] * 0.1 > limit + 1e-9 for row in unsent)


def test_progress_lines_carry_the_cost_so_far(tmp_path: Path, job: Path) -> None:
    ran = cli(str(job), "-o", "out.jsonl", "--progress", "json", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    last = [json.loads(x) for x in ran.stderr.splitlines() if x.startswith("{")][-1]
    assert last["cost"] == {"total": {"USD": 20.0}, "by_model": {"fake/m": {"USD": 20.0}}}
    assert "cost 20 USD" in ran.stderr
