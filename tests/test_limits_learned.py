"""The limits the rate limiter learns, on a provider that enforces hidden limits, in
virtual time (tests/simulated.py): each run is minutes of the provider's time, takes
well under a second of ours, and gives the same figures on a loaded machine.

Each run goes through the whole stack: ``client.batch`` with the default middleware
(logging, retry, ratelimit, timeout) and no limits configured. Goodput is the ideal
time for the work under the hidden limit over the time taken.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from simulated import Limits, SimulatedProvider, registry_with, run_virtual

import llmadapters as la
from llmadapters.batch import BatchSummary

LINE = {"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 100}  # 200 tokens


async def _batch(provider: SimulatedProvider, n: int, *, concurrency: int = 64, **options: Any) -> dict[str, Any]:
    config = {"providers": {"sim": {"base_url": "http://127.0.0.1:9/v1", "transport": "sim"}}}
    summary = BatchSummary()
    async with la.AsyncClient(config, registry=registry_with(provider)) as client:
        loop = __import__("asyncio").get_running_loop()
        start = loop.time()
        lines = ({**LINE, "model": "sim/m", "custom_id": f"c{i}"} for i in range(n))
        async for result in client.batch(lines, concurrency=concurrency, **options):
            summary.add(result)
        wall = loop.time() - start
        limits = client.limits()["sim"]
    return {"wall": wall, "errors": summary.errors, "limits": limits, "429s": provider.rate_limited / n}


def test_a_concurrency_cap_without_headers_is_found_and_held() -> None:
    provider = SimulatedProvider(Limits(cap=lambda t: 8, latency=1.0))
    run = run_virtual(_batch(provider, 2000))
    ideal = 2000 * 1.0 / 8
    assert run["errors"] == 0
    assert run["limits"]["concurrency"] in (8, 9)  # held at the cap, or probing one above it
    assert provider.peak == 8
    assert ideal / run["wall"] >= 0.95, run
    assert run["429s"] <= 0.02, run


def test_a_step_past_the_cap_is_taken_back_in_one_go_when_replies_come_in_step() -> None:
    """A server without latency jitter answers a round's calls at the same moment, and
    its 429s come back at once: each frees a slot that a new call fills at a level one
    below. The limit goes back to the calls the provider held when it refused, not to
    one below the level refused, 429 after 429 (that cost 4.9% of calls on a fixed cap
    and 8% on one that drops to a quarter and recovers)."""
    provider = SimulatedProvider(Limits(cap=lambda t: 32, latency=0.1, jitter=0.0))
    run = run_virtual(_batch(provider, 3000))
    assert run["errors"] == 0
    assert run["limits"]["concurrency"] in (32, 33)
    assert 3000 * 0.1 / 32 / run["wall"] >= 0.95, run
    assert run["429s"] <= 0.02, run
    provider = SimulatedProvider(Limits(cap=lambda t: 8 if 3 <= t < 8 else 32, latency=0.1, jitter=0.0))
    run = run_virtual(_batch(provider, 3600))  # the bench's drop scenario: 15 s at the cap
    assert run["errors"] == 0
    assert 15.0 / run["wall"] >= 0.95, run
    # About 1,000 calls at 32, 400 at 8, 2,200 at 32: the 16 over the cap as slow start
    # overshoots it once (every reply of the round at the same instant here), the drop's
    # 24, and the probes, 25 of them while the cap is low: 2.0%. (Calls granted before
    # the drop and answered after it once passed for probes that succeeded: 2.8%.)
    assert run["429s"] <= 0.021, run


def test_a_cap_that_drops_below_the_calls_held_is_found_in_a_few_429s() -> None:
    """When the cap drops to a quarter, the provider still holds the calls sent before:
    each call sent as one of them ends is refused until fewer than the new cap are
    left. A decrease of a quarter at least on each refusal of a level that had
    succeeded finds the cap in a few 429s, not one per call that ended (1.4% of calls
    before, on the bench's drop scenario with jittered replies)."""
    provider = SimulatedProvider(Limits(cap=lambda t: 8 if 3 <= t < 8 else 32, latency=0.1))
    run = run_virtual(_batch(provider, 3600))
    assert run["errors"] == 0
    assert 15.0 / run["wall"] >= 0.95, run
    assert run["429s"] <= 0.011, run


def test_slow_start_opens_a_slot_per_reply_so_passing_the_cap_costs_few_429s() -> None:
    """Above the first 32 calls, each reply adds a slot while calls wait, up to half
    again the level proven each round. As replies come back at different times, the
    first call over the cap is refused before many more are sent (it cost a round's
    overshoot, up to 3/4 of the cap, when the limit grew by a step at once); when they
    all come back at once, the overshoot is at most half the cap."""
    provider = SimulatedProvider(Limits(cap=lambda t: 200, latency=0.5, jitter=0.2))
    run = run_virtual(_batch(provider, 6000, concurrency=400))
    assert run["errors"] == 0
    assert run["limits"]["concurrency"] in (200, 201)
    assert run["429s"] <= 0.003, run  # was 1.25%
    assert 6000 * 0.5 / 200 / run["wall"] >= 0.89, run  # 30 rounds, 4 of them to start
    provider = SimulatedProvider(Limits(cap=lambda t: 64, latency=0.5, jitter=0.0))
    run = run_virtual(_batch(provider, 6400, concurrency=400))
    assert run["errors"] == 0
    assert run["429s"] <= 0.01, run  # 32 -> 48 -> 72: 8 over; doubling went to 128, 64 over
    assert 6400 * 0.5 / 64 / run["wall"] >= 0.97, run


def test_a_stated_concurrency_limit_is_taken_at_its_word() -> None:
    body = {"error": {"message": "Your current concurrency is 40, which exceeds your concurrency limit of 12"}}
    provider = SimulatedProvider(Limits(cap=lambda t: 12, latency=1.0, error_body=body))
    run = run_virtual(_batch(provider, 600))
    assert run["limits"]["concurrency"] in (12, 13)
    assert run["errors"] == 0
    assert provider.rate_limited <= 8  # the first round over it, and the probes above it


def test_requests_per_minute_are_learned_from_headers() -> None:
    provider = SimulatedProvider(Limits(rpm=600, latency=0.5))  # 10/s, a burst of one second's
    run = run_virtual(_batch(provider, 1000))
    ideal = (1000 - 10) / 10
    assert run["errors"] == 0
    assert run["limits"]["rpm"] == pytest.approx(600, rel=0.05)
    assert ideal / run["wall"] >= 0.95, run
    assert run["429s"] <= 0.02, run


def test_tokens_per_minute_are_learned_from_headers() -> None:
    provider = SimulatedProvider(Limits(tpm=120_000, rpm=100_000, latency=0.5))  # 2,000 tokens/s: 10 calls/s
    run = run_virtual(_batch(provider, 1000))
    ideal = (1000 * 200 - 2000) / 2000
    assert run["errors"] == 0
    assert run["limits"]["tpm"] == pytest.approx(120_000, rel=0.05)
    assert ideal / run["wall"] >= 0.95, run
    assert run["429s"] <= 0.02, run


def test_sporadic_429s_delay_their_own_calls_only() -> None:
    provider = SimulatedProvider(Limits(sporadic=0.02, retry_after=1.0, latency=0.5))
    run = run_virtual(_batch(provider, 20_000))
    ideal = 20_000 * 0.5 / 64 + 1.0  # the last line answered 429 cannot hide its wait
    assert run["errors"] == 0
    assert run["limits"]["concurrency"] >= 64  # never lowered for good
    assert ideal / run["wall"] >= 0.95, run


def test_random_429s_while_the_limit_grows_do_not_hold_it_down() -> None:
    """Random 429s come back at once, before the calls sent with them: two of them above
    the levels proven so far lower the limit, and the successes of the calls sent above
    them undo it. Nor do a few close together look like a cap that dropped. A short
    run (about 5 s), where a slow start shows: over six seeds."""
    goodputs = []
    for seed in range(1, 7):
        provider = SimulatedProvider(Limits(sporadic=0.02, retry_after=1.0, latency=0.2), seed=seed)
        run = run_virtual(_batch(provider, 1500))
        assert run["errors"] == 0
        assert run["limits"]["concurrency"] >= 64
        goodputs.append((1500 * 0.2 / 64 + 1.0) / run["wall"])
    assert min(goodputs) >= 0.9, goodputs  # was 0.73 at worst
    assert sum(goodputs) / len(goodputs) >= 0.95, goodputs  # was 0.89


def _dropping(t: float) -> float:
    return 8 if 60 <= t < 120 else 32


def test_a_cap_that_drops_and_recovers_is_followed_both_ways() -> None:
    provider = SimulatedProvider(Limits(cap=_dropping, latency=1.0))
    n = 32 * 60 + 8 * 60 + 32 * 60  # the work of three minutes at the hidden cap
    run = run_virtual(_batch(provider, n))
    assert run["errors"] == 0
    assert 180 / run["wall"] >= 0.95, run
    # Back at the highest level held, the limit holds there until a quiet spell's probe:
    # growing on at once, by doubling steps, cost a burst of 429s (0.97% of calls). While
    # the cap is low, a probe every 2 rounds, each a 429: 30 in the minute, 0.8% of calls.
    assert run["429s"] <= 0.011, run


def test_a_probe_refused_where_the_last_was_waits_twice_as_long() -> None:
    """On a cap that holds, each probe above it costs a 429: every 8 rounds, 0.39% of
    calls at a cap of 32; after one refused at the same level, every 16 rounds."""
    provider = SimulatedProvider(Limits(cap=lambda t: 32, latency=0.1))
    run = run_virtual(_batch(provider, 20_000))
    assert run["errors"] == 0
    assert run["limits"]["concurrency"] in (32, 33)
    assert 20_000 * 0.1 / 32 / run["wall"] >= 0.99, run
    assert provider.rate_limited <= 45, run  # 16 as slow start passes the cap, then a probe every 16 rounds


def test_the_limit_follows_the_cap_within_a_few_seconds() -> None:
    seen: dict[float, Any] = {}
    provider = SimulatedProvider(Limits(cap=_dropping, latency=1.0))

    async def main() -> None:
        import asyncio

        async def watch(client: la.AsyncClient) -> None:
            while True:
                await asyncio.sleep(1.0)
                if "sim" in client.limits():
                    seen[round(asyncio.get_running_loop().time())] = client.limits()["sim"]["concurrency"]

        config = {"providers": {"sim": {"base_url": "http://127.0.0.1:9/v1", "transport": "sim"}}}
        async with la.AsyncClient(config, registry=registry_with(provider)) as client:
            watcher = asyncio.create_task(watch(client))
            lines = ({**LINE, "model": "sim/m"} for _ in range(32 * 60 + 8 * 60 + 32 * 60))
            async for _ in client.batch(lines):
                pass
            watcher.cancel()

    run_virtual(main())
    assert all(seen[t] <= 8 for t in range(65, 118)), seen  # down within 5 s of the drop
    assert all(seen[t] >= 30 for t in range(124, 170)), seen  # back within 4 s of the rise


def test_a_429_never_ends_a_line_before_its_deadline() -> None:
    # Every call is refused for the first 100 s: the lines wait, then all succeed.
    provider = SimulatedProvider(Limits(cap=lambda t: 0 if t < 100 else math.inf, latency=0.1, retry_after=5))
    run = run_virtual(_batch(provider, 50))
    assert run["errors"] == 0
    assert run["wall"] >= 100
    # Refused for good: each line ends as an error once its deadline has passed.
    provider = SimulatedProvider(Limits(cap=lambda t: 0, latency=0.1, retry_after=5))
    run = run_virtual(_batch(provider, 50, line_deadline=30))
    assert run["errors"] == 50
    assert provider.calls <= 50 * (30 // 5 + 2)  # none sent again once its deadline passed


# Moonshot's answer when a day's tokens are spent: a 429, no Retry-After, no code.
_SPENT_TODAY = {"error": {"type": "rate_limit_reached_error", "message": "TPD limit reached"}}


def test_a_provider_that_refuses_every_call_and_says_no_time_is_not_hammered() -> None:
    # Refused at once (a 429 comes back faster than any reply) for 120 s, then open.
    limits = Limits(cap=lambda t: 0 if t < 120 else math.inf, latency=0.1, error_body=_SPENT_TODAY)
    provider = SimulatedProvider(limits)
    run = run_virtual(_batch(provider, 500))
    assert run["errors"] == 0
    # The lane pauses, twice as long each time (1 s, 2 s, ... at most 60 s), instead of
    # sending as fast as it is refused: about 1,000 calls a second before.
    assert provider.rate_limited < 100, provider.rate_limited
    assert run["wall"] < 120 + 60 + 30  # back within a pause of its opening


def test_a_quota_spent_ends_its_lines_at_once_with_no_key_configured() -> None:
    # A gateway that holds the key answers OpenAI's insufficient_quota: no key of ours
    # to retire, and sending again cannot help.
    body = {"error": {"type": "insufficient_quota", "code": "insufficient_quota", "message": "quota"}}
    provider = SimulatedProvider(Limits(cap=lambda t: 0, latency=0.1, error_body=body))
    run = run_virtual(_batch(provider, 300))
    assert run["errors"] == 300
    assert provider.calls == 300  # each line sent once
    assert run["wall"] < 10


@pytest.mark.parametrize("retry_after", [None, 50.0], ids=["backing-off", "retry-after"])
def test_stop_leaves_the_calls_waiting_in_a_paused_lane_unsent(retry_after: float | None) -> None:
    provider = SimulatedProvider(Limits(cap=lambda t: 0, latency=0.1, retry_after=retry_after, error_body=_SPENT_TODAY))

    async def main() -> tuple[int, int, float, int, int]:
        config = {"providers": {"sim": {"base_url": "http://127.0.0.1:9/v1", "transport": "sim"}}}
        async with la.AsyncClient(config, registry=registry_with(provider)) as client:
            lines = [{**LINE, "model": "sim/m", "custom_id": f"c{i}"} for i in range(200)]
            run = client.batch(lines, concurrency=16)
            results: list[la.BatchResult] = []

            async def read() -> None:
                results.extend([result async for result in run])

            reading = asyncio.create_task(read())
            await asyncio.sleep(30)  # the lane is paused by now, calls waiting in the limiter
            loop = asyncio.get_running_loop()
            stopped_at, sent = loop.time(), provider.calls
            run.stop()
            await reading
            return provider.calls - sent, len(results), loop.time() - stopped_at, run.dropped, run.read

    sent_after, finished, took, dropped, read = run_virtual(main())
    assert sent_after == 0  # nothing sent once stopped
    assert took < 1  # not a pause later
    assert finished == 0
    assert dropped == read > 16  # every line taken is left for a resumed run, none lost


def test_a_request_larger_than_the_whole_limit_ends_alone_and_holds_up_no_other() -> None:
    # 2,000 tokens a second, a bucket of one second: a line of 5,000 tokens can never go.
    huge = {**LINE, "max_tokens": 5000}

    async def main() -> tuple[float, dict[str, la.BatchResult]]:
        config = {"providers": {"sim": {"base_url": "http://127.0.0.1:9/v1", "transport": "sim"}}}
        async with la.AsyncClient(config, registry=registry_with(provider)) as client:
            lines = [{**(huge if i == 500 else LINE), "model": "sim/m", "custom_id": f"c{i}"} for i in range(1000)]
            start = asyncio.get_running_loop().time()
            results = {r.custom_id: r async for r in client.batch(lines)}
            return asyncio.get_running_loop().time() - start, results

    provider = SimulatedProvider(Limits(tpm=120_000, rpm=100_000, latency=0.5))
    wall, results = run_virtual(main())
    failed = {cid: r.error for cid, r in results.items() if r.error is not None}
    assert list(failed) == ["c500"]
    assert isinstance(failed["c500"], la.RateLimitError)
    assert "Request too large" in str(failed["c500"])
    assert results["c500"].attempts == 1  # refused for good at once
    ideal = (999 * 200 - 2000) / 2000
    assert ideal / wall >= 0.9, wall  # no lane-wide wait for it


def test_an_input_sorted_by_provider_does_not_hold_up_the_second_behind_the_first() -> None:
    # 600 lines of a provider at 600 requests a minute (a minute's work), then 100 of an
    # unlimited one: those are read, and answered, while the first is still paced.
    limited = SimulatedProvider(Limits(rpm=600, latency=0.5))
    free = SimulatedProvider(Limits(latency=0.5))
    registry = registry_with(limited)
    registry.add_transport("free", lambda options: free)

    async def main() -> dict[str, float]:
        config = {
            "providers": {
                "a": {"base_url": "http://127.0.0.1:9/v1", "transport": "sim"},
                "b": {"base_url": "http://127.0.0.1:9/v1", "transport": "free"},
            }
        }
        done: dict[str, float] = {}
        async with la.AsyncClient(config, registry=registry) as client:
            loop = asyncio.get_running_loop()
            lines = [
                {**LINE, "model": f"{p}/m", "custom_id": f"{p}{i}"}
                for p, n in (("a", 600), ("b", 100))
                for i in range(n)
            ]
            async for result in client.batch(lines):
                assert result.ok
                done[result.custom_id[0]] = loop.time()
        return done

    done = run_virtual(main())
    assert done["a"] >= 55  # a's minute of work
    assert done["b"] < 10  # b's lines did not wait for a's


def test_a_rate_stated_only_in_the_429_s_message_is_taken_at_its_word() -> None:
    # Moonshot sends no x-ratelimit-* of OpenAI's and says its limit in the message.
    body = {"error": {"type": "rate_limit_reached_error", "message": "request reached organization max RPM: 600"}}
    provider = SimulatedProvider(Limits(rpm=600, headers=False, latency=2.0, error_body=body))
    run = run_virtual(_batch(provider, 1200))
    ideal = 1200 / 10  # ten a second, once the first second's burst is spent
    assert run["errors"] == 0
    assert run["limits"]["rpm"] == 600
    assert ideal / run["wall"] >= 0.9, run
    assert run["429s"] <= 0.05, run
