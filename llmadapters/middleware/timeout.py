"""Timeouts per attempt that the transport's own (connect, read, write, pool) cannot
express: the whole attempt (``total``) and the wait for a stream's first chunk
(``first_token``), both also bounded by the call's deadline."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, TypeVar

from ..streaming import ChatCompletionStream
from ..transports.base import timeout_error

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable

    from ..types import ChatCompletionChunk
    from .base import Call, CallNext, Reply

__all__ = ["TimeoutMiddleware"]

T = TypeVar("T")

if sys.version_info >= (3, 11):

    async def _within(awaitable: Awaitable[T], seconds: float) -> T:
        async with asyncio.timeout(seconds):
            return await awaitable

else:  # pragma: no cover - Python 3.10

    async def _within(awaitable: Awaitable[T], seconds: float) -> T:
        return await asyncio.wait_for(awaitable, seconds)


def _least(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


class TimeoutMiddleware:
    """Args:
    total: seconds for one attempt, a stream's last chunk included.
    first_token: seconds until a stream's first chunk (or a unary reply).
    """

    def __init__(self, *, total: float | None = None, first_token: float | None = None) -> None:
        self.total = total
        self.first_token = first_token

    def __repr__(self) -> str:
        return f"TimeoutMiddleware(total={self.total}, first_token={self.first_token})"

    def __call__(self, call: Call, call_next: CallNext) -> Awaitable[Reply]:
        # A plain function: with nothing to bound (the default), the call goes on
        # without a coroutine frame of this middleware's own.
        if self.total is None and self.first_token is None and call.deadline is None:
            return call_next(call)
        return self._bounded_call(call, call_next)

    async def _bounded_call(self, call: Call, call_next: CallNext) -> Reply:
        loop = asyncio.get_running_loop()
        start = loop.time()
        left = None if call.deadline is None else call.deadline - start
        budget = _least(self.total, left)
        first = _least(self.first_token, budget)
        assert first is not None
        url = call.endpoint.url
        try:
            reply = await _within(call_next(call), first)
        except (asyncio.TimeoutError, TimeoutError) as exc:
            phase = "first_token" if first == self.first_token else "total" if first == self.total else "deadline"
            raise timeout_error(phase, url, first) from exc
        if budget is None or not isinstance(reply, ChatCompletionStream):
            return reply
        phase = "total" if budget == self.total else "deadline"
        return reply.with_chunks(self._bounded(reply, start + budget, budget, phase, url))

    @staticmethod
    async def _bounded(
        stream: ChatCompletionStream, end: float, budget: float, phase: str, url: str
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        loop = asyncio.get_running_loop()
        async with stream:
            while True:
                try:
                    chunk = await _within(stream.__anext__(), max(end - loop.time(), 0.0))
                except StopAsyncIteration:
                    return
                except (asyncio.TimeoutError, TimeoutError) as exc:
                    raise timeout_error(phase, url, budget) from exc
                yield chunk
