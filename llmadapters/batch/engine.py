"""The batch engine: `BatchRun`, lanes per provider, lines put aside after a 429 and sent
again until their deadline, bounded memory (see the package's docstring)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterable, Collection, Iterable
from typing import TYPE_CHECKING, Any

import attrs

from ..embeddings import chunked, joined
from ..errors import BadRequestError, ConfigError, LLMAdapterError, RateLimitError
from ..fallback import FALLBACK_ON, chain_error
from ..middleware.base import new_idempotency_key
from ..middleware.ratelimit import UNSENT, Unsent
from ..middleware.retry import rate_limit_retryable
from ..spend import Budget, BudgetReached
from ..streaming import ChatCompletionStream
from ..types import BatchResult, CreateEmbeddingResponse, EmbeddingRequest

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator

    from ..client import AsyncClient
    from ..middleware.base import Reply
    from ..providers.base import ProviderSpec
    from ..routes import Route
    from ..types import Cost, Request

from .jsonl import BatchItem, duplicates_text, parse_item, requests_of

__all__ = ["BatchRun"]


@attrs.define(eq=False)
class _Line:
    """One request on its way through the lanes: the lane of its model, and of the next
    model of its fallback chain when that one fails for good."""

    item: BatchItem
    models: tuple[str | None, ...]  # as written in the line: one, or a fallback chain
    requests: tuple[Request, ...]  # one per model
    failures: list[tuple[str | None, LLMAdapterError]] = attrs.field(factory=list)  # of the models tried
    started: float | None = None  # loop.time() at its first attempt
    since: float | None = None  # loop.time() at its first attempt on its current model
    key: str | None = None  # its Idempotency-Key, the same each time it is sent to one model
    attempts: int = 0
    rate_limited: int = 0
    # The replies to the chunks of an embeddings input answered so far: a line put aside
    # after a 429 sends only the rest.
    parts: list[CreateEmbeddingResponse] = attrs.field(factory=list)

    @property
    def request(self) -> Request:
        return self.requests[len(self.failures)]

    def fall_back(self, error: LLMAdapterError) -> bool:
        """Pass the line on to the next model of its chain, after ``error``; False when
        there is none."""
        if len(self.failures) + 1 >= len(self.requests) or not isinstance(error, FALLBACK_ON):
            return False
        self.failures.append((self.models[len(self.failures)], error))
        self.since, self.key, self.rate_limited, self.parts = None, None, 0, []
        return True

    def error(self, error: LLMAdapterError) -> LLMAdapterError:
        """The line's error, once ``error`` ended it: with those of the models tried before."""
        if not self.failures:
            return error
        return chain_error([*self.failures, (self.models[len(self.failures)], error)])


@attrs.define(eq=False)
class _Lane:
    """One provider's lines and workers: ``concurrency`` workers send the lines of
    ``ready``, so a line waiting to be sent again after a 429 holds no worker."""

    ready: asyncio.Queue[_Line] = attrs.field(factory=asyncio.Queue)
    parked: dict[_Line, asyncio.TimerHandle] = attrs.field(factory=dict)
    workers: list[asyncio.Task[None]] = attrs.field(factory=list)
    unsent: dict[asyncio.Task[None], Unsent] = attrs.field(factory=dict)  # each worker's call, still in the limiter?


class _End:
    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


# A 429 without Retry-After is sent again after this backoff (doubling, less up to 25%
# jitter): the rate limiter has learned from it and paces the lane; the wait only keeps
# the line from going first in the queue again.
_REQUEUE_DELAY = 0.1
_REQUEUE_MAX = 5.0
# Lines taken from the input and not yet finished, over all lanes: the bound on memory.
# Reading stops when every lane has enough lines queued (2 x concurrency + 16); while some
# lane has room, it goes on, so that a slow lane's lines do not hold up the lines of the
# others behind them in the input, until this many are waiting.
MAX_HELD = 20_000
_LOOK_AGAIN = 0.5  # seconds between looks at whether a full lane is held up by a limit


