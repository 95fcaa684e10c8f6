"""`ChatCompletionStream`: the chunks of a streamed reply."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable

    from .types import ChatCompletionChunk, ResponseInfo

__all__ = ["ChatCompletionStream"]


class ChatCompletionStream:
    """The chunks of a streamed reply: ``async for chunk in stream``.

    The HTTP response stays open until the stream is exhausted or closed; use
    ``async with stream:`` or `aclose` when stopping early. ``stream.http`` holds the
    response's status and headers (`ResponseInfo`), known before the first chunk.

    A middleware that observes or rewrites chunks wraps one stream in another, with
    `with_chunks` so that the new stream keeps the response's ``http``::

        async def upper(call, call_next):
            reply = await call_next(call)
            if not isinstance(reply, ChatCompletionStream):
                return reply

            async def chunks():
                async with reply:
                    async for chunk in reply:
                        yield rewrite(chunk)

            return reply.with_chunks(chunks())
    """

    __slots__ = ("_chunks", "_first", "http")

    def __init__(
        self,
        chunks: AsyncGenerator[ChatCompletionChunk, None],
        *,
        first: ChatCompletionChunk | None = None,
        http: ResponseInfo | None = None,
    ) -> None:
        """``first``: a chunk already received, to come before ``chunks``; ``http``: the
        response's status and headers."""
        self._chunks = chunks
        self._first = first
        self.http = http

    def with_chunks(self, chunks: AsyncGenerator[ChatCompletionChunk, None]) -> ChatCompletionStream:
        """A stream of ``chunks`` (which normally read this one) with this one's ``http``."""
        return ChatCompletionStream(chunks, http=self.http)

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
