"""`RedisRateLimit`: one provider's `Limits`, shared by every process on one Redis.

State lives in Redis under ``llmadapters:{scope}:`` (see Scope below) and is changed only by
Lua scripts, each atomic on the server and timed by the server's clock (``TIME``), so
hosts with skewed clocks agree:

- Requests and tokens per minute: GCRA (the generic cell rate algorithm), one key per
  budget holding its theoretical arrival time. GCRA over a sliding window: one number
  per budget instead of a log of timestamps, O(1) per call, and the same continuous
  refill and one-second burst as the local limiter (a cost above the burst waits for a
  full one and leaves debt). The reply's actual token usage corrects the estimate.
- Concurrency: a sorted set of leases scored by their expiry. A process renews its own
  leases in the background; a process that dies stops renewing, and its leases lapse
  after ``lease_s`` seconds, so a crashed worker leaks no permit.
- Learned rates: the requests and tokens per minute that a reply's ``x-ratelimit-*``
  headers state (read as the local limiter reads them, bounded by the configured ones)
  are stored in the budget's state hash whenever a process sees them change, and every
  process's acquire script paces by them: a limit learned by one process holds for all.
- Adaptive back-off: the concurrency limit and the pause after a 429 are fields of one
  hash, so a 429 seen by one process slows all of them. The limit halves at most once a
  second and grows by ``1/limit`` per success (AIMD); it does not probe for a hidden
  cap as the local limiter does.
- Scope: one budget per ``limits.account`` (else per provider), per model with
  ``per_model``, and per API key (by variable name) when the provider has several.

A call costs one round trip before it is sent (the acquire script); its release is sent
after the reply without holding the caller up. When Redis is unreachable the limiter
logs a warning and uses this process's own `RateLimitMiddleware` for a while (or fails
the calls, with ``fail_closed = true``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
import uuid
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
import redis.exceptions

from llmadapters import ChatCompletionStream, ConfigError, ConnectError, RateLimitError, Usage
from llmadapters.plugin import RateLimitMiddleware, estimate_tokens, parse_retry_after, redact_url, stated_rate

if TYPE_CHECKING:
    from collections.abc import Mapping

    from llmadapters import StreamEnd
    from llmadapters.plugin import Call, CallNext, Limits, Reply

__all__ = ["RedisRateLimit"]

log = logging.getLogger("llmadapters.redis")

_CLOCK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
-- A configured rate (0: none) and a learned one (from the state hash, or false): the
-- lower of those that are set.
local function bounded(configured, learned)
  learned = tonumber(learned or '0') or 0
  if configured > 0 and learned > 0 then return math.min(configured, learned) end
  return math.max(configured, learned)
end
"""

# KEYS: leases, rpm tat, tpm tat, state. ARGV: lease id, lease seconds, max concurrency
# (0: none), rpm (0: none), tpm (0: none), token cost. Returns 0 when granted, else the
# seconds to wait (as a string), or -1 when every concurrency slot is taken.
_ACQUIRE = (
    _CLOCK
    + """
local lease_s, cap = tonumber(ARGV[2]), tonumber(ARGV[3])
local rpm, tpm, cost = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
rpm = bounded(rpm, redis.call('HGET', KEYS[4], 'rpm'))
tpm = bounded(tpm, redis.call('HGET', KEYS[4], 'tpm'))
local wait = 0
local paused = tonumber(redis.call('HGET', KEYS[4], 'paused_until') or '0')
if paused > now then wait = paused - now end
local function gcra(key, per_minute, c)
  local T = 60.0 / per_minute
  local burst = math.max(per_minute / 60.0, 1.0)
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local allow_at = tat + math.min(c, burst) * T - burst * T
  if allow_at > now then return allow_at - now, nil end
  return 0, tat + c * T
end
local rpm_tat, tpm_tat
if rpm > 0 then
  local w
  w, rpm_tat = gcra(KEYS[2], rpm, 1)
  wait = math.max(wait, w)
end
if tpm > 0 then
  local w
  w, tpm_tat = gcra(KEYS[3], tpm, cost)
  wait = math.max(wait, w)
end
if wait > 0 then return tostring(wait) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local limit = tonumber(redis.call('HGET', KEYS[4], 'limit') or '0')
if cap > 0 and (limit == 0 or limit > cap) then limit = cap end
if limit > 0 and redis.call('ZCARD', KEYS[1]) >= math.floor(limit) then return -1 end
redis.call('ZADD', KEYS[1], now + lease_s, ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(lease_s) + 60)
if rpm_tat then redis.call('SET', KEYS[2], rpm_tat, 'EX', math.ceil(rpm_tat - now) + 60) end
if tpm_tat then redis.call('SET', KEYS[3], tpm_tat, 'EX', math.ceil(tpm_tat - now) + 60) end
return 0
"""
)

