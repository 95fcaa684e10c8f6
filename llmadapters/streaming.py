"""`ChatCompletionStream`: the chunks of a streamed reply."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .accumulation import accumulate

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable

    from .types import ChatCompletion, ChatCompletionChunk, ResponseInfo

__all__ = ["ChatCompletionStream"]


class ChatCompletionStream:
    """The chunks of a streamed reply: ``async for chunk in stream``.

    The HTTP response stays open until the stream is exhausted or closed; use
    ``async with stream:`` or `aclose` when stopping early. ``stream.http`` holds the
    response's status and headers (`ResponseInfo`), known before the first chunk.
    ``await stream.get_final_completion()`` reads the rest and gives the whole reply.

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

    __slots__ = ("_chunks", "_first", "_given", "http")

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
        self._given: list[ChatCompletionChunk] | None = None
        self.http = http

    def keep_chunks(self) -> ChatCompletionStream:
        """Keep each chunk this stream gives from now on, for `get_final_completion`.
        The client does it for the streams it returns; a middleware's streams keep
        nothing, so that a chain of them costs no more per chunk."""
        if self._given is None:
            self._given = []
        return self

    async def get_final_completion(self) -> ChatCompletion:
        """Read the rest of the stream and return the whole reply as one
        `ChatCompletion`, the chunks already iterated included (see `accumulate`):
        content, ``reasoning_content``, tool calls, ``finish_reason`` and usage (ask for
        it with ``stream_options={"include_usage": True}``)."""
        if self._given is None:
            raise RuntimeError("this stream keeps no chunks: call keep_chunks() before iterating it")
        async with self:
            async for _ in self:
                pass
        return accumulate(self._given)

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
            return self._chunks.__anext__() if self._given is None else self._kept()
        self._first = None
        if self._given is not None:
            self._given.append(first)
        return _now(first)

    async def _kept(self) -> ChatCompletionChunk:
        chunk = await self._chunks.__anext__()
        assert self._given is not None
        self._given.append(chunk)
        return chunk

    async def aclose(self) -> None:
        await self._chunks.aclose()

    async def __aenter__(self) -> ChatCompletionStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _now(chunk: ChatCompletionChunk) -> ChatCompletionChunk:
    return chunk
