"""`ChatCompletionStream`: the chunks of a streamed reply."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from .types import ChatCompletionChunk

__all__ = ["ChatCompletionStream", "prefetched"]


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

    __slots__ = ("_chunks",)

    def __init__(self, chunks: AsyncGenerator[ChatCompletionChunk, None]) -> None:
        self._chunks = chunks

    def __aiter__(self) -> ChatCompletionStream:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        await self._chunks.aclose()

    async def __aenter__(self) -> ChatCompletionStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def prefetched(
    first: ChatCompletionChunk | None, rest: AsyncGenerator[ChatCompletionChunk, None]
) -> AsyncGenerator[ChatCompletionChunk, None]:
    """``first`` (already received), then the rest; closing it closes ``rest``."""
    try:
        if first is not None:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()
