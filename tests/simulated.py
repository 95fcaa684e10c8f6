"""A provider that enforces hidden limits, simulated in virtual time.

`run_virtual(main)` runs a coroutine on an event loop whose clock jumps to the next
timer whenever nothing is ready, so a run of minutes of simulated provider time takes a
fraction of a second and gives the same figures on a loaded machine. `SimulatedProvider`
is a transport (the public extension point) that answers like a provider under limits:
a concurrency cap without headers (Zhipu's 1302), requests and tokens per minute with
OpenAI's ``x-ratelimit-*`` headers, sporadic 429s with ``Retry-After``, and a cap that
changes over time. Errors are built by `llmadapters.errors.status_error`, as every real
transport builds them, so what the middleware sees is what it sees over HTTP.
"""

from __future__ import annotations

import asyncio
import math
import random
import selectors
from typing import TYPE_CHECKING, Any

import attrs

from llmadapters.errors import status_error
from llmadapters.plugins import Registry
from llmadapters.types import ResponseInfo

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping

    from llmadapters.transports.base import Endpoint

T = Any


class _VirtualSelector(selectors.DefaultSelector):
    """Instead of blocking until the next timer, moves the loop's clock there."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout > 0:
            self.now += timeout
            timeout = 0
        return super().select(timeout)


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time (no real I/O may be waited for on it)."""

    def __init__(self) -> None:
        self._virtual = _VirtualSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now


def run_virtual(main: Coroutine[Any, Any, T]) -> T:
    loop = VirtualLoop()
    try:
        return loop.run_until_complete(main)
    finally:
        loop.close()


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``1s``, ``120ms``, ``6m0s``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.3f}s" if minutes else f"{rest:.3f}s"


@attrs.define
class _Bucket:
    per_minute: float
    burst: float  # capacity
    level: float = math.nan
    stamp: float = 0.0

    def refill(self, now: float) -> None:
        if math.isnan(self.level):
            self.level = self.burst
        self.level = min(self.burst, self.level + (now - self.stamp) * self.per_minute / 60)
        self.stamp = now

    def headers(self, kind: str) -> dict[str, str]:
        missing = self.burst - self.level
        return {
            f"x-ratelimit-limit-{kind}": str(round(self.per_minute)),
            f"x-ratelimit-remaining-{kind}": str(max(0, math.floor(self.level))),
            f"x-ratelimit-reset-{kind}": _duration(missing / (self.per_minute / 60)),
        }


@attrs.define
class Limits:
    """The provider's hidden limits. ``cap(t)`` gives the concurrency cap at time t."""

    cap: Callable[[float], float] = lambda t: math.inf
    rpm: float | None = None
    rpm_burst_s: float = 1.0
    tpm: float | None = None
    tpm_burst_s: float = 1.0
    sporadic: float = 0.0  # share of calls answered 429 at random
    retry_after: float | None = None  # seconds, on every 429
    latency: float = 1.0
    jitter: float = 0.2  # each latency is drawn from latency * (1 +- jitter/2)
    headers: bool = True  # send x-ratelimit-* for rpm/tpm
    error_body: Mapping[str, Any] | None = None  # the body of a cap's (or a rate's) 429


