"""The middleware protocol.

A middleware is any async callable ``(call, call_next) -> reply``: a plain function or an
object with ``async def __call__``. It may change the call (a header, a parameter), act
before and after ``await call_next(call)`` (time it, retry it, wait for a rate limit),
or wrap a streamed reply to observe or rewrite its chunks.

For a streamed request, ``call_next`` returns once the first chunk has arrived: an error
before that raises from ``call_next`` and may be retried; an error after it surfaces
while the caller iterates, and is never retried, since the caller has seen output.

An embeddings call (``client.embeddings.create``) goes through the same chain: its
``call.request`` is an `EmbeddingRequest`, which reads like a `ChatRequest` where a
middleware looks (``model``, ``params``, ``extra_headers``; ``stream`` always False,
``messages`` empty; the text is in ``input``), and its reply a `CreateEmbeddingResponse`,
which has the ``usage``, ``http``, ``cost`` and ``raw`` of a `ChatCompletion`. A
middleware that must tell them apart tests ``isinstance(call.request, EmbeddingRequest)``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from ..streaming import ChatCompletionStream
from ..types import ChatCompletion, CreateEmbeddingResponse

if TYPE_CHECKING:
    from ..providers.base import ProviderSpec
    from ..transports.base import Endpoint
    from ..types import Request
    from .auth import KeyRing

__all__ = ["Call", "CallNext", "Middleware", "Reply", "compose"]

Reply: TypeAlias = ChatCompletion | ChatCompletionStream | CreateEmbeddingResponse
CallNext: TypeAlias = Callable[["Call"], Awaitable[Reply]]
Middleware: TypeAlias = Callable[["Call", CallNext], Awaitable[Reply]]


class _KeySource:
    """Idempotency keys: a random prefix per process (drawn again in a forked child)
    and a counter, unique without a system call per call as ``os.urandom`` makes."""

    def __init__(self) -> None:
        self.reseed()
        if hasattr(os, "register_at_fork"):  # (no fork, and no such function, on Windows)
            os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self._prefix = f"llmadapters-{os.urandom(12).hex()}-"
        self._count = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._count)}"


new_idempotency_key = _KeySource()


@attrs.define(kw_only=True)
class Call:
    """One call on its way through a route's middleware.

    Attributes:
        request: what the caller asked for: a `ChatRequest`, or an `EmbeddingRequest`
            (see the module's docstring).
        spec: the provider that will answer (``spec.name`` is the provider's name).
        endpoint: where the transport sends it; a middleware may replace it, e.g. with
            ``call.endpoint = call.endpoint.with_headers({...})``.
        headers: headers of this call alone, sent over the endpoint's, e.g.
            ``call.headers["x-request-id"] = ...``: cheaper than a new endpoint per call.
            Each attempt of a retried call starts from the headers the retry middleware
            saw (plus its ``Idempotency-Key``).
        attempt: 1 for the first attempt; the retry middleware counts up.
        deadline: ``loop.time()`` after which no new attempt starts, or None.
        idempotency_key: the same for every attempt of this call.
        keys: the provider's API keys (a `KeyRing`: names and state, never values), or
            None when it takes none.
        key: the name of the key this call is sent with: chosen by the rate limiter
            when the provider has several (each has budgets of its own), else by auth.
        defer_rate_limits: raise a 429 at once instead of waiting to retry it, so that
            the caller can put the call aside without holding a slot and send it again
            later (the batch engine does; the retry middleware reads it).
        attempts: the attempts made of this call so far, as the middleware outside
            the retry middleware sees it (the retry middleware counts them on its way
            back; 1 without it).
        metadata: free for middleware to share state along the chain.
    """

    request: Request
    spec: ProviderSpec
    endpoint: Endpoint
    headers: dict[str, str] = attrs.field(factory=dict)
    attempt: int = 1
    deadline: float | None = None
    idempotency_key: str = attrs.field(factory=new_idempotency_key)
    keys: KeyRing | None = None
    key: str | None = None
    defer_rate_limits: bool = False
    attempts: int = 1
    metadata: dict[str, Any] = attrs.field(factory=dict)

    @property
    def provider(self) -> str:
        return self.spec.name

    def attempt_of(self, attempt: int, deadline: float | None, headers: dict[str, str]) -> Call:
        """A copy for one attempt of this call, with its number, deadline and headers:
        ``attrs.evolve`` at a third of the cost (once per call, for the retry middleware)."""
        return Call(
            request=self.request,
            spec=self.spec,
            endpoint=self.endpoint,
            headers=headers,
            attempt=attempt,
            deadline=deadline,
            idempotency_key=self.idempotency_key,
            keys=self.keys,
            key=self.key,
            defer_rate_limits=self.defer_rate_limits,
            attempts=self.attempts,
            metadata=self.metadata,
        )


class EndpointMemo:
    """``make(endpoint)``, made again only when a call brings another endpoint than the
    last one: for a middleware that puts the same thing on every call of a route (a
    fresh endpoint per call would cost an allocation and a copy of its headers)."""

    __slots__ = ("_in", "_make", "_out")

    def __init__(self, make: Callable[[Endpoint], Endpoint]) -> None:
        self._make = make
        self._in: Endpoint | None = None
        self._out: Endpoint | None = None

    def __call__(self, endpoint: Endpoint) -> Endpoint:
        if endpoint is not self._in or self._out is None:
            self._in, self._out = endpoint, self._make(endpoint)
        return self._out


def compose(middleware: Sequence[Middleware], terminal: CallNext) -> CallNext:
    """Chain ``middleware`` (outermost first) around ``terminal``, once, at route build."""
    handler = terminal
    for outer in reversed(middleware):

        def bind(mw: Middleware, call_next: CallNext) -> CallNext:
            # A plain function handing back the middleware's coroutine: no coroutine
            # frame of its own on every call.
            def handle(call: Call) -> Awaitable[Reply]:
                return mw(call, call_next)

            return handle

        handler = bind(outer, handler)
    return handler
