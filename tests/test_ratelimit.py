"""The rate limiter, measured on calls over real loopback HTTP."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

import llmadapters as la
from llmadapters.middleware import Call, CallNext, Limits, RateLimitMiddleware, Reply, RetryMiddleware, RetryPolicy
from llmadapters.middleware.ratelimit import estimate_tokens, stated_rate
from llmadapters.testing import FakeServer, FakeServerOptions
from tests.conftest import eventually

MESSAGES = [{"role": "user", "content": "count me"}]
MakeClient = Callable[..., la.AsyncClient]


class Probe:
    """A middleware inside the limiter: sees when each call really starts, and how many
    are in flight."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.in_flight = 0
        self.peak = 0

    async def __call__(self, call: Call, call_next: CallNext) -> Reply:
        self.starts.append(time.monotonic())
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await call_next(call)
        finally:
            self.in_flight -= 1


async def _burst(client: la.AsyncClient, n: int, model: str = "local/echo", **params: Any) -> None:
    await asyncio.gather(*(client.chat.completions.create(model=model, messages=MESSAGES, **params) for _ in range(n)))


def _max_in_window(starts: list[float], window: float) -> int:
    starts = sorted(starts)
    best, j = 0, 0
    for i, t in enumerate(starts):
        while starts[j] < t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


async def test_requests_per_minute_and_concurrency_hold_over_a_burst(make_client: MakeClient) -> None:
    probe = Probe()
    limiter = RateLimitMiddleware(Limits(max_concurrency=16, rpm=60_000, adaptive=False))
    client = make_client(middleware=[limiter, probe], headers={"x-fake-ttft-ms": "5"})
    started = time.monotonic()
    await _burst(client, 2000)
    elapsed = time.monotonic() - started
    assert len(probe.starts) == 2000
    assert probe.peak <= 16
    # 1,000/s, with at most one second's worth as a burst: 2,000 calls need >= 1 s.
    assert elapsed >= 0.95
    # No 1-second window holds more than the rate plus the bucket (within 10%).
    assert _max_in_window(probe.starts, 1.0) <= 2000 * 1.1
    assert _max_in_window(probe.starts, 0.5) <= (500 + 1000) * 1.1