@attrs.define
class SimulatedProvider:
    """A transport that answers as a provider under `Limits`, on the loop's time."""

    limits: Limits
    seed: int = 1
    active: int = 0
    peak: int = 0
    calls: int = 0
    rate_limited: int = 0
    start: float | None = None
    _random: random.Random = attrs.field(init=False)
    _requests: _Bucket | None = attrs.field(init=False, default=None)
    _tokens: _Bucket | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._random = random.Random(self.seed)
        if self.limits.rpm:
            self._requests = _Bucket(self.limits.rpm, self.limits.rpm / 60 * self.limits.rpm_burst_s)
        if self.limits.tpm:
            self._tokens = _Bucket(self.limits.tpm, self.limits.tpm / 60 * self.limits.tpm_burst_s)

    @staticmethod
    def cost(payload: Mapping[str, Any]) -> int:
        """Tokens charged at admission: prompt characters / 4 and max_tokens, like OpenAI."""
        text = sum(len(str(m.get("content", ""))) for m in payload["messages"])
        return math.ceil(text / 4) + int(payload.get("max_tokens") or 16)

    def _headers(self) -> dict[str, str]:
        headers = {"x-request-id": f"req-{self.calls}"}
        if self.limits.headers:
            if self._requests is not None:
                headers.update(self._requests.headers("requests"))
            if self._tokens is not None:
                headers.update(self._tokens.headers("tokens"))
        return headers

    def _refuse(self, headers: dict[str, str], body: Mapping[str, Any], endpoint: Endpoint) -> Exception:
        self.rate_limited += 1
        if self.limits.retry_after is not None:
            headers["retry-after"] = str(self.limits.retry_after)
        return status_error(429, headers, body, provider=endpoint.provider)

    async def send(self, endpoint: Endpoint, payload: Mapping[str, Any]) -> tuple[dict[str, Any], ResponseInfo]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.start is None:
            self.start = now
        self.calls += 1
        cost = self.cost(payload)
        for bucket in (self._requests, self._tokens):
            if bucket is not None:
                bucket.refill(now)
        if self.active >= self.limits.cap(now - self.start):
            body = self.limits.error_body or {"error": {"code": "1302", "message": "High concurrency usage"}}
            raise self._refuse({}, body, endpoint)
        if self.limits.sporadic and self._random.random() < self.limits.sporadic:
            raise self._refuse({}, {"error": {"message": "busy", "code": "rate_limit_exceeded"}}, endpoint)
        if self._tokens is not None and cost > self._tokens.burst:
            message = (
                f"Request too large for m on tokens per min (TPM): Limit {self._tokens.burst:.0f}, Requested {cost}."
            )
            raise self._refuse(
                {}, {"error": {"message": message, "type": "tokens", "code": "rate_limit_exceeded"}}, endpoint
            )
        for bucket, need in ((self._requests, 1), (self._tokens, cost)):
            if bucket is not None and bucket.level < need:
                body = self.limits.error_body or {"error": {"code": "rate_limit_exceeded"}}
                raise self._refuse(self._headers(), body, endpoint)
        if self._requests is not None:
            self._requests.level -= 1
        if self._tokens is not None:
            self._tokens.level -= cost
        headers = self._headers()
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(self.limits.latency * (1 + self.limits.jitter * (self._random.random() - 0.5)))
        finally:
            self.active -= 1
        reply = {
            "id": f"sim-{self.calls}",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": cost - 16, "completion_tokens": 16, "total_tokens": cost},
        }
        return reply, ResponseInfo(200, headers)

    async def stream(
        self, endpoint: Endpoint, payload: Mapping[str, Any]
    ) -> AsyncGenerator[ResponseInfo | dict[str, Any], None]:
        data, info = await self.send(endpoint, payload)
        yield info
        yield data

    async def aclose(self) -> None:
        return None


@attrs.define
class SimulatedKeys:
    """A transport that answers each API key (``Authorization: Bearer KEY``) as a
    provider of its own, or refuses it for good with an error status (401, 402, or a
    429 with a body that says the quota is spent)."""

    keys: Mapping[str, SimulatedProvider | tuple[int, Mapping[str, Any]]]
    refused: int = 0

    def _provider(self, endpoint: Endpoint) -> SimulatedProvider:
        key = endpoint.headers.get("Authorization", "").removeprefix("Bearer ")
        answer = self.keys[key]
        if isinstance(answer, SimulatedProvider):
            return answer
        self.refused += 1
        status, body = answer
        raise status_error(status, {}, body, provider=endpoint.provider)

    async def send(self, endpoint: Endpoint, payload: Mapping[str, Any]) -> tuple[dict[str, Any], ResponseInfo]:
        return await self._provider(endpoint).send(endpoint, payload)

    async def stream(
        self, endpoint: Endpoint, payload: Mapping[str, Any]
    ) -> AsyncGenerator[ResponseInfo | dict[str, Any], None]:
        async for item in self._provider(endpoint).stream(endpoint, payload):
            yield item

    async def aclose(self) -> None:
        return None


def registry_with(provider: SimulatedProvider | SimulatedKeys) -> Registry:
    """The installed plugins, and ``provider`` as the transport ``sim``."""
    registry = Registry.load()
    registry.add_transport("sim", lambda options: provider)
    return registry