def _refuse_duplicates(requests: Collection[object]) -> None:
    """Refuse requests that share a custom_id, as ``llmadapters batch`` refuses such a
    file: ValueError naming them, before anything is sent."""
    found: dict[str, list[int]] = {}
    for index, raw in enumerate(requests):
        item = raw if isinstance(raw, BatchItem) else parse_item(index, raw)
        found.setdefault(item.custom_id, []).append(index)
    duplicates = {cid: indexes for cid, indexes in found.items() if len(indexes) > 1}
    if duplicates:
        raise ValueError(duplicates_text(duplicates, "requests"))


class BatchRun:
    """The results of ``client.batch(...)``: ``async for result in run``. `stop` ends
    it early: no new request starts, those in flight finish and are yielded; ``read`` is
    the count of requests taken from the input, ``dropped`` of those left unanswered
    (never started, or waiting to be sent again after a 429). With ``max_cost``, the
    run's `Budget` (``budget``) stops it the same way once the next call would pass it
    (``budget.reached`` says so)."""

    def __init__(
        self,
        client: AsyncClient,
        requests: Iterable[object] | AsyncIterable[object],
        *,
        concurrency: int = 64,
        model: str | None = None,
        line_deadline: float = 3600.0,
        max_cost: Cost | None = None,
        embed_chunk: int | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if embed_chunk is not None and embed_chunk < 1:
            raise ValueError("embed_chunk must be >= 1")
        if not line_deadline > 0:
            raise ValueError("line_deadline must be > 0")
        if isinstance(requests, Collection):  # read twice; an iterator is read once, unchecked
            _refuse_duplicates(requests)
        self._client = client
        self._requests = requests
        self._concurrency = concurrency
        self._model = model
        self._line_deadline = line_deadline
        self._embed_chunk = embed_chunk
        self._results: asyncio.Queue[BatchResult | _End] | None = None
        self._lanes: dict[str, _Lane] = {}
        self._held = asyncio.Semaphore(max(MAX_HELD, 4 * concurrency))
        self._queue_room = 2 * concurrency + 16
        self._room = asyncio.Event()  # set when a lane's queue falls below its room
        self._open = 0  # lines in the lanes, not finished
        self._idle = asyncio.Event()  # set when none is
        self._idle.set()
        self._stopping = False
        self.budget = None if max_cost is None else Budget(max_cost)
        self.read = 0  # input requests taken so far
        self.dropped = 0  # taken, but left unanswered because the run was stopped

    def stop(self) -> None:
        """Send no more: the lines not sent yet (queued, put aside after a 429, or waiting
        in the rate limiter, which may pause a lane for a minute) are left for a resumed
        run; the calls out finish."""
        self._stopping = True
        for lane in self._lanes.values():
            parked, lane.parked = lane.parked, {}
            for handle in parked.values():
                handle.cancel()
                self.dropped += 1
                self._finish()
            for worker, unsent in lane.unsent.items():
                if unsent.waiting and not unsent.given_up:
                    unsent.given_up = True
                    worker.cancel()

    def __aiter__(self) -> AsyncIterator[BatchResult]:
        return self._run()

    async def _run(self) -> AsyncGenerator[BatchResult, None]:
        if self._results is not None:
            raise RuntimeError("a batch can be iterated once")
        results: asyncio.Queue[BatchResult | _End] = asyncio.Queue(maxsize=self._concurrency)
        self._results = results
        dispatcher = asyncio.create_task(self._dispatch())
        try:
            while True:
                result = await results.get()
                if isinstance(result, _End):
                    if result.error is not None:
                        raise result.error
                    return
                yield result
        finally:
            for lane in self._lanes.values():
                for handle in lane.parked.values():
                    handle.cancel()
            tasks = [dispatcher, *(w for lane in self._lanes.values() for w in lane.workers)]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _items(self) -> AsyncIterator[BatchItem]:
        requests = self._requests
        if isinstance(requests, AsyncIterable):
            async for raw in requests:
                yield raw if isinstance(raw, BatchItem) else parse_item(self.read, raw)
        else:
            for raw in requests:
                yield raw if isinstance(raw, BatchItem) else parse_item(self.read, raw)

    async def _dispatch(self) -> None:
        assert self._results is not None
        try:
            async for item in self._items():
                if self._stopping:
                    break
                self.read += 1
                line = self._line(item)
                if isinstance(line, BatchResult):
                    await self._results.put(line)
                    continue
                await self._held.acquire()
                self._open += 1
                self._idle.clear()
                self._lane(line.request.provider).ready.put_nowait(line)
                while all(self._full(lane) for lane in self._lanes.values()):
                    self._room.clear()
                    # (a lane's limit, met meanwhile, says nothing: looked at again soon)
                    look_again = asyncio.get_running_loop().call_later(_LOOK_AGAIN, self._room.set)
                    try:
                        await self._room.wait()
                    finally:
                        look_again.cancel()
            await self._idle.wait()
        except Exception as exc:
            await self._results.put(_End(exc))
        else:
            await self._results.put(_End())

    def _line(self, item: BatchItem) -> _Line | BatchResult:
        if item.body is not None:
            try:
                return _Line(item, *requests_of(self._client, item, self._model))
            except (ValueError, TypeError, ConfigError) as exc:
                where = f"line {item.line}" if item.line is not None else f"request {item.index}"
                item = attrs.evolve(item, problem=f"{where}: {exc}")
        error = BadRequestError(f"invalid request: {item.problem}", status=400)
        return BatchResult(index=item.index, custom_id=item.custom_id, error=error)

    def _lane(self, provider: str) -> _Lane:
        lane = self._lanes.get(provider)
        if lane is None:
            lane = self._lanes[provider] = _Lane()
            lane.workers = [asyncio.create_task(self._work(lane)) for _ in range(self._concurrency)]
        return lane

    def _full(self, lane: _Lane) -> bool:
        """Whether ``lane`` has lines enough queued, and is not held up by a rate limit
        (half its workers or more waiting on a rate budget or a pause; waiting for a
        slot of its concurrency is being busy, not held up): the lines behind a held-up
        lane's are read on (up to `MAX_HELD`), since they may be another provider's,
        which would wait for nothing (an input sorted by provider)."""
        if lane.ready.qsize() < self._queue_room:
            return False
        paced = sum(unsent.paced for unsent in lane.unsent.values())
        return not lane.unsent or 2 * paced < len(lane.unsent)  # (no worker started yet: no word)

    def _finish(self) -> None:
        self._open -= 1
        self._held.release()
        if not self._open:
            self._idle.set()

    async def _work(self, lane: _Lane) -> None:
        assert self._results is not None
        unsent = Unsent()
        UNSENT.set(unsent)  # (this task's own context)
        worker = asyncio.current_task()
        assert worker is not None
        lane.unsent[worker] = unsent
        while True:
            line = await lane.ready.get()
            if lane.ready.qsize() < self._queue_room:
                self._room.set()
            if self._stopping:  # never started, or put aside: left for a resumed run
                self.dropped += 1
                self._finish()
                continue
            try:
                result = await self._call(lane, line)
            except Exception as exc:  # not a call's error (those are results): a bug, which ends the run
                self._finish()
                await self._results.put(_End(exc))
                return
            if result is not None:
                await self._results.put(result)
                self._finish()

    async def _reserve(self, route: Route, request: Request) -> float | None:
        """The budget held for a call of ``request`` (0 without a budget); None when the
        budget is reached, which stops the run."""
        budget = self.budget
        if budget is None:
            return 0.0
        try:
            amount = budget.estimate(request, route.prices, route.spec.count_tokens)
        except BudgetReached as exc:
            budget.stop(exc)
        else:
            if await budget.reserve(amount):
                if not self._stopping:
                    return amount
                budget.settle(amount, None)
        self.stop()
        return None

    def _park(self, lane: _Lane, line: _Line, delay: float) -> None:
        def wake() -> None:
            del lane.parked[line]
            lane.ready.put_nowait(line)

        lane.parked[line] = asyncio.get_running_loop().call_later(delay, wake)

    def _requeue_delay(self, line: _Line, exc: RateLimitError, spec: ProviderSpec) -> float | None:
        """Seconds until a line answered 429 is sent again, or None when it may not be."""
        assert line.since is not None
        if not rate_limit_retryable(spec, exc):
            return None
        line.rate_limited += 1
        delay = exc.retry_after
        if delay is None:
            backoff = min(_REQUEUE_DELAY * 2.0 ** (line.rate_limited - 1), _REQUEUE_MAX)
            delay = backoff * (1 - 0.25 * random.random())
        if asyncio.get_running_loop().time() + delay > line.since + self._line_deadline:
            return None
        return delay

    async def _call(self, lane: _Lane, line: _Line) -> BatchResult | None:
        """Send ``line``: its result, or None when it was put aside to be sent again,
        passed on to the lane of the next model of its fallback chain, or left unsent
        because the budget is reached."""
        loop = asyncio.get_running_loop()
        if line.started is None:
            line.started = loop.time()
        if line.since is None:
            line.since = loop.time()
        outcome: dict[str, Any]
        try:
            route = await self._client.route(line.request.provider)
        except LLMAdapterError as exc:  # no route (a missing key): no call was made
            outcome = {"error": exc}
        else:
            reserved = await self._reserve(route, line.request)
            if reserved is None:  # the budget is reached: left for a resumed run
                self.dropped += 1
                self._finish()
                return None
            outcome = {}  # none yet: a call put aside after a 429 settles with no reply
            try:
                reply = await self._send(route, line)
            except asyncio.CancelledError:
                unsent = UNSENT.get()
                if unsent is None or not unsent.given_up:
                    raise
                # Stopped while it waited in the rate limiter: left for a resumed run.
                unsent.given_up = False
                uncancel = getattr(asyncio.current_task(), "uncancel", None)  # Python 3.11+
                if uncancel is not None:
                    uncancel()
                self.dropped += 1
                self._finish()
                return None
            except RateLimitError as exc:
                delay = self._requeue_delay(line, exc, route.spec)
                if delay is not None:
                    if self._stopping:  # left unanswered, for a resumed run
                        self.dropped += 1
                        self._finish()
                    else:
                        self._park(lane, line, delay)
                    return None
                outcome = {"error": exc}
            except LLMAdapterError as exc:
                outcome = {"error": exc}
            else:
                assert not isinstance(reply, ChatCompletionStream)  # a unary request gets a whole reply
                outcome = {"response": reply}
            finally:
                if self.budget is not None:
                    self.budget.settle(reserved, outcome.get("response"))
        if "error" in outcome:
            if line.fall_back(outcome["error"]):
                self._lane(line.request.provider).ready.put_nowait(line)
                return None
            outcome["error"] = line.error(outcome["error"])
        item = line.item
        latency = loop.time() - line.started
        return BatchResult(
            index=item.index, custom_id=item.custom_id, latency_s=latency, attempts=line.attempts, **outcome
        )

    async def _send(self, route: Route, line: _Line) -> Reply:
        """Send ``line``'s request: one call, or for an embeddings input larger than the
        chunk size (``embed_chunk``, else the provider's ``max_inputs``) or than the
        provider's ``max_tokens`` a request, one call per chunk in turn, their replies
        joined."""
        request = line.request
        if isinstance(request, EmbeddingRequest):
            api = route.spec.embeddings
            size = self._embed_chunk or (api.max_inputs if api is not None else None)
            parts = chunked(request, size, api.max_tokens if api is not None else None)
            if len(parts) > 1:
                while len(line.parts) < len(parts):
                    reply = await self._send_one(line, parts[len(line.parts)])
                    assert isinstance(reply, CreateEmbeddingResponse)
                    line.parts.append(reply)
                    line.key = None  # the next chunk is another call
                    if len(line.parts) > 1:
                        line.attempts -= 1  # its chunks count as one call: their retries count
                replies, line.parts = line.parts, []
                return joined(replies)
        return await self._send_one(line, request)

    async def _send_one(self, line: _Line, request: Request) -> Reply:
        """One call of ``request``, with the line's Idempotency-Key (the same when it is
        sent again), its attempts counted on the line."""
        if line.key is None:
            line.key = new_idempotency_key()
        try:
            reply = await self._client.call(request, idempotency_key=line.key, defer_rate_limits=True)
        except LLMAdapterError as exc:
            line.attempts += exc.attempts
            raise
        line.attempts += reply.http.attempts if reply.http is not None else 1
        return reply


# Latencies are counted in buckets 1% wide (on a log scale), not kept one by one: the
# summary of a run of millions of requests stays a few KiB.