# KEYS: leases, tpm tat, state. ARGV: lease id, token correction (actual - estimate),
# tpm (0: none), success (1/0), max concurrency (0: none), adaptive (1/0).
_RELEASE = (
    _CLOCK
    + """
redis.call('ZREM', KEYS[1], ARGV[1])
local correction = tonumber(ARGV[2])
local tpm = bounded(tonumber(ARGV[3]), redis.call('HGET', KEYS[3], 'tpm'))
if tpm > 0 and correction ~= 0 then
  local tat = tonumber(redis.call('GET', KEYS[2]) or '0')
  if tat > 0 then
    tat = tat + correction * 60.0 / tpm
    redis.call('SET', KEYS[2], tat, 'EX', math.max(math.ceil(tat - now), 0) + 60)
  end
end
if ARGV[4] == '1' and ARGV[6] == '1' then
  local limit = tonumber(redis.call('HGET', KEYS[3], 'limit') or '0')
  if limit > 0 then
    local cap = tonumber(ARGV[5])
    limit = limit + 1.0 / limit
    if cap > 0 and limit >= cap then
      redis.call('HDEL', KEYS[3], 'limit')
    else
      redis.call('HSET', KEYS[3], 'limit', limit)
    end
  end
end
return 0
"""
)

# KEYS: leases, state. ARGV: seconds to pause (0: none), max concurrency (0: none).
_THROTTLED = (
    _CLOCK
    + """
local pause = tonumber(ARGV[1])
if pause > 0 then
  local paused = tonumber(redis.call('HGET', KEYS[2], 'paused_until') or '0')
  if now + pause > paused then redis.call('HSET', KEYS[2], 'paused_until', now + pause) end
end
local last = tonumber(redis.call('HGET', KEYS[2], 'decreased_at') or '0')
if now - last >= 1.0 then
  local limit = tonumber(redis.call('HGET', KEYS[2], 'limit') or '0')
  if limit == 0 then
    limit = tonumber(ARGV[2])
    if limit == 0 then limit = redis.call('ZCARD', KEYS[1]) end
  end
  redis.call('HSET', KEYS[2], 'limit', math.max(1.0, limit / 2), 'decreased_at', now)
end
redis.call('EXPIRE', KEYS[2], 3600)
return 0
"""
)

# KEYS: state. ARGV: requests per minute, tokens per minute (0: not stated). What a
# reply's x-ratelimit-* headers stated, for every process's acquire script.
_LEARNED = """
if tonumber(ARGV[1]) > 0 then redis.call('HSET', KEYS[1], 'rpm', ARGV[1]) end
if tonumber(ARGV[2]) > 0 then redis.call('HSET', KEYS[1], 'tpm', ARGV[2]) end
redis.call('EXPIRE', KEYS[1], 3600)
return 0
"""

# KEYS: leases. ARGV: lease seconds, then lease ids. Extends the leases still held.
_RENEW = (
    _CLOCK
    + """
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i]) end
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1])) + 60)
return 0
"""
)

_CONNECTIONS = 16  # to Redis, per process and provider
# Any Redis failure (unreachable, or an error reply such as READONLY or OOM) is handled
# alike: the local budgets, or with fail_closed a ConnectError.
_UNREACHABLE = (redis.exceptions.RedisError, OSError)
_POLL_S = 0.02  # how often a caller waiting for a concurrency slot asks again
_RETRY_REDIS_S = 5.0  # after a failure, how long to use the local budgets before trying Redis


class _Keys:
    def __init__(self, prefix: str) -> None:
        self.leases = f"{prefix}:leases"
        self.rpm = f"{prefix}:rpm"
        self.tpm = f"{prefix}:tpm"
        self.state = f"{prefix}:state"


