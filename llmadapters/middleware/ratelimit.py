"""Rate limits per provider (one limiter per route, so providers never wait on each
other), optionally per model: concurrency, requests/minute and tokens/minute, each
configured, learned from the provider's replies, or both (a configured limit is an
upper bound on a learned one).

Concurrency is a FIFO gate whose size changes while calls wait. Requests and tokens per
minute are token buckets that refill continuously. A call waits for a slot, then until
its cost is in the buckets, and takes both.

What adaptive mode (on by default) learns, and from what:

- **Rate budgets from headers.** Every reply, success or 429, is read for
  ``x-ratelimit-limit|remaining|reset-requests`` and ``-tokens`` (OpenAI's names, which
  Azure, Groq and others share). ``remaining`` is the provider's own count when it took
  the call, so the bucket's level is set from it, plus the refill since, less what was
  sent since. ``limit`` is per minute, as OpenAI's, unless ``reset`` (the time until the
  bucket is full again) shows a much lower rate, a longer window (Groq's request limits
  are per day). The bucket holds at most the most the provider ever reported remaining,
  so calls are paced at the rate once the first burst is spent, and a reserve of 2% of
  it is never spent, so that ``remaining`` is not driven to zero. A ``remaining`` of 0
  with no limit to pace by pauses the lane until its ``reset`` (``1s``, ``6m0s``,
  ``20ms``, or seconds; 60 s at most at once).
- **Concurrency from 429s.** With no configured cap, a lane starts at 32 calls in
  flight. Until its first decrease (slow start), each reply adds a slot while calls
  wait, up to half again the level proven each round: the slots open as replies come
  back rather than all at once, so the first 429 over the cap stops it. A 429 sent at
  level *n* (the calls in flight, itself included) shows that the provider allows
  fewer than *n*: the limit becomes *n - 1*, or fewer, the calls the provider held
  when it refused (see `_Budget._held_when_refused`), and holds there; a quarter less
  at least when the level refused had succeeded since the last decrease (the cap
  dropped below the calls the provider still holds: see `_Budget.throttled`). After a
  quiet spell (at least 200 calls and 8 rounds without a decrease) the lane probes upwards
  again, by one and then by steps that double while they succeed (each time a call
  sent at the limit succeeds, so the limit held calls back); each probe costs about
  one 429, and after a probe refused where the last one was, the next quiet spell is
  twice as long. Below half the highest level that ever succeeded (a cap that dropped),
  it probes after 16 calls and 2 rounds, and once a step up succeeds above the lowest
  level refused since (not just below it: the limit may have fallen further than the
  cap), it goes straight back to that level, and holds there until the next quiet
  spell, so a cap that comes back is found within a few rounds. Below that refused
  level, it grows to just past it.
- **Sporadic 429s are not congestion.** A 429 only lowers the limit when the evidence
  says the limit caused it: it came from a level above every level that succeeded since
  the last decrease (once 100 calls have shown random 429s to be rare; until then, or
  when they are not, as from a provider under load, a second one before a call succeeds
  above that level: such a decrease is undone when a call granted before it succeeds
  two levels above the lowest refused, which random 429s, answered at once, cannot
  tell before the calls sent with them come back), or 4 of the last 12 calls were 429s
  (more when random 429s are common: as many as they would give less than once in
  10,000 windows),
  or the provider said so (Zhipu's code ``1302``; a message stating the limit, as
  DeepSeek's "exceeds your concurrency limit of 39" and Moonshot's "max organization
  concurrency: 50", which then sets it). Otherwise only that call waits (its
  ``Retry-After``, in the retry middleware or the batch engine). The whole lane pauses
  for a ``Retry-After`` (60 s at most) only when 8 of the last 16 calls were 429s.

Tokens are estimated before the call (prompt characters / 4, scaled by what the
provider's ``usage`` showed so far, plus ``max_tokens``, or the mean completion seen so
far) and corrected with the reply's ``usage`` when no header gave the provider's count.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import json
import math
import re
import weakref
from typing import TYPE_CHECKING, Any, TypeAlias

from ..errors import RateLimitError, parse_retry_after
from ..policies import Limits
from ..streaming import ChatCompletionStream
from ..types import EmbeddingRequest
from .retry import rate_limit_retryable

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ..streaming import StreamEnd
    from ..types import ChatRequest, Request, ResponseInfo, Usage
    from .base import Call, CallNext, Reply

__all__ = ["UNSENT", "Limits", "RateLimitMiddleware", "Unsent", "estimate_tokens", "stated_rate"]

_INITIAL = 32  # calls in flight a lane starts at, when no cap is configured
_STEP = 16  # its first increase
_SLOW_START = 1.5  # the most the limit grows in a round of slow start
_PROBE_CALLS = 200  # calls, at least, between a decrease and the next probe upwards ...
_PROBE_ROUNDS = 8  # ... and rounds of the limit
_REPROBE_CALLS, _REPROBE_ROUNDS = 16, 2  # ... or, below half the highest level held, these
_RESERVE = 0.02  # of a learned bucket, never spent
_EWMA = 0.05
_MAX_PAUSE = 60.0  # the longest a whole lane pauses at once (a call's own wait is the retry policy's)
_BACKOFF = 1.0  # the first pause of a lane whose calls are refused one at a time, with no time said


class Unsent:
    """Whether a task's call is waiting in a limiter, not yet sent: a caller that may give
    up such calls (the batch engine, stopped) sets one in `UNSENT` in its task, and
    cancels the task while ``waiting`` holds (``given_up`` tells its code why).
    ``paced``: it waits on a rate budget or a pause (not for a slot of the concurrency)."""

    __slots__ = ("given_up", "paced", "waiting")

    def __init__(self) -> None:
        self.waiting = False
        self.paced = False
        self.given_up = False


UNSENT: contextvars.ContextVar[Unsent | None] = contextvars.ContextVar("llmadapters_unsent", default=None)

# Error codes that name a concurrency limit: Zhipu's 1302 (docs.bigmodel.cn/cn/api/api-code).
_CONCURRENCY_CODES = frozenset({"1302"})


def _prompt_chars(request: ChatRequest) -> int:
    return sum(len(json.dumps(m.get("content", ""), ensure_ascii=False)) for m in request.messages)


def _input_chars(request: Request) -> int:
    """The characters of what ``request`` sends to be read: its messages, or the input
    of an embeddings request (a list of token ids at four characters a token, so that
    it estimates as itself)."""
    if isinstance(request, EmbeddingRequest):
        return sum(len(text) if isinstance(text, str) else 4 * len(text) for text in request.texts)
    return _prompt_chars(request)


def _max_tokens(request: Request) -> int | None:
    if isinstance(request, EmbeddingRequest):
        return 0  # an embedding's tokens are all input
    limit = request.params.get("max_completion_tokens") or request.params.get("max_tokens")
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else None


def estimate_tokens(request: Request) -> int:
    """A cheap upper-leaning guess of a request's tokens before it is sent."""
    return math.ceil(_input_chars(request) / 4) + (_max_tokens(request) or 0)


