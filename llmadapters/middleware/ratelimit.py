"""Rate limits per provider (one limiter per route, so providers never wait on each
other), optionally per model: concurrency, requests/minute and tokens/minute.

- Concurrency is a FIFO gate whose size can change while calls wait.
- Requests and tokens per minute are token buckets that refill continuously and hold at
  most one second's worth (a burst of a full minute's budget is what providers that
  enforce their limits over shorter windows answer with 429s). A call waits until its
  cost is in the bucket; a call costing more than the whole bucket waits for a full one
  and leaves it in debt, which later calls wait out; so the average rate holds.
- Tokens are estimated before the call (prompt characters / 4, plus ``max_tokens`` when
  given) and corrected with the reply's ``usage`` once it is known.
- Adaptive mode (on by default) treats 429 as congestion: it halves the concurrency (at
  most once per round of calls in flight, so that one burst of 429s counts once) and
  pauses every caller for the server's ``Retry-After``; each success adds
  ``1/limit``, i.e. +1 per round (AIMD). An ``x-ratelimit-remaining-requests|tokens: 0``
  header, on any response, pauses callers until its ``x-ratelimit-reset-*`` (OpenAI's
  ``1s``, ``6m0s``, ``20ms``).
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import re
from typing import TYPE_CHECKING

import attrs

from ..errors import RateLimitError, parse_retry_after
from ..streaming import ChatCompletionStream
from .base import EndpointMemo

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Mapping

    from ..types import ChatCompletionChunk, ChatRequest, Usage
    from .base import Call, CallNext, Reply

__all__ = ["Limits", "RateLimitMiddleware", "estimate_tokens", "held_until_done"]


@attrs.frozen(kw_only=True)
class Limits:
    """Attributes:
    max_concurrency: calls in flight at most (None: no limit).
    rpm: requests per minute (None: no limit).
    tpm: tokens per minute, prompt and completion (None: no limit).
    adaptive: lower the concurrency on 429s and raise it back on successes.
    per_model: keep separate budgets per model instead of one for the provider.
    backend: ``"local"`` (this process's budgets), or the name of a shared backend a
        plugin registers as middleware ``ratelimit-NAME`` (``"redis"``).
    url: the shared backend's address, e.g. ``redis://127.0.0.1:6379/0``.
    fail_closed: when the shared backend is unreachable, fail calls instead of
        falling back to this process's budgets.
    lease: seconds a shared concurrency permit outlives a process that died holding it.
    """

    max_concurrency: int | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.ge(1)))
    rpm: float | None = None
    tpm: float | None = None
    adaptive: bool = True
    per_model: bool = False
    backend: str = "local"
    url: str | None = None
    fail_closed: bool = False
    lease: float = 10.0


def estimate_tokens(request: ChatRequest) -> int:
    """A cheap upper-leaning guess of a request's tokens before it is sent."""
    text = sum(len(json.dumps(m.get("content", ""), ensure_ascii=False)) for m in request.messages)
    limit = request.params.get("max_completion_tokens") or request.params.get("max_tokens") or 0
    return math.ceil(text / 4) + (limit if isinstance(limit, int) else 0)


class _Bucket:
    """A token bucket refilled at ``rate`` per second, holding at most ``capacity``."""

    __slots__ = ("capacity", "level", "rate", "stamp")

    def __init__(self, per_minute: float, now: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(self.rate, 1.0)
        self.level = self.capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait(self, now: float, cost: float) -> float:
        """Seconds until ``cost`` can be taken (0: now). A cost above the capacity waits
        for a full bucket and leaves it in debt."""
        self.refill(now)
        need = min(cost, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(text: str) -> float | None:
    """OpenAI's reset durations: ``1s``, ``6m0s``, ``20ms``."""
    parts = _DURATION.findall(text)
    return sum(float(n) * _UNIT[u] for n, u in parts) if parts else None


class _Budget:
    """The state of one provider's (or one model's) limits."""

    def __init__(self, limits: Limits, now: float) -> None:
        self.limits = limits
        self.limit = float(limits.max_concurrency) if limits.max_concurrency else math.inf
        self.in_flight = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.requests = _Bucket(limits.rpm, now) if limits.rpm else None
        self.tokens = _Bucket(limits.tpm, now) if limits.tpm else None
        self.paused_until = 0.0
        self.decreased_at = -math.inf  # when the last decrease happened, in calls finished
        self.finished = 0
        # The endpoint that reports its responses' headers to `observe`.
        self.observing = EndpointMemo(lambda endpoint: attrs.evolve(endpoint, on_headers=self.observe))

    def _wake(self) -> None:
        while self.waiters and self.in_flight < self.limit:
            waiter = self.waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)

    def _delay(self, now: float, cost: int) -> float:
        return max(
            self.paused_until - now,
            self.requests.wait(now, 1) if self.requests else 0.0,
            self.tokens.wait(now, cost) if self.tokens else 0.0,
        )

    def _spend(self, cost: int) -> None:
        if self.requests:
            self.requests.level -= 1
        if self.tokens:
            self.tokens.level -= cost

    def take(self, cost: int) -> bool:
        """Take a slot and ``cost`` now if nothing has to be waited for (the usual case,
        without a coroutine); False, having taken nothing, otherwise."""
        if self.in_flight >= self.limit or self.waiters:
            return False
        if self._delay(asyncio.get_running_loop().time(), cost) > 0:
            return False
        self.in_flight += 1
        self._spend(cost)
        return True

    async def acquire(self, cost: int) -> None:
        """Wait for a slot, then for the rate budgets to allow ``cost``, and take both."""
        loop = asyncio.get_running_loop()
        if self.in_flight < self.limit and not self.waiters:
            self.in_flight += 1
        else:
            waiter = loop.create_future()
            self.waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self.release()  # the slot was handed over as we were cancelled
                raise
        try:
            while True:
                delay = self._delay(loop.time(), cost)
                if delay <= 0:
                    break
                await asyncio.sleep(delay)
            self._spend(cost)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        self.in_flight -= 1
        self.finished += 1
        self._wake()

    def settle(self, estimate: int, usage: Usage | None) -> None:
        if self.tokens is not None and usage is not None and usage.total_tokens is not None:
            self.tokens.level += estimate - usage.total_tokens

    def succeeded(self) -> None:
        cap = float(self.limits.max_concurrency or math.inf)
        if self.limits.adaptive and self.limit < cap:
            self.limit = min(self.limit + 1.0 / self.limit, cap)
            self._wake()

    def observe(self, headers: Mapping[str, str]) -> None:
        """Read a response's ``x-ratelimit-*``: a budget used up pauses every caller
        until its reset."""
        now = asyncio.get_running_loop().time()
        for kind in ("requests", "tokens"):
            if headers.get(f"x-ratelimit-remaining-{kind}") == "0":
                reset = _duration(headers.get(f"x-ratelimit-reset-{kind}", ""))
                if reset:
                    self.paused_until = max(self.paused_until, now + reset)

    def throttled(self, exc: RateLimitError, now: float) -> None:
        if not self.limits.adaptive:
            return
        self.observe(exc.headers)
        wait = exc.retry_after if exc.retry_after is not None else parse_retry_after(exc.headers)
        if wait:
            self.paused_until = max(self.paused_until, now + wait)
        # Once per round: the 429s of calls that started before the last decrease were
        # caused by the old limit and must not lower it again.
        round_size = self.limit if math.isfinite(self.limit) else self.in_flight + 1
        if self.finished - self.decreased_at >= round_size:
            if not math.isfinite(self.limit):
                self.limit = float(max(self.in_flight, 1))
            self.limit = max(1.0, self.limit / 2)
            self.decreased_at = self.finished


class RateLimitMiddleware:
    """Keeps one provider's calls within `Limits`; see the module docstring."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._budgets: dict[str | None, _Budget] = {}

    def __repr__(self) -> str:
        return f"RateLimitMiddleware({self.limits!r})"

    def budget(self, model: str | None = None) -> _Budget:
        """The state that ``model``'s calls share (the provider's, unless per_model)."""
        key = model if self.limits.per_model else None
        budget = self._budgets.get(key)
        if budget is None:
            budget = self._budgets[key] = _Budget(self.limits, asyncio.get_running_loop().time())
        return budget

    async def __call__(self, call: Call, call_next: CallNext) -> Reply:
        budget = self.budget(call.request.model)
        estimate = estimate_tokens(call.request) if budget.tokens else 0
        if not budget.take(estimate):
            await budget.acquire(estimate)
        if self.limits.adaptive:
            call.endpoint = budget.observing(call.endpoint)
        try:
            reply = await call_next(call)
        except RateLimitError as exc:
            budget.throttled(exc, asyncio.get_running_loop().time())
            budget.release()
            raise
        except BaseException:
            budget.release()
            raise
        if isinstance(reply, ChatCompletionStream):

            def finish(usage: Usage | None, ok: bool) -> None:
                if ok:
                    budget.succeeded()
                budget.settle(estimate, usage)
                budget.release()

            return ChatCompletionStream(held_until_done(reply, finish))
        budget.settle(estimate, reply.usage)
        budget.succeeded()
        budget.release()
        return reply


async def held_until_done(
    stream: ChatCompletionStream, finish: Callable[[Usage | None, bool], object]
) -> AsyncGenerator[ChatCompletionChunk, None]:
    """``stream``'s chunks, then ``finish(usage, ok)`` (ok: it ran to its end), so
    that a stream keeps its permit until it ends."""
    usage = None
    ok = False
    try:
        async with stream:
            async for chunk in stream:
                usage = chunk.usage or usage
                yield chunk
        ok = True
    finally:
        finish(usage, ok)
