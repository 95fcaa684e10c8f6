"""`ChatCompletionStream`: the chunks of a streamed reply."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import attrs

from .accumulation import accumulate
from .errors import StreamError

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable

    from .types import ChatCompletion, ChatCompletionChunk, Cost, ResponseInfo, Usage

__all__ = ["ChatCompletionStream", "StreamEnd"]

logger = logging.getLogger("llmadapters")


@attrs.frozen
class StreamEnd:
    """How a stream ended, as `ChatCompletionStream.on_end` tells it.

    Attributes:
        complete: whether it was read to its end.
        error: what it raised, when it broke (then ``complete`` is False); None when it
            was read to its end, or closed (or dropped) before it.
        usage: the last usage a chunk carried (ask for it with
            ``stream_options={"include_usage": True}``), or None.
        cost: the cost that came with that usage, or None.
    """

    complete: bool
    error: BaseException | None = None
    usage: Usage | None = None
    cost: Cost | None = None


class ChatCompletionStream:
    """The chunks of a streamed reply: ``async for chunk in stream``.

    The HTTP response stays open until the stream is exhausted or closed; use
    ``async with stream:`` or `aclose` when stopping early. ``stream.http`` holds the
    response's status and headers (`ResponseInfo`), known before the first chunk.
    ``await stream.get_final_completion()`` reads the rest and gives the whole reply.

    A middleware that needs to know how a stream ended (its usage, whether it was read to
    its end) registers a callback with `on_end`, at no cost per chunk. One that rewrites
    chunks wraps one stream in another, with `with_chunks` so that the new stream keeps
    the response's ``http``::

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

    __slots__ = ("_chunks", "_cost", "_end", "_ends", "_first", "_given", "_loop", "_usage", "http")

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
        self._ends: list[Callable[[StreamEnd], object]] | None = None
        self._end: StreamEnd | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of the first on_end
        self._usage: Usage | None = None
        self._cost: Cost | None = None
        self.http = http

    def keep_chunks(self) -> ChatCompletionStream:
        """Keep each chunk this stream gives from now on, for `get_final_completion`.
        The client does it for the streams it returns; a middleware's streams keep
        nothing, so that a chain of them costs no more per chunk."""
        if self._given is None:
            self._given = []
        return self

    def on_end(self, callback: Callable[[StreamEnd], object]) -> None:
        """Call ``callback(end)`` once, when this stream ends: read to its end, broken
        by an error, or closed before its end; ``end`` is a `StreamEnd`. Add it before
        reading the stream (a middleware does, as soon as ``call_next`` returns): the
        stream is watched from then on. The callbacks run in the order they were added,
        once the response is released. A stream dropped before its end is closed on its
        event loop, and then its callbacks run, as if it had been closed. A callback
        added after the end runs at once, given the end without its ``error`` (which
        the stream does not keep: the error's traceback would keep the stream, and all
        it holds, alive). Unlike a stream made with `with_chunks`, this adds nothing to
        the work done per chunk."""
        if self._end is not None:
            callback(self._end)
            return
        if self._ends is None:
            self._ends = []
            self._loop = _running_loop()
        self._ends.append(callback)

    def _ended(self, complete: bool = False, error: BaseException | None = None) -> None:
        """Tell the `on_end` callbacks, the first time the stream ends. Each runs; the
        first error one of them raised is then raised, unless the stream itself broke
        (its own error goes on, and the callback's is logged)."""
        if self._end is not None:
            return
        end = StreamEnd(complete, error, self._usage, self._cost)
        self._end = end if error is None else attrs.evolve(end, error=None)
        callbacks, self._ends = self._ends or [], None
        if error is not None:
            _tell_or_log(callbacks, end, "as the stream broke")
            return
        failed = _tell(callbacks, end)
        if failed is not None:
            raise failed

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
        if self._end is not None and not self._end.complete:
            raise StreamError("the stream was closed before its end: its whole reply cannot be read any more")
        return accumulate(self._given)

    def with_chunks(self, chunks: AsyncGenerator[ChatCompletionChunk, None]) -> ChatCompletionStream:
        """A stream of ``chunks`` (which normally read this one) with this one's ``http``."""
        return ChatCompletionStream(chunks, http=self.http)

    def __aiter__(self) -> ChatCompletionStream:
        return self

    def __anext__(self) -> Awaitable[ChatCompletionChunk]:
        # The generator's own awaitable, with no coroutine of this class around it: each
        # middleware that wraps a stream iterates it, so this runs several times a chunk.
        if self._first is None and self._given is None and self._ends is None:
            return self._chunks.__anext__()
        return self._watched()

    async def _watched(self) -> ChatCompletionChunk:
        """The next chunk (the one received before the stream was made, first), kept
        (`keep_chunks`) and watched for the stream's end (`on_end`)."""
        chunk = self._first
        if chunk is not None:
            self._first = None
        else:
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                self._ended(complete=True)
                raise
            except BaseException as exc:
                self._ended(error=exc)
                raise
        if self._given is not None:
            self._given.append(chunk)
        if chunk.usage is not None:
            self._usage, self._cost = chunk.usage, chunk.cost
        return chunk

    async def aclose(self) -> None:
        chunks = self._chunks
        if getattr(chunks, "ag_running", False):
            # Another task is reading it: aclose raises, as it would without callbacks,
            # and the stream's end is that task's to tell.
            await chunks.aclose()
        try:
            await chunks.aclose()
        finally:
            self._ended()

    def __del__(self) -> None:
        if not self._ends:
            return
        # Dropped before its end, unread or half read: closed on its loop, and then its
        # end told, as closing it does (never here, in whatever code or thread let the
        # last reference go, before the response is released).
        callbacks, end, loop = self._ends, StreamEnd(complete=False, usage=self._usage, cost=self._cost), self._loop
        if loop is None:
            _tell_or_log(callbacks, end, "as a dropped stream was closed")
        elif not loop.is_closed():  # (else the budgets the callbacks would free ended with it)
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                schedule = loop.call_soon if _running_loop() is loop else loop.call_soon_threadsafe
                schedule(_close_dropped, loop, self._chunks, callbacks, end)

    async def __aenter__(self) -> ChatCompletionStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _tell(callbacks: list[Callable[[StreamEnd], object]], end: StreamEnd) -> Exception | None:
    """Call each of ``callbacks`` with ``end``; the first error one of them raised."""
    failed: Exception | None = None
    for callback in callbacks:
        try:
            callback(end)
        except Exception as exc:
            failed = failed or exc
    return failed