class RedisRateLimit:
    """Keeps one provider's calls within `Limits` across every process on one Redis;
    see the module docstring.

    Args:
        limits: the provider's limits; ``limits.url`` is the Redis URL, ``limits.lease``
            how long a permit outlives a process that stops renewing it.
        provider: the provider's name, which names its keys.
    """

    def __init__(self, limits: Limits, *, provider: str) -> None:
        if not limits.url:
            raise ConfigError(f"providers.{provider}.limits.url: the redis backend needs a redis:// URL")
        self.limits = limits
        self.provider = provider
        self.lease_s = limits.lease
        # A few connections per process, shared by all its calls: a call waits for one
        # (up to 5 s) instead of failing as redis-py's default pool does when full.
        pool = aioredis.BlockingConnectionPool.from_url(
            limits.url, max_connections=_CONNECTIONS, timeout=5.0, socket_timeout=5.0, socket_connect_timeout=2.0
        )
        self._redis = aioredis.Redis.from_pool(pool)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._release = self._redis.register_script(_RELEASE)
        self._throttled = self._redis.register_script(_THROTTLED)
        self._renew = self._redis.register_script(_RENEW)
        self._learned_script = self._redis.register_script(_LEARNED)
        # Per scope: the rates this process last stored, and when (stored again when they
        # change, or a minute on, so that the state hash does not expire under them).
        self._learned: dict[str, tuple[float, float, float]] = {}
        self._rate_limited = 0
        self._local = RateLimitMiddleware(limits)
        self._local_until = 0.0  # Redis failed: use the local budgets until then
        self._held: dict[str, set[str]] = {}  # leases key -> lease ids this process holds
        self._renewer: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._lease_prefix = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"

    def __repr__(self) -> str:
        return f"RedisRateLimit({self.provider!r}, {redact_url(self.limits.url)!r})"

    def _keys(self, call: Call) -> _Keys:
        """The Redis keys of the budget ``call`` takes from: its account's (or its
        provider's), per model with per_model, per API key (by variable name) when the
        provider has several, the key chosen here in turn."""
        scope = self.limits.account or self.provider
        if self.limits.per_model:
            scope += f":{call.request.model}"
        if call.keys is not None and len(call.keys) > 1 and call.keys.usable():
            call.key = call.keys.pick()
            scope += f":key={call.key}"
        return _Keys(f"llmadapters:{{{scope}}}")  # one hash slot per scope, for Redis Cluster

    def stats(self) -> dict[str, Any]:
        """The rates in force as this process knows them (configured, or learned from
        headers, and shared through Redis), and the 429s it met."""
        learned = list(self._learned.values())
        rpm = self.limits.rpm or (learned[-1][0] if learned and learned[-1][0] else None)
        tpm = self.limits.tpm or (learned[-1][1] if learned and learned[-1][1] else None)
        return {"concurrency": self.limits.max_concurrency, "rpm": rpm, "tpm": tpm, "rate_limited": self._rate_limited}

    async def __call__(self, call: Call, call_next: CallNext) -> Reply:
        if not self.limits.fail_closed and time.monotonic() < self._local_until:
            return await self._local(call, call_next)
        keys = self._keys(call)
        # Adaptive: any process may have learned a tokens budget that this call takes from.
        estimate = estimate_tokens(call.request) if self.limits.tpm or self.limits.adaptive else 0
        lease = f"{self._lease_prefix}-{uuid.uuid4().hex[:12]}"
        try:
            await self._wait_for_permit(keys, lease, estimate)
        except _UNREACHABLE as exc:
            if self.limits.fail_closed:
                raise ConnectError(
                    f"the shared rate limiter of provider {self.provider!r} ({redact_url(self.limits.url)}) is "
                    f"unreachable, and limits.fail_closed is set: {exc}"
                ) from None
            self._unreachable(exc)
            return await self._local(call, call_next)
        self._held.setdefault(keys.leases, set()).add(lease)
        self._ensure_renewer()
        try:
            reply = await call_next(call)
        except RateLimitError as exc:
            self._rate_limited += 1
            self._finish(keys, lease, estimate, None, success=False, throttled=exc, headers=exc.headers)
            raise
        except BaseException:
            self._finish(keys, lease, estimate, None, success=False)
            raise
        headers = reply.http.headers if reply.http is not None else None
        if isinstance(reply, ChatCompletionStream):

            def finish(end: StreamEnd) -> None:
                self._finish(keys, lease, estimate, end.usage, success=end.complete, headers=headers)

            reply.on_end(finish)  # the lease is held until the stream ends, or is closed
            return reply
        self._finish(keys, lease, estimate, reply.usage, success=True, headers=headers)
        return reply

    def _rates(self, keys: _Keys, headers: Mapping[str, str] | None) -> list[float] | None:
        """The rates ``headers`` state (bounded by the configured ones), when they are
        news to Redis: changed since this process last stored them, or a minute old."""
        if headers is None or not self.limits.adaptive:
            return None
        rpm, tpm = (stated_rate(headers, kind) or 0.0 for kind in ("requests", "tokens"))
        if not rpm and not tpm:
            return None
        rpm = min(rpm, self.limits.rpm) if rpm and self.limits.rpm else rpm
        tpm = min(tpm, self.limits.tpm) if tpm and self.limits.tpm else tpm
        now = time.monotonic()
        last = self._learned.get(keys.state)
        if last is not None and (last[0], last[1]) == (rpm, tpm) and now - last[2] < 60:
            return None
        self._learned[keys.state] = (rpm, tpm, now)
        return [rpm, tpm]

    async def _wait_for_permit(self, keys: _Keys, lease: str, estimate: int) -> None:
        limits = self.limits
        args: list[str | float] = [
            lease,
            self.lease_s,
            limits.max_concurrency or 0,
            limits.rpm or 0,
            limits.tpm or 0,
            estimate,
        ]
        script_keys = [keys.leases, keys.rpm, keys.tpm, keys.state]
        while True:
            acquire = asyncio.ensure_future(self._acquire(keys=script_keys, args=args))
            self._background.add(acquire)
            acquire.add_done_callback(self._background.discard)
            try:
                wait = float(await asyncio.shield(acquire))
            except asyncio.CancelledError:
                # The round trip goes on: cut off mid-reply, it would leave its connection
                # in an unknown state. What it granted to this cancelled call is given back.
                acquire.add_done_callback(lambda done: self._granted_after_cancel(done, keys, lease, estimate))
                raise
            if wait == 0:
                return
            # A full set of slots frees unpredictably: ask again soon, with jitter so
            # that processes do not ask in lockstep.
            await asyncio.sleep(_POLL_S * (0.5 + random.random()) if wait < 0 else wait)

    def _granted_after_cancel(self, acquire: asyncio.Future[Any], keys: _Keys, lease: str, estimate: int) -> None:
        if acquire.cancelled() or acquire.exception() is not None or float(acquire.result()) != 0:
            return
        # Nothing was sent: the estimate is refunded, as a call that used no tokens.
        self._finish(keys, lease, estimate, Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0), success=False)

    def _finish(
        self,
        keys: _Keys,
        lease: str,
        estimate: int,
        usage: Usage | None,
        *,
        success: bool,
        throttled: RateLimitError | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Give the permit back (and report a 429, and the rates the headers state)
        without holding the caller up."""
        self._held.get(keys.leases, set()).discard(lease)
        actual = usage.total_tokens if usage is not None else None
        correction = actual - estimate if actual is not None and estimate else 0
        rates = self._rates(keys, headers)
        limits = self.limits
        release_args: list[str | float] = [
            lease,
            correction,
            limits.tpm or 0,
            int(success),
            limits.max_concurrency or 0,
            int(limits.adaptive),
        ]

        async def report() -> None:
            try:
                if rates is not None:
                    await self._learned_script(keys=[keys.state], args=rates)
                if throttled is not None and limits.adaptive:
                    wait = throttled.retry_after
                    if wait is None:
                        wait = parse_retry_after(throttled.headers)
                    args = [wait or 0, limits.max_concurrency or 0]
                    await self._throttled(keys=[keys.leases, keys.state], args=args)
                await self._release(keys=[keys.leases, keys.tpm, keys.state], args=release_args)
            except _UNREACHABLE as exc:
                self._unreachable(exc)  # the lease lapses on its own

        task = asyncio.get_running_loop().create_task(report())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        """Extend the leases this process holds, three times per lease period."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            for key, leases in list(self._held.items()):
                if leases:
                    try:
                        args: list[str | float] = [self.lease_s, *leases]
                        await self._renew(keys=[key], args=args)
                    except _UNREACHABLE as exc:
                        self._unreachable(exc)

    def _unreachable(self, exc: BaseException) -> None:
        """Use the local budgets for a while (warning once per outage); with
        fail_closed, never: the next call asks Redis, and fails if it is still down."""
        where = redact_url(self.limits.url)
        if self.limits.fail_closed:
            log.warning("redis rate limiter of provider %r (%s) unreachable (%s)", self.provider, where, exc)
            return
        if time.monotonic() >= self._local_until:
            log.warning(
                "redis rate limiter of provider %r (%s) unreachable (%s): using this process's own limits for %.0f s",
                self.provider,
                where,
                exc,
                _RETRY_REDIS_S,
            )
        self._local_until = time.monotonic() + _RETRY_REDIS_S

    async def aclose(self) -> None:
        """Wait for the round trips and releases in flight, stop renewing, close the
        connections."""
        while self._background:  # an acquire that ends may start a release
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        await self._redis.aclose()