class _Bucket:
    """A token bucket refilled at ``rate`` per second, holding at most ``capacity``."""

    __slots__ = ("capacity", "level", "rate", "reserve", "stamp")

    def __init__(self, per_minute: float, now: float, *, capacity: float | None = None) -> None:
        self.rate = per_minute / 60.0
        self.capacity = capacity if capacity is not None else max(self.rate, 1.0)
        self.level = self.capacity
        self.stamp = now
        self.reserve = 0.0

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait(self, now: float, cost: float) -> float:
        """Seconds until ``cost`` can be taken (0: now). A cost above the capacity waits
        for a full bucket and leaves it in debt."""
        self.refill(now)
        need = min(cost, self.capacity - self.reserve) + self.reserve
        short = need - self.level
        return 0.0 if short < 1e-6 else short / self.rate

    def sync(self, remaining: float, counted: float, since: float, now: float) -> None:
        """The provider reported ``remaining`` when it counted a call, at ``counted``;
        ``since`` was taken from us after that call."""
        self.capacity = max(self.capacity, remaining)
        self.reserve = _RESERVE * self.capacity
        self.level = min(self.capacity, remaining + (now - counted) * self.rate - since)
        self.stamp = now


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(text: str) -> float | None:
    """OpenAI's reset durations: ``1s``, ``6m0s``, ``20ms``; a bare number is seconds."""
    parts = _DURATION.findall(text)
    if not parts:
        return _number(text)
    total = sum(float(n) * _UNIT[u] for n, u in parts)
    return total if math.isfinite(total) else None


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


# The least spent from a budget for its reset time to tell a longer window: Groq's
# per-day request limit shows after 30 requests (console.groq.com/docs/rate-limits).
_EVIDENCE = {"requests": 10, "tokens": 1000}


