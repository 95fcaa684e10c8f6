"""The sync facade: `Client`, the blocking twin of `AsyncClient`, which runs an
`AsyncClient` on an event loop of its own in a daemon thread, and the blocking iterators
over its streams and batches."""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from .client import AsyncClient
from .streaming import ChatCompletionStream
from .types import ChatCompletionChunk

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator
    from types import TracebackType

    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

    from .client import ClientOptions, Config, Messages
    from .fallback import ModelChoice
    from .types import BatchResult, ChatCompletion, Cost, CreateEmbeddingResponse, Model

__all__ = ["Client", "SyncChatCompletionStream", "SyncIterator"]

T = TypeVar("T")


class _LoopThread:
    """An event loop in a daemon thread: the sync facade runs every call there, so it
    also works where the calling thread already runs a loop (Jupyter)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="llmadapters-client", daemon=True)
        self._thread.start()
        # The sync iterators handed out and not yet closed: closed, each as a whole, before
        # the loop stops (asyncio would close all their nested generators at once, each
        # inner one twice over, and print "aclose(): asynchronous generator is already running").
        self.open: weakref.WeakSet[SyncIterator[Any]] = weakref.WeakSet()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a sync Client cannot be called from its own event loop (e.g. from a middleware)")
        if self.loop.is_closed():
            coro.close()
            raise RuntimeError("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def stop(self) -> None:
        """Cancel what is left, finalise async generators, stop and close the loop."""
        if self.loop.is_closed():
            return
        for iterator in list(self.open):
            iterator.close()

        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def _shut_down(runner: _LoopThread, client: AsyncClient) -> None:
    try:
        runner.run(client.aclose())
    finally:
        runner.stop()


class SyncIterator(Generic[T]):
    """Iterates an async iterator of the client's loop from sync code, one item per call."""

    def __init__(self, source: AsyncIterator[T], runner: _LoopThread) -> None:
        self._source = source
        self._runner = runner
        self._closed = False
        runner.open.add(self)

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        try:
            return self._runner.run(self._next())
        except StopAsyncIteration:
            raise StopIteration from None

    async def _next(self) -> T:
        return await self._source.__anext__()

    def close(self) -> None:
        """Close the source (a stream's response) on the client's loop; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._runner.open.discard(self)
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None and not self._runner.loop.is_closed():
            self._runner.run(aclose())

    def __del__(self) -> None:
        # Abandoned (a loop left with break): closed on the loop, without waiting for it,
        # since this may run in any thread, the loop's own included.
        aclose = getattr(self._source, "aclose", None)
        if not self._closed and aclose is not None and not self._runner.loop.is_closed():
            asyncio.run_coroutine_threadsafe(aclose(), self._runner.loop)

    def __enter__(self) -> SyncIterator[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncChatCompletionStream(SyncIterator[ChatCompletionChunk]):
    """The sync counterpart of `ChatCompletionStream`: ``for chunk in stream``."""

    def __init__(self, source: ChatCompletionStream, runner: _LoopThread) -> None:
        super().__init__(source, runner)
        self._stream = source

    def get_final_completion(self) -> ChatCompletion:
        """Same as `ChatCompletionStream.get_final_completion`, blocking."""
        return self._runner.run(self._stream.get_final_completion())


class _SyncCompletions:
    def __init__(self, client: Client) -> None:
        self._client = client

    @overload
    def create(
        self,
        *,
        messages: Messages,
        model: ModelChoice = ...,
        provider: str | None = ...,
        stream: Literal[False] = ...,
        **params: Any,
    ) -> ChatCompletion: ...

    @overload
    def create(
        self,
        *,
        messages: Messages,
        model: ModelChoice = ...,
        provider: str | None = ...,
        stream: Literal[True],
        **params: Any,
    ) -> SyncChatCompletionStream: ...

    def create(self, *, stream: bool = False, **kwargs: Any) -> ChatCompletion | SyncChatCompletionStream:
        """Same as `AsyncClient.chat.completions.create`, blocking."""
        client = self._client
        result = client._runner.run(client._async.chat.completions.create(stream=stream, **kwargs))
        if isinstance(result, ChatCompletionStream):
            return SyncChatCompletionStream(result, client._runner)
        return result


class _SyncChat:
    def __init__(self, client: Client) -> None:
        self.completions = _SyncCompletions(client)


class _SyncModels:
    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self, provider: str | None = None) -> list[Model]:
        """Same as `AsyncClient.models.list`, blocking."""
        client = self._client
        return client._runner.run(client._async.models.list(provider))


class _SyncEmbeddings:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, **kwargs: Any) -> CreateEmbeddingResponse:
        """Same as `AsyncClient.embeddings.create`, blocking."""
        client = self._client
        return client._runner.run(client._async.embeddings.create(**kwargs))


class Client:
    """The blocking facade of `AsyncClient`, with the same arguments and surface.

    Calls run on a private event loop in a background thread, so a `Client` works in
    plain scripts and inside a running event loop (Jupyter) alike. Close it with
    `close` or ``with Client() as client:``.
    """

    def __init__(self, config: Config = None, **options: Unpack[ClientOptions]) -> None:
        self._async = AsyncClient(config, **options)
        self._runner = _LoopThread()
        # An unclosed Client must not leave its routes, thread and loop behind when it is
        # collected or the interpreter exits; close() runs the same, once.
        self._finalizer = weakref.finalize(self, _shut_down, self._runner, self._async)
        self.settings = self._async.settings
        self.chat = _SyncChat(self)
        self.embeddings = _SyncEmbeddings(self)
        self.models = _SyncModels(self)

    def __repr__(self) -> str:
        return f"Client(transport={self.settings.transport!r})"

    def batch(
        self,
        requests: Iterable[object],
        *,
        concurrency: int = 64,
        model: str | None = None,
        line_deadline: float = 3600.0,
        max_cost: Cost | str | float | None = None,
        embed_chunk: int | None = None,
    ) -> SyncIterator[BatchResult]:
        """Same as `AsyncClient.batch`, for sync code: the requests run concurrently on the
        client's loop, and ``for result in client.batch(requests)`` gets them as they
        complete."""
        run = self._async.batch(
            requests,
            concurrency=concurrency,
            model=model,
            line_deadline=line_deadline,
            max_cost=max_cost,
            embed_chunk=embed_chunk,
        )
        return SyncIterator(aiter(run), self._runner)

    def limits(self) -> dict[str, dict[str, Any]]:
        """Same as `AsyncClient.limits`, read on the client's loop."""

        async def read() -> dict[str, dict[str, Any]]:
            return self._async.limits()

        return self._runner.run(read())

    def close(self) -> None:
        """Close the routes and stop the background loop; idempotent."""
        self._finalizer()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
