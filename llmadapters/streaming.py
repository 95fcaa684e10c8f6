"""`ChatCompletionStream`: the chunks of a streamed reply."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable

    from .types import ChatCompletionChunk

__all__ = ["ChatCompletionStream"]


class ChatCompletionStream:
    """The chunks of a streamed reply: ``async for chunk in stream``.

    The HTTP response stays open until the stream is exhausted or closed; use
    ``async with stream:`` or `aclose` when stopping early.

    A middleware that observes or rewrites chunks wraps one stream in another::

        async def upper(call, call_next):
            reply = await call_next(call)
            if not isinstance(reply, ChatCompletionStream):
                return reply

            async def chunks():
                async with reply:
                    async for chunk in reply:
                        yield rewrite(chunk)

            return ChatCompletionStream(chunks())
    """

    __slots__ = ("_chunks", "_first")

    def __init__(
        self, chunks: AsyncGenerator[ChatCompletionChunk, None], *, first: ChatCompletionChunk | None = None
    ) -> None:
        """``first``: a chunk already received, to come before ``chunks``."""
        self._chunks = chunks
        self._first = first

    def __aiter__(self) -> ChatCompletionStream:
        return self

    def __anext__(self) -> Awaitable[ChatCompletionChunk]:
        # The generator's own awaitable, with no coroutine of this class around it: each
        # middleware that wraps a stream iterates it, so this runs several times a chunk.
        first = self._first
        if first is None:
            return self._chunks.__anext__()
        self._first = None
        return _now(first)

    async def aclose(self) -> None:
        await self._chunks.aclose()

    async def __aenter__(self) -> ChatCompletionStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _now(chunk: ChatCompletionChunk) -> ChatCompletionChunk:
    return chunk