def stated_rate(headers: Mapping[str, str], kind: str) -> float | None:
    """The requests (``kind="requests"``) or tokens (``"tokens"``) per minute that a
    reply's ``x-ratelimit-*`` headers state, or None. ``limit`` is per minute, as
    OpenAI's, unless ``reset`` (the time until the bucket is full again) shows a much
    lower rate: a longer window (Groq's request limits are per day)."""
    limit = _number(headers.get(f"x-ratelimit-limit-{kind}"))
    if not limit:
        return None
    remaining = _number(headers.get(f"x-ratelimit-remaining-{kind}"))
    reset = _duration(headers.get(f"x-ratelimit-reset-{kind}", ""))
    # Too little spent says nothing of the refill rate: OpenAI's guide shows 16 tokens
    # spent with 6m0s to reset, which would read as 2.7 tokens a minute.
    if reset and remaining is not None and limit - remaining >= _EVIDENCE[kind]:
        per_window = (limit - remaining) / reset * 60
        if per_window < limit / 3:
            return per_window
    return limit


# The limit stated in a 429's message: DeepSeek's "exceeds your concurrency limit of 39",
# Moonshot's "max organization concurrency: 50".
_STATED = re.compile(r"concurrency(?: limit)?(?: of|:)\s*(\d{1,9})\b", re.IGNORECASE)


# A rate stated in a 429's message: Moonshot's "request reached organization max RPM: 20,
# please try again after 1 seconds" (MoonshotAI/kimi-cli#1599), and its TPM twin.
_STATED_RATE = re.compile(r"max (RPM|TPM)(?: limit)?:?\s*(\d{1,12})\b")


def _stated_rates(exc: RateLimitError) -> dict[str, int]:
    """The requests and tokens per minute a 429's message states, by ``"requests"`` and
    ``"tokens"``."""
    return {("requests" if unit == "RPM" else "tokens"): int(n) for unit, n in _STATED_RATE.findall(str(exc))}


def _concurrency_error(exc: RateLimitError) -> tuple[bool, int | None]:
    """Whether ``exc`` names a concurrency limit, and the limit when it states one."""
    stated = _STATED.search(str(exc))
    if stated:
        return True, int(stated.group(1))
    return exc.code in _CONCURRENCY_CODES, None


@functools.cache
def _dense_at(percent: int) -> int:
    """The fewest 429s of 12 calls that random 429s at ``percent`` % would give less than
    once in 10,000 windows (4 when they are rare, more as they grow common)."""
    p = max(percent, 1) / 200  # the share, rounded up to half a percent
    for k in range(4, 13):
        if sum(math.comb(12, i) * p**i * (1 - p) ** (12 - i) for i in range(k, 13)) < 1e-4:
            return k
    return 13


def _dense(sporadic: float) -> int:
    """`_dense_at` for a share of random 429s."""
    return _dense_at(min(200, math.ceil(sporadic * 200)))


class _Cost:
    """What a call will cost, estimated before it is sent: ``tokens``, from the
    ``chars`` of its prompt (0 for both when no token budget is kept)."""

    __slots__ = ("chars", "tokens")

    def __init__(self, tokens: int = 0, chars: int = 0) -> None:
        self.tokens = tokens
        self.chars = chars


_FREE = _Cost()


class _Ticket:
    """One call's place in its budget: the level it was sent at, the slots granted before
    its own (``grant``), what was sent before it, and, when it was sent, the calls out
    before it (``ahead``) and the successes so far."""

    __slots__ = ("ahead", "cost", "grant", "level", "sent_at", "seq", "successes", "tokens_before")

    def __init__(self, level: int, grant: int, budget: _Budget, cost: _Cost, sent_at: float) -> None:
        self.level = level
        self.grant = grant
        self.seq = budget.sent
        self.tokens_before = budget.sent_tokens
        self.cost = cost
        self.sent_at = sent_at
        self.ahead = len(budget.out)
        self.successes = budget.successes