def _tell_or_log(callbacks: list[Callable[[StreamEnd], object]], end: StreamEnd, when: str) -> None:
    """`_tell`, the error logged, for an end that has no one to raise it to."""
    failed = _tell(callbacks, end)
    if failed is not None:
        logger.error("an on_end callback raised %s", when, exc_info=failed)


# The tasks closing dropped streams (an event loop keeps only weak references to tasks).
_CLOSING: set[asyncio.Task[None]] = set()


def _close_dropped(
    loop: asyncio.AbstractEventLoop,
    chunks: AsyncGenerator[ChatCompletionChunk, None],
    callbacks: list[Callable[[StreamEnd], object]],
    end: StreamEnd,
) -> None:
    task = loop.create_task(_closed_then_told(chunks, callbacks, end))
    _CLOSING.add(task)
    task.add_done_callback(_CLOSING.discard)


async def _closed_then_told(
    chunks: AsyncGenerator[ChatCompletionChunk, None], callbacks: list[Callable[[StreamEnd], object]], end: StreamEnd
) -> None:
    try:
        # An error closing a stream that nobody holds any more has nobody to go to.
        with contextlib.suppress(Exception):
            await chunks.aclose()
    finally:
        _tell_or_log(callbacks, end, "as a dropped stream was closed")