async def test_calls_waiting_on_a_rate_budget_wait_in_turn(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls that hold a slot and wait for the requests budget wait one at a time: the
    others wait for it, not each on a timer of its own that would fire with all the
    others' only for the first of them to go (64 waiters made about 64 wake-ups a call)."""
    sleeps = 0
    real_sleep = asyncio.sleep

    async def counted_sleep(delay: float, *args: Any) -> Any:
        nonlocal sleeps
        if sys._getframe(1).f_globals["__name__"] == "llmadapters.middleware.ratelimit":
            sleeps += 1
        return await real_sleep(delay, *args)

    monkeypatch.setattr(asyncio, "sleep", counted_sleep)
    probe = Probe()
    limiter = RateLimitMiddleware(Limits(max_concurrency=64, rpm=12_000, adaptive=False))
    client = make_client(middleware=[limiter, probe])
    await _burst(client, 300)  # 200 at once (the bucket), then 200/s
    assert len(probe.starts) == 300
    assert 0 < sleeps <= 2 * 100, sleeps


async def test_tokens_per_minute_hold_with_usage_corrections(make_client: MakeClient) -> None:
    probe = Probe()
    limiter = RateLimitMiddleware(Limits(tpm=60_000, adaptive=False))  # 1,000 tokens/s
    client = make_client(middleware=[limiter, probe])
    started = time.monotonic()
    # Each call: estimate ceil(len('"count me"')/4) + max_tokens 100 = 103; actual usage 6 + 100 = 106.
    await _burst(client, 30, model="local/lorem", max_tokens=100)
    elapsed = time.monotonic() - started
    budget = limiter.budget()
    assert budget.tokens is not None
    # 30 x 106 = 3,180 tokens at 1,000/s with a 1,000-token bucket: about 2.2 s.
    assert 1.8 < elapsed < 10
    assert budget.tokens.level < 1000  # the corrections were charged: nothing left over


async def test_providers_do_not_wait_on_each_other(fake_server: FakeServer) -> None:
    providers = {
        "slow": {"base_url": fake_server.base_url, "limits": {"rpm": 6, "adaptive": False}},
        "fast": {"base_url": fake_server.base_url},
    }
    async with la.AsyncClient({}, providers=providers, middleware=["ratelimit"]) as client:
        slow = [
            asyncio.ensure_future(client.chat.completions.create(model="slow/echo", messages=MESSAGES))
            for _ in range(3)
        ]
        await _burst(client, 50, model="fast/echo")
        # The slow provider's second call waits 10 s; the fast one's 50 went on meanwhile.
        assert sum(task.done() for task in slow) == 1
        for task in slow:
            task.cancel()
        await asyncio.gather(*slow, return_exceptions=True)


async def test_per_model_budgets(make_client: MakeClient) -> None:
    limiter = RateLimitMiddleware(Limits(max_concurrency=2, per_model=True, adaptive=False))
    client = make_client(middleware=[limiter])
    await _burst(client, 4, model="local/echo")
    await _burst(client, 4, model="local/lorem")
    assert limiter.budget("echo") is not limiter.budget("lorem")
    assert limiter.budget("echo").finished == 4


async def test_adaptive_mode_converges_under_a_hidden_concurrency_limit() -> None:
    hidden = 8
    async with FakeServer(FakeServerOptions(max_concurrency=hidden, ttft=0.02)) as server:
        limiter = RateLimitMiddleware(Limits(max_concurrency=64))
        throttled = 0

        async def count_429(call: Call, call_next: CallNext) -> Reply:
            nonlocal throttled
            try:
                return await call_next(call)
            except la.RateLimitError:
                throttled += 1
                raise

        retry = RetryMiddleware(RetryPolicy(max_attempts=20, max_delay=0.05))
        providers = {"local": {"base_url": server.base_url, "headers": {"x-fake-retry-after": "0.05"}}}
        async with la.AsyncClient({}, providers=providers, middleware=[retry, limiter, count_429]) as client:
            await _burst(client, 400)
        budget = limiter.budget()
    assert server.peak_active == hidden
    assert hidden / 2 <= budget.limit <= hidden * 2, budget.limit
    # The first burst over the limit is paid once, not on every round.
    assert throttled < 150, throttled


def test_token_estimate() -> None:
    request = la.ChatRequest(
        provider="p", model="m", messages=[{"role": "user", "content": "x" * 400}], params={"max_tokens": 50}
    )
    assert estimate_tokens(request) == 101 + 50


async def test_a_stream_holds_its_slot_until_it_ends(make_client: MakeClient) -> None:
    limiter = RateLimitMiddleware(Limits(max_concurrency=1, adaptive=False))
    client = make_client(middleware=[limiter])
    stream = await client.chat.completions.create(model="local/echo", messages=MESSAGES, stream=True)
    second = asyncio.ensure_future(client.chat.completions.create(model="local/echo", messages=MESSAGES))
    await asyncio.sleep(0.1)
    assert not second.done()
    async with stream:
        async for _ in stream:
            pass
    assert (await second).choices[0].message.content == "count me"
    assert limiter.budget().in_flight == 0


async def test_limits_in_config(fake_server: FakeServer) -> None:
    config = {
        "defaults": {"limits": {"max_concurrency": 4}},
        "providers": {"local": {"base_url": fake_server.base_url, "limits": {"rpm": 600}}},
    }
    async with la.AsyncClient(config, middleware=["ratelimit"]) as client:
        await client.chat.completions.create(model="local/echo", messages=MESSAGES)
        route = await client.route("local")
        assert route.middleware[0].limits == Limits(rpm=600)  # type: ignore[attr-defined]
    with pytest.raises(la.ConfigError, match=r"providers.x.limits.rpm: expected a positive number per minute, got -5"):
        la.AsyncClient({"providers": {"x": {"base_url": fake_server.base_url, "limits": {"rpm": -5}}}})
    with pytest.raises(la.ConfigError, match=r"defaults.limits.tmp: unknown key; allowed: max_concurrency, rpm, tpm"):
        la.AsyncClient({"defaults": {"limits": {"tmp": 5}}})


async def test_an_exhausted_budget_header_pauses_the_next_calls(make_client: MakeClient) -> None:
    probe = Probe()
    limiter = RateLimitMiddleware(Limits())
    exhausted = {"x-fake-reply-x-ratelimit-remaining-requests": "0", "x-fake-reply-x-ratelimit-reset-requests": "400ms"}
    client = make_client(middleware=[limiter, probe], headers=exhausted)
    await client.chat.completions.create(model="local/echo", messages=MESSAGES)
    await client.chat.completions.create(model="local/echo", messages=MESSAGES)
    assert probe.starts[1] - probe.starts[0] >= 0.35


def test_reset_durations() -> None:
    from llmadapters.middleware.ratelimit import _duration

    assert [_duration(t) for t in ("1s", "6m0s", "20ms", "1h2m3.5s", "", "soon")] == [
        1.0,
        360.0,
        0.02,
        3723.5,
        None,
        None,
    ]


async def test_limits_are_learned_from_the_headers_of_real_replies(make_client: MakeClient) -> None:
    limiter = RateLimitMiddleware(Limits())
    headers = {
        "x-fake-reply-x-ratelimit-limit-requests": "600",
        "x-fake-reply-x-ratelimit-remaining-requests": "599",
        "x-fake-reply-x-ratelimit-reset-requests": "100ms",
        "x-fake-reply-x-ratelimit-limit-tokens": "90000",
        "x-fake-reply-x-ratelimit-remaining-tokens": "89000",
        "x-fake-reply-x-ratelimit-reset-tokens": "666ms",
    }
    client = make_client(middleware=[limiter], headers=headers)
    reply = await client.chat.completions.create(model="local/echo", messages=MESSAGES)
    assert reply.http is not None
    assert reply.http.status == 200
    assert reply.http.headers["X-RateLimit-Limit-Requests"] == "600"  # looked up in any case
    stream = await client.chat.completions.create(model="local/echo", messages=MESSAGES, stream=True)
    assert stream.http is not None
    assert stream.http.headers["x-ratelimit-remaining-tokens"] == "89000"
    async with stream:
        async for _ in stream:
            pass
    assert limiter.stats() == {"concurrency": 32, "rpm": 600, "tpm": 90000, "rate_limited": 0, "waited_s": 0.0}


async def test_providers_that_share_an_account_share_one_budget() -> None:
    async with FakeServer(FakeServerOptions(ttft=0.05)) as server:
        shared = {"max_concurrency": 3, "adaptive": False, "account": "team"}
        providers = {
            "east": {"base_url": server.base_url, "limits": shared},
            "west": {"base_url": server.base_url, "limits": shared},
            "solo": {"base_url": server.base_url, "limits": {"max_concurrency": 3, "adaptive": False}},
        }
        async with la.AsyncClient({}, providers=providers, middleware=["ratelimit"]) as client:
            await asyncio.gather(_burst(client, 20, model="east/echo"), _burst(client, 20, model="west/echo"))
            assert server.peak_active == 3  # one budget for both lanes
            east, west = await client.route("east"), await client.route("west")
            assert east.middleware[0].budget() is west.middleware[0].budget()  # type: ignore[attr-defined]
            server.peak_active = 0
            await asyncio.gather(_burst(client, 20, model="east/echo"), _burst(client, 20, model="solo/echo"))
            assert server.peak_active == 6  # a provider of its own keeps its own
    with pytest.raises(la.ConfigError, match=r"providers.x.limits.account: expected a non-empty string, got 5"):
        la.AsyncClient({"providers": {"x": {"base_url": "http://127.0.0.1:9/v1", "limits": {"account": 5}}}})


async def test_a_stream_closed_or_dropped_unread_gives_its_slot_back(make_client: MakeClient) -> None:
    limiter = RateLimitMiddleware(Limits(max_concurrency=1, adaptive=False))
    client = make_client(middleware=[limiter])
    for _ in range(3):
        stream = await client.chat.completions.create(model="local/echo", messages=MESSAGES, stream=True)
        await stream.aclose()  # not one chunk read
    assert limiter.budget().in_flight == 0
    stream = await client.chat.completions.create(model="local/echo", messages=MESSAGES, stream=True)
    assert limiter.budget().in_flight == 1
    del stream  # neither read nor closed: given back once it is collected, and closed
    gc.collect()
    await eventually(lambda: limiter.budget().in_flight == 0, "given back")
    reply = await asyncio.wait_for(client.chat.completions.create(model="local/echo", messages=MESSAGES), 60)
    assert reply.choices[0].message.content == "count me"


def test_odd_headers_neither_stall_nor_break_the_limiter() -> None:
    from llmadapters.middleware.ratelimit import _duration

    assert _duration("9" * 400 + "s") is None  # not an infinite pause


def _headers(kind: str, limit: int, remaining: int, reset: str) -> dict[str, str]:
    return {
        f"x-ratelimit-limit-{kind}": str(limit),
        f"x-ratelimit-remaining-{kind}": str(remaining),
        f"x-ratelimit-reset-{kind}": reset,
    }


def test_a_longer_window_is_read_from_the_reset_only_on_evidence() -> None:
    # Groq's guide: a per-day request limit (30 spent, full again in 3 min: 10 a minute),
    # and a per-minute token limit (3 spent, 7.66 s to refill: too few to tell anything).
    assert stated_rate(_headers("requests", 14400, 14370, "2m59.56s"), "requests") == pytest.approx(10, rel=0.01)
    assert stated_rate(_headers("tokens", 18000, 17997, "7.66s"), "tokens") == 18000
    # OpenAI's guide: 16 tokens spent, 6m0s to reset, is not 2.7 tokens a minute.
    assert stated_rate(_headers("tokens", 150000, 149984, "6m0s"), "tokens") == 150000