class _Budget:
    """The state of one provider's (or one model's) limits."""

    def __init__(self, limits: Limits, now: float) -> None:
        self.limits = limits
        self.cap = float(limits.max_concurrency) if limits.max_concurrency else math.inf
        self.limit = self.cap if limits.max_concurrency or not limits.adaptive else float(_INITIAL)
        self.in_flight = 0
        self.waiters: collections.deque[asyncio.Future[tuple[int, int]]] = collections.deque()
        self.granted = 0  # slots granted, in order (a woken waiter's before it is sent)
        self.requests = _Bucket(limits.rpm, now) if limits.rpm else None
        self.tokens = _Bucket(limits.tpm, now) if limits.tpm else None
        self.paused_until = 0.0
        self.backoff = _BACKOFF  # the next pause when 429s say no time; doubles, until a call succeeds
        self.pacing = asyncio.Lock()  # held by the call that waits on the rate budgets
        self.finished = 0
        self.sent = 0  # calls that took a slot, in order
        self.sent_tokens = 0.0  # their estimated tokens
        self.out: set[int] = set()  # the calls sent and not finished, by their place in that order
        self.successes = 0
        # Concurrency discovery.
        self.ceiling = math.inf  # the limit is held here after a decrease, until a probe
        self.starting = self.limit < self.cap  # slow start: until the first decrease
        self.step = float(_STEP)  # what the next increase adds; doubles while increases succeed
        self.proven = 0  # the highest level that succeeded since the last decrease
        self.best = 0  # the highest level that ever succeeded ...
        self.jumped = False  # ... and whether the limit went straight back to it
        self.quiet = 0  # calls finished since the last decrease
        self.probed = 0  # the limit a probe upwards left, until the probe tells ...
        self.probe_refused = False  # ... and whether the last was refused right there (the next waits twice as long)
        self.recent = 0  # the last 16 outcomes, a bit per 429, newest lowest
        self.decreased_at = 0  # slots granted before the last decrease
        self.refused = 1 << 30  # the lowest level a decrease was made for, until one succeeds above it
        # A decrease on two 429s above every level that succeeded may be random 429s:
        # the limit before it, and the lowest level refused, until the calls sent with
        # it tell (a success well above that level undoes the decrease; more 429s there
        # confirm it).
        self.undo: tuple[float, float, int, bool] | None = None  # limit, step, level, starting
        self.undo_against = 0  # 429s above that level from calls sent before the decrease
        self.strikes = 0  # 429s above every level that succeeded, since one last did ...
        self.struck = 1 << 30  # ... and the lowest level they were sent at
        self.sporadic = 0.0  # the share of 429s at levels that succeed (a moving average)
        self.judged = 0  # calls in that average
        # Token estimates, calibrated by the replies' usage.
        self.prompt_scale = 1.0
        self.completion_mean = 0.0
        self.latency = 1.0  # seconds a call takes (a moving average), to tell how long a queue is
        # What the user sees.
        self.rate_limited = 0
        self.waited = 0.0

    # -- taking and giving back ------------------------------------------------------

    def _wake(self) -> None:
        while self.waiters and self.in_flight < self.limit:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(self._grant())

    def _grant(self) -> tuple[int, int]:
        """Take a slot: its level (the calls in flight with it) and its grant number."""
        self.in_flight += 1
        self.granted += 1
        return self.in_flight, self.granted - 1

    def _delay(self, now: float, cost: _Cost) -> float:
        return max(
            self.paused_until - now,
            self.requests.wait(now, 1) if self.requests else 0.0,
            self.tokens.wait(now, cost.tokens) if self.tokens else 0.0,
        )

    def _spend(self, cost: _Cost, slot: tuple[int, int], now: float) -> _Ticket:
        if self.requests:
            self.requests.level -= 1
        if self.tokens:
            self.tokens.level -= cost.tokens
        ticket = _Ticket(slot[0], slot[1], self, cost, now)
        self.out.add(ticket.seq)
        self.sent += 1
        self.sent_tokens += cost.tokens
        return ticket

    def estimate(self, request: Request) -> _Cost:
        """The tokens ``request`` will count, as well as can be told before it is sent."""
        if self.tokens is None:
            return _FREE
        chars = _input_chars(request)
        completion = _max_tokens(request)
        prompt = math.ceil(chars / 4 * self.prompt_scale)
        return _Cost(prompt + (completion if completion is not None else math.ceil(self.completion_mean)), chars)

    def expected_wait(self, cost: _Cost) -> float:
        """About how long a call of ``cost`` would wait here: for a pause or the rate
        budgets, or for the calls ahead of it to finish."""
        ahead = len(self.waiters) + self.in_flight + 1 - self.limit
        rounds = ahead / self.limit * self.latency if ahead > 0 else 0.0
        return max(self._delay(asyncio.get_running_loop().time(), cost), rounds)

    def take(self, cost: _Cost) -> _Ticket | None:
        """Take a slot and ``cost`` now if nothing has to be waited for (the usual case,
        without a coroutine); None, having taken nothing, otherwise."""
        if self.in_flight >= self.limit or self.waiters or self.pacing.locked():
            return None
        now = asyncio.get_running_loop().time()
        if self._delay(now, cost) > 0:
            return None
        return self._spend(cost, self._grant(), now)

    async def acquire(self, cost: _Cost) -> _Ticket:
        """Wait for a slot, then for the rate budgets to allow ``cost``, and take both."""
        unsent = UNSENT.get()
        if unsent is None:
            return await self._acquire(cost, None)
        unsent.waiting = True
        try:
            return await self._acquire(cost, unsent)
        finally:
            unsent.waiting = unsent.paced = False

    async def _acquire(self, cost: _Cost, unsent: Unsent | None) -> _Ticket:
        loop = asyncio.get_running_loop()
        start = loop.time()
        if self.in_flight < self.limit and not self.waiters:
            slot = self._grant()
        else:
            waiter: asyncio.Future[tuple[int, int]] = loop.create_future()
            self.waiters.append(waiter)
            try:
                slot = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self.release()  # the slot was handed over as we were cancelled
                raise
        try:
            if self.pacing.locked() or self._delay(loop.time(), cost) > 0:
                # One call at a time waits on the rate budgets (or a pause), in turn: the
                # others wait for it, not on timers of their own that would all fire at
                # once, each to find that only the first of them may go.
                if unsent is not None:
                    unsent.paced = True
                async with self.pacing:
                    while True:
                        delay = self._delay(loop.time(), cost)
                        if delay <= 0:
                            break
                        await asyncio.sleep(delay)  # (the budgets refill with time: no event to wait for)
        except BaseException:
            self.release()
            raise
        now = loop.time()
        self.waited += now - start
        return self._spend(cost, slot, now)

    def release(self, ticket: _Ticket | None = None) -> None:
        """Give back a slot, and ``ticket``'s place among the calls out (None: the slot
        was given back before its call was sent)."""
        if ticket is not None:
            self.out.discard(ticket.seq)
        self.in_flight -= 1
        self.finished += 1
        self._wake()

    # -- learning ------------------------------------------------------------------

    def _outcome(self, rate_limited: bool) -> None:
        self.recent = ((self.recent << 1) | rate_limited) & 0xFFFF
        self.quiet += 1

    def _bucket(self, kind: str) -> _Bucket | None:
        """The budget of ``kind``, ``"requests"`` or ``"tokens"`` (None: not kept)."""
        return self.requests if kind == "requests" else self.tokens

    def _keep(self, kind: str, bucket: _Bucket) -> _Bucket:
        """``bucket`` as the budget of ``kind`` from now on."""
        if kind == "requests":
            self.requests = bucket
        else:
            self.tokens = bucket
        return bucket

    def _within_config(self, kind: str, per_minute: float) -> float:
        """``per_minute`` of ``kind``, no more than the configured limit, if any."""
        configured = self.limits.rpm if kind == "requests" else self.limits.tpm
        return min(per_minute, configured) if configured else per_minute

    def _learn(self, ticket: _Ticket, headers: Mapping[str, str], now: float) -> tuple[bool, bool]:
        """Read ``x-ratelimit-*``: whether they say a budget is spent, and whether they
        set the tokens budget's level."""
        spent = synced = False
        for kind in ("requests", "tokens"):
            remaining = _number(headers.get(f"x-ratelimit-remaining-{kind}"))
            if remaining is None:
                continue
            bucket = self._bucket(kind)
            reset = _duration(headers.get(f"x-ratelimit-reset-{kind}", ""))
            per_minute = stated_rate(headers, kind)
            if per_minute:
                per_minute = self._within_config(kind, per_minute)
                if bucket is None:
                    capacity = max(remaining, ticket.cost.tokens if kind == "tokens" else 1)
                    bucket = self._keep(kind, _Bucket(per_minute, now, capacity=capacity))
                else:
                    bucket.rate = per_minute / 60.0
            if bucket is not None:
                since = self.sent - ticket.seq - 1 if kind == "requests" else self.sent_tokens - ticket.tokens_before
                bucket.sync(remaining, ticket.sent_at, since, now)
                synced = synced or kind == "tokens"
            if remaining < 1:
                spent = True
                if bucket is None and reset:  # no rate to pace by: wait for the reset
                    self.paused_until = max(self.paused_until, now + min(reset, _MAX_PAUSE))
        return spent, synced

    def _learn_stated(self, exc: RateLimitError, now: float) -> bool:
        """Take the rates a 429's message states (no headers said them) as the budgets'
        own, paced evenly: whether it stated one."""
        stated = _stated_rates(exc)
        for kind, said in stated.items():
            per_minute = self._within_config(kind, float(said))
            bucket = self._bucket(kind)
            if bucket is None:
                self._keep(kind, _Bucket(per_minute, now)).level = 0.0  # it was just refused: spent
            else:
                bucket.rate = min(bucket.rate, per_minute / 60.0)
        return bool(stated)

    def _calibrate(self, ticket: _Ticket, usage: Usage | None, synced: bool) -> None:
        if self.tokens is None or usage is None:
            return
        chars = ticket.cost.chars
        if usage.prompt_tokens and chars:
            self.prompt_scale += _EWMA * (usage.prompt_tokens / (chars / 4) - self.prompt_scale)
        if usage.completion_tokens is not None:
            self.completion_mean += _EWMA * (usage.completion_tokens - self.completion_mean)
        if not synced and usage.total_tokens is not None:
            self.tokens.level += ticket.cost.tokens - usage.total_tokens

    def succeeded(self, ticket: _Ticket, http: ResponseInfo | None, usage: Usage | None) -> None:
        synced = False
        now = asyncio.get_running_loop().time()
        self.successes += 1
        self.backoff = _BACKOFF
        self.latency += _EWMA * (now - ticket.sent_at - self.latency)
        if self.limits.adaptive:
            if http is not None:
                _, synced = self._learn(ticket, http.headers, now)
            self._grow(ticket)
        self._calibrate(ticket, usage, synced)

    def _judge(self, rate_limited: bool) -> None:
        self.judged += 1
        self.sporadic += max(_EWMA / 5, 1 / self.judged) * (rate_limited - self.sporadic)

    def _grow(self, ticket: _Ticket) -> None:
        self._outcome(False)
        # Above the lowest level refused, a success shows the cap rose (at that level, a
        # reply on its way back as the call arrived may be all it shows).
        passed = ticket.level > self.refused
        if passed:
            self.refused = 1 << 30
        if self.undo is not None and ticket.grant < self.decreased_at and ticket.level >= self.undo[2] + 2:
            # A call sent above the level refused before the decrease succeeded: the
            # 429s were random, not the limit.
            self.limit, self.step, self.ceiling = max(self.limit, self.undo[0]), self.undo[1], math.inf
            self.starting = self.undo[3]
            self.undo = None
            self._judge(True)
            self._judge(True)
        if ticket.level <= self.proven:
            self._judge(False)
        elif ticket.grant >= self.decreased_at:
            # (A call granted before the last decrease proves no level: its level counted
            # the calls then on their way to the 429s that made the decrease.)
            self.proven = ticket.level
            self.best = max(self.best, ticket.level)
            self.strikes, self.struck = 0, 1 << 30
        if self.starting and self.waiters and self.limit < self.cap:
            # Slow start: calls wait, so the limit holds them back; one more slot per
            # success, opened as replies come back rather than all at once, so that
            # when it passes the cap the first 429 stops it. At most half again the
            # level proven: a round's replies that all come back at once open all its
            # slots before any 429 can, and then half the cap is the most it overshoots.
            if self.limit < math.ceil(self.proven * _SLOW_START):
                self.limit += 1
                self._wake()
            return
        if self.limit >= self.cap or ticket.level < self.limit or ticket.grant < self.decreased_at:
            # Only a call sent at the limit shows that the limit held it back (a call
            # granted before the last decrease was sent at a limit no longer in force).
            return
        dropped = self.limit < self.best / 2
        if self.limit >= self.ceiling:
            calls, rounds = (_REPROBE_CALLS, _REPROBE_ROUNDS) if dropped else (_PROBE_CALLS, _PROBE_ROUNDS)
            if self.quiet < max(calls, rounds * self.limit) * (2 if self.probe_refused and not dropped else 1):
                return
            self.ceiling = math.inf  # probe upwards
            self.probed = int(self.limit)
            self.limit = min(self.limit + 1, self.cap)
        elif dropped and self.step > 1 and passed:
            # A probe above a cap that had dropped succeeded above where it was refused:
            # it is likely back where it was.
            self.limit = self.ceiling = min(float(self.best), self.cap)  # held there until a quiet spell's probe
            self.quiet = 0
            self.jumped = True  # if it is not back, the 429s say where it is, and that is the best
            self.probe_refused = False
        else:
            # Below a level refused (the limit fell further than the cap), or past a
            # probe that succeeded: just past it.
            self.limit = min(self.limit + self.step, self.cap, float(self.refused + 1))
            self.probe_refused = False
        self.step *= 2
        self._wake()

    def throttled(self, ticket: _Ticket, exc: RateLimitError) -> None:
        """A call sent at ``ticket`` was answered 429."""
        self.rate_limited += 1
        if not self.limits.adaptive:
            return
        now = asyncio.get_running_loop().time()
        self._outcome(True)
        if self._learn(ticket, exc.headers, now)[0] or self._learn_stated(exc, now):
            return  # a rate budget ran out, not the concurrency
        retry_after = exc.retry_after if exc.retry_after is not None else parse_retry_after(exc.headers)
        if (self.recent & 0xFFFF).bit_count() >= 8:  # most calls refused lately
            if retry_after:
                self.paused_until = max(self.paused_until, now + min(retry_after, _MAX_PAUSE))
            elif ticket.level <= 1 and now >= self.paused_until:
                # Refused alone, with no time said: fewer calls at once cannot help (a
                # budget is spent, a day's or a minute's), and a 429 comes back at once, so
                # the lane would send as fast as it is refused. It pauses, twice as long
                # each time, until a call succeeds.
                self.paused_until = now + self.backoff
                self.backoff = min(self.backoff * 2, _MAX_PAUSE)
        named, stated = _concurrency_error(exc)
        dense = (self.recent & 0xFFF).bit_count() >= _dense(self.sporadic)
        level = ticket.level
        maybe_random = False  # a decrease on two 429s above the proven levels, no more
        if level <= self.proven:
            self._judge(True)
            if not (named or dense):
                return  # sporadic: the level has succeeded since the last decrease
        else:
            # Above every level that succeeded: the limit's doing, unless 429s come at
            # random here too (or too few calls have told yet); then it takes a second.
            self.strikes += 1
            self.struck = level = min(self.struck, level)
            sure = self.judged >= 100 and self.sporadic < 0.005
            if not (named or dense or sure or self.strikes >= 2):
                return
            maybe_random = not (named or dense or sure)
        self.strikes, self.struck = 0, 1 << 30
        if ticket.grant < self.decreased_at and stated is None:
            if self.undo is not None and ticket.level >= self.undo[2]:
                self.undo_against += 1
                if self.undo_against >= 2:
                    self.undo = None  # the level is refused again and again: the limit's
            return  # sent before the last decrease, which took its 429 into account
        allowed = float(min(level - 1, stated if stated is not None else self._held_when_refused(ticket)))
        if ticket.level <= self.proven and stated is None:
            # A level that succeeded is refused, and not at random (named or dense, or it
            # would have returned above): the cap dropped, below the calls the provider
            # still holds, by how much is not known. Down a quarter at least, so that
            # finding it costs a few 429s, not one for each call that ends while the
            # provider holds more than its new cap.
            allowed = min(allowed, math.floor(self.limit * 0.75))
        if allowed < self.limit:
            self.refused = min(self.refused, level)
            self.undo = (self.limit, self.step, level, self.starting) if maybe_random else None
            self.undo_against = 0
            self.limit = max(1.0, allowed)
            self.decreased_at = self.granted
            # Slow start ends on a sure decrease; random 429s would end it early.
            self.starting = self.starting and maybe_random
            if self.jumped:
                self.best, self.jumped = int(self.limit), False
            # A probe refused at once, back where it started: the cap is still there.
            self.probe_refused = self.limit >= self.probed > 0
            self.probed = 0
        self.ceiling = self.limit
        self.step = 1.0
        self.proven = min(self.proven, int(self.limit))
        self.quiet = 0

    def _held_when_refused(self, ticket: _Ticket) -> int:
        """About how many calls the provider held when it refused ``ticket``'s: those
        sent before it and still out (a 429 comes back faster than a reply: had they
        been refused, it would be known), and those of them that succeeded since it was
        sent. Its level counts calls on their way to a 429 too: after a step up that
        overshot, each 429 frees a slot that a new call fills at once, so a limit one
        below the level refused would fall one by one, a 429 at each."""
        still_out = sum(1 for seq in self.out if seq < ticket.seq)
        return max(1, still_out + min(self.successes - ticket.successes, ticket.ahead - still_out))

    def stats(self) -> dict[str, Any]:
        """What was learned and met: the concurrency, requests and tokens per minute in
        force (None: no limit), 429s met, and seconds calls waited on the limits."""
        return {
            "concurrency": None if math.isinf(self.limit) else int(self.limit),
            "rpm": None if self.requests is None else round(self.requests.rate * 60),
            "tpm": None if self.tokens is None else round(self.tokens.rate * 60),
            "rate_limited": self.rate_limited,
            "waited_s": round(self.waited, 3),
        }


# Which calls share a budget: the model's (or None: the provider's) and the key's (or
# None: the provider's one key).
_Slot: TypeAlias = "tuple[str | None, str | None]"

# The budgets of each named account, per event loop (a budget's waiters belong to one).
_ACCOUNTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, dict[_Slot, _Budget]]] = (
    weakref.WeakKeyDictionary()
)


class RateLimitMiddleware:
    """Keeps one provider's calls within `Limits`; see the module docstring. A provider
    with several API keys (``Call.keys``) has budgets per key: each call goes to a key
    that can take it now (in turn), or else to the one it would wait for the least."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._budgets: dict[_Slot, _Budget] = {}
        self._joined = limits.account is None

    def __repr__(self) -> str:
        return f"RateLimitMiddleware({self.limits!r})"

    def budget(self, model: str | None = None, key: str | None = None) -> _Budget:
        """The state that ``model``'s calls with ``key`` share (the provider's, unless
        per_model; the account's, when its limits name one)."""
        if not self._joined:
            assert self.limits.account is not None
            accounts = _ACCOUNTS.setdefault(asyncio.get_running_loop(), {})
            self._budgets = accounts.setdefault(self.limits.account, self._budgets)
            self._joined = True
        slot = (model if self.limits.per_model else None, key)
        budget = self._budgets.get(slot)
        if budget is None:
            budget = self._budgets[slot] = _Budget(self.limits, asyncio.get_running_loop().time())
        return budget

    def stats(self) -> dict[str, Any]:
        """`_Budget.stats` of the provider's budget; of each model's (per_model) under
        ``"models"``; of each key's (several keys) under ``"keys"``."""
        keys = {key for _, key in self._budgets}
        if keys != {None}:
            return {"keys": {str(key): self._stats(key) for key in sorted(keys, key=str)}} if keys else {}
        return self._stats(None)

    def _stats(self, key: str | None) -> dict[str, Any]:
        budgets = {model: budget for (model, k), budget in self._budgets.items() if k == key}
        if not self.limits.per_model:
            return budgets[None].stats() if None in budgets else {}
        return {"models": {str(model): budget.stats() for model, budget in budgets.items()}}

    def _choose(self, call: Call) -> tuple[_Budget, _Cost, _Ticket | None]:
        """The budget for ``call``, its cost, and the ticket when it could be taken now.
        With several keys, the first in turn that can take the call now, else the one
        with the fewest calls waiting for it; ``call.key`` is set to its key."""
        model, keys = call.request.model, call.keys
        if keys is None or len(keys) < 2 or not (usable := keys.in_turn()):
            budget = self.budget(model)
            cost = budget.estimate(call.request)
            return budget, cost, budget.take(cost)
        cost = self.budget(model, usable[0]).estimate(call.request)
        now = asyncio.get_running_loop().time()
        best: tuple[float, _Budget, str] | None = None
        for key in sorted(usable, key=lambda k: keys.cooling(k, now) > 0):  # keys cooling after a 429 last
            budget = self.budget(model, key)
            cooling = keys.cooling(key, now)
            ticket = budget.take(cost) if not cooling else None
            if ticket is not None:
                call.key = key
                return budget, cost, ticket
            wait = max(cooling, budget.expected_wait(cost))
            if best is None or wait < best[0]:
                best = (wait, budget, key)
        assert best is not None
        call.key = best[2]
        return best[1], cost, None

    async def __call__(self, call: Call, call_next: CallNext) -> Reply:
        budget, estimate, ticket = self._choose(call)
        if ticket is None:
            ticket = await budget.acquire(estimate)
        try:
            reply = await call_next(call)
        except RateLimitError as exc:
            try:
                if rate_limit_retryable(call.spec, exc):  # (a quota spent says nothing of the limits)
                    budget.throttled(ticket, exc)
            finally:
                budget.release(ticket)
            raise
        except BaseException:
            budget.release(ticket)
            raise
        if isinstance(reply, ChatCompletionStream):
            # The slot is held until the stream ends, or is closed, even unread.
            reply.on_end(_settle_at_end(budget, ticket, reply.http))
            return reply
        try:
            budget.succeeded(ticket, reply.http, reply.usage)
        finally:
            budget.release(ticket)
        return reply


def _settle_at_end(budget: _Budget, ticket: _Ticket, http: ResponseInfo | None) -> Callable[[StreamEnd], None]:
    """What a stream's end tells ``budget``. (A closure made here, not in ``__call__``:
    there its variables would be cells made on every call, and held while it waits.)"""

    def finish(end: StreamEnd) -> None:
        try:
            if end.complete:
                budget.succeeded(ticket, http, end.usage)
        finally:
            budget.release(ticket)

    return finish
