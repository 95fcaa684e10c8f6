"""The batch engine: many requests, bounded memory, results as they complete.

``client.batch(requests, concurrency=64)`` reads ``requests`` lazily (any iterable or
async iterable), routes each to its provider's *lane* and yields `BatchResult`s as they
complete. Each provider's lane has ``concurrency`` workers of its own. A request
answered 429 is put aside (for its ``Retry-After``, or a short backoff: the rate limiter
paces the lane) and sent again until its ``line_deadline``, without holding a worker,
so a 429 never ends a line early. Reading stops while every lane has enough lines
queued; while some lane has room it goes on, so that a slow or rate-limited provider's
lines do not hold up the lines of another behind them, until `MAX_HELD` lines are taken
and unfinished: memory is bounded, never growing with the input.

Requests are dicts in the OpenAI Batch API line format
(``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {...}}``, or
``"url": "/v1/embeddings"`` with an embeddings body) or plain ``{"model", "messages",
...}`` bodies (``{"model", "input", ...}`` for embeddings); one input may mix both.
An embeddings input larger than ``embed_chunk`` (or the provider's documented
``max_inputs``) is sent as several requests, sent one after another, whose replies make
one result. This module also reads and writes the JSONL files of
``llmadapters batch`` (`read_jsonl`, `output_record`, `completed_ids`) and keeps the
run's figures (`BatchSummary`).
"""

from __future__ import annotations

import array
import asyncio
import json
import math
import os
import random
import re
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterable, Callable, Collection, Iterable
from typing import IO, TYPE_CHECKING, Any

import attrs

from .embeddings import chunked, joined
from .errors import APIStatusError, BadRequestError, ConfigError, LLMAdapterError, RateLimitError
from .fallback import FALLBACK_ON, chain_error, models_of
from .middleware.retry import rate_limit_retryable
from .pricing import CostTally
from .spend import Budget, BudgetReached
from .streaming import ChatCompletionStream
from .types import BatchResult, CreateEmbeddingResponse, EmbeddingRequest

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Iterator

    from .client import AsyncClient
    from .middleware.base import Reply
    from .providers.base import ProviderSpec
    from .routes import Route
    from .types import Cost, Request

__all__ = [
    "BatchItem",
    "BatchRun",
    "BatchSummary",
    "LatencyHistogram",
    "Shard",
    "completed_ids",
    "duplicate_ids",
    "duplicates_text",
    "output_record",
    "parse_item",
    "read_jsonl",
    "requests_of",
    "set_aside_failed",
    "write_record",
]

_CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")
_EMBEDDINGS_PATHS = ("/v1/embeddings", "/embeddings")


@attrs.frozen(kw_only=True)
class BatchItem:
    """One input request, parsed.

    Attributes:
        index: its position in the input (0-based).
        custom_id: its id: the input's ``custom_id``, else ``line-<index + 1>``.
        body: the chat-completions (or embeddings) body, or None when the input is not
            a valid request.
        problem: why it is not valid (with its line number when read from a file).
        line: its line number in the input file (1-based), when read from one.
        embeddings: whether it asks for embeddings (``url`` ``/v1/embeddings``, or a plain
            body with ``input`` and no ``messages``).
    """

    index: int
    custom_id: str
    body: dict[str, Any] | None = None
    problem: str | None = None
    line: int | None = None
    embeddings: bool = False


def parse_item(index: int, raw: object, *, where: str | None = None, default_id: str | None = None) -> BatchItem:
    """Read one request: an OpenAI Batch API line, or a plain chat-completions (or
    embeddings) body.
    Without a ``custom_id`` its id is ``default_id`` (``line-<index + 1>`` by default)."""
    where = where or f"request {index}"
    default_id = default_id or f"line-{index + 1}"
    if not isinstance(raw, dict):
        return BatchItem(index=index, custom_id=default_id, problem=f"{where}: expected a JSON object")
    custom_id = raw.get("custom_id", default_id)
    if not isinstance(custom_id, str) or not custom_id:
        return BatchItem(index=index, custom_id=default_id, problem=f"{where}: custom_id must be a non-empty string")
    if "body" in raw:
        body, url, method = raw["body"], raw.get("url", "/v1/chat/completions"), raw.get("method", "POST")
        if method != "POST" or url not in (*_CHAT_PATHS, *_EMBEDDINGS_PATHS):
            problem = f"{where}: only POST /v1/chat/completions and /v1/embeddings are supported, got {method} {url}"
            return BatchItem(index=index, custom_id=custom_id, problem=problem)
        embeddings = url in _EMBEDDINGS_PATHS
    else:
        body = {k: v for k, v in raw.items() if k != "custom_id"}
        embeddings = isinstance(body, dict) and "input" in body and "messages" not in body
    if not isinstance(body, dict):
        return BatchItem(index=index, custom_id=custom_id, problem=f"{where}: body must be a JSON object")
    if embeddings:
        if "input" not in body:
            return BatchItem(index=index, custom_id=custom_id, problem=f"{where}: an embeddings body needs 'input'")
        return BatchItem(index=index, custom_id=custom_id, body=body, embeddings=True)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return BatchItem(index=index, custom_id=custom_id, problem=f"{where}: 'messages' must be a non-empty list")
    return BatchItem(index=index, custom_id=custom_id, body=body)


def read_jsonl(lines: Iterable[str | bytes]) -> Iterator[BatchItem]:
    """Parse JSONL lines (text, or bytes of UTF-8) lazily; a line that is not UTF-8, not
    JSON, or not a request becomes an invalid item naming its line number. Blank lines
    are skipped (their numbers still count), and a byte order mark before the first.
    Without a ``custom_id``, an item's id is ``line-<line number>``."""
    index = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            text = line.decode() if isinstance(line, bytes) else line
            raw = json.loads(text.removeprefix("\ufeff") if number == 1 else text)
        except UnicodeDecodeError as exc:
            problem = f"{where}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
            item = BatchItem(index=index, custom_id=f"line-{number}", problem=problem)
        except ValueError as exc:
            item = BatchItem(index=index, custom_id=f"line-{number}", problem=f"{where}: not JSON ({exc})")
        else:
            item = parse_item(index, raw, where=where, default_id=f"line-{number}")
            if item.body is not None and _SURROGATE.search(text) and not _encodable(item.body):
                problem = f"{where}: a \\uD800-\\uDFFF escape without its pair: not text, so it cannot be sent"
                item = attrs.evolve(item, body=None, problem=problem)
        index += 1
        yield attrs.evolve(item, line=number)


# A JSON escape of a UTF-16 surrogate: half of a pair that stands for one character, or
# alone, which is no text at all (and cannot be encoded to send).
_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def _encodable(body: dict[str, Any]) -> bool:
    try:
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


@attrs.frozen
class Shard:
    """Shard ``index`` (1-based) of ``count``: the requests whose custom_id hashes to it.

    The split depends on the custom_id alone (CRC-32, the same on every host and
    Python), so N workers given the same input and ``1/N`` ... ``N/N`` answer every
    request exactly once between them, whatever the order of the lines.
    """

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"``, with 1 <= I <= N."""
        index, _, count = text.partition("/")
        try:
            shard = cls(int(index), int(count))
        except ValueError:
            raise ValueError(f"expected I/N (e.g. 2/4), got {text!r}") from None
        if not 1 <= shard.index <= shard.count:
            raise ValueError(f"expected I/N with 1 <= I <= N, got {text!r}")
        return shard

    def __contains__(self, custom_id: str) -> bool:
        return zlib.crc32(custom_id.encode("utf-8", "surrogatepass")) % self.count == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


_MASK = 2**64 - 1


def _mark(custom_id: str) -> tuple[int, int]:
    """The 32-bit fingerprint (never 0) of ``custom_id``, and the rest of its hash."""
    digest = hash(custom_id) & _MASK
    return (digest >> 32) | 1, digest & 0xFFFF_FFFF


def duplicate_ids(
    lines: Callable[[], Iterable[str | bytes]], shard: Shard | None = None
) -> tuple[dict[str, list[int]], int]:
    """The custom_ids that appear on more than one line, with their line numbers; and
    the number of requests read (of ``shard``'s only, when given).

    ``lines()`` gives the input's lines, each time it is called. The ids are not kept: a
    table of their 32-bit fingerprints, 5.3 bytes a line, finds the ones that may repeat,
    and when there are any a second reading keeps only those, so that a check of
    millions of lines costs megabytes, not the hundreds a set of the ids would."""
    size = sum(1 for _ in lines()) * 4 // 3 + 16
    table = array.array("I", bytes(4 * size))  # open addressing; 0 is an empty slot
    suspects: set[int] = set()
    count = 0
    for item in read_jsonl(lines()):
        if shard is None or item.custom_id in shard:
            count += 1
        mark, rest = _mark(item.custom_id)
        slot = rest % size
        while (seen := table[slot]) != 0:
            if seen == mark:  # the same id, or another with the same fingerprint
                suspects.add(mark)
                break
            slot = slot + 1 if slot + 1 < size else 0
        else:
            table[slot] = mark
    if not suspects:
        return {}, count
    del table
    found: dict[str, list[int]] = {}
    for item in read_jsonl(lines()):
        if _mark(item.custom_id)[0] in suspects:
            found.setdefault(item.custom_id, []).append(item.line or 0)
    return {custom_id: numbers for custom_id, numbers in found.items() if len(numbers) > 1}, count


def duplicates_text(duplicates: dict[str, list[int]], numbered: str) -> str:
    """``duplicate custom_id: 'a' on lines 2, 4; ...`` for what `duplicate_ids` found
    (ten ids at most), ``numbered`` saying what the numbers count."""
    shown = "; ".join(
        f"{cid!r} on {numbered} {', '.join(map(str, numbers))}" for cid, numbers in list(duplicates.items())[:10]
    )
    more = f" (and {len(duplicates) - 10} more)" if len(duplicates) > 10 else ""
    return f"duplicate custom_id: {shown}{more}"


def completed_ids(path: str | os.PathLike[str]) -> set[str]:
    """The custom_ids recorded in an output file, for ``--resume``. A last line cut short
    by a killed run is removed from the file first."""
    done: set[str] = set()
    try:
        with open(path, "rb+") as f:
            data = f.read()
            end = data.rfind(b"\n") + 1
            if end < len(data):  # a partial last record: the run died while writing it
                f.truncate(end)
    except FileNotFoundError:
        return done
    for line in data[:end].splitlines():
        if line.strip():
            record = json.loads(line)
            done.add(record["custom_id"])
    return done


def set_aside_failed(path: str | os.PathLike[str], shard: Shard | None = None) -> set[str]:
    """Move the error records of an output file to ``<path>.retried`` (appended), so that
    their requests count as not done and a resumed run sends them again; the custom_ids
    of the records kept, for ``--resume``. With ``shard``, only that shard's error
    records are moved: the others' are not this run's to send again. Every record is
    read (and a last line cut short repaired, as `completed_ids` does) before any is
    moved; the file is rewritten whole and then renamed over the old one, so a kill at
    any point leaves either the old file or the new one."""
    path = os.fspath(path)
    completed_ids(path)
    done: set[str] = set()
    kept = f"{path}.tmp"
    with open(path, "rb") as source, open(kept, "wb") as good, open(f"{path}.retried", "ab") as failed:
        for line in source:
            if not line.strip():
                continue
            record = json.loads(line)
            if record.get("error") is None or (shard is not None and record["custom_id"] not in shard):
                good.write(line)
                done.add(record["custom_id"])
            else:
                failed.write(line)
        good.flush()
        os.fsync(good.fileno())
        failed.flush()
        os.fsync(failed.fileno())
    os.replace(kept, path)
    return done


def requests_of(
    client: AsyncClient, item: BatchItem, model: str | None = None
) -> tuple[tuple[str | None, ...], tuple[Request, ...]]:
    """The models of a valid ``item`` (its own, else ``model``; one, or a fallback chain)
    and its request to each, a `ChatRequest` or an `EmbeddingRequest` (never streamed:
    a batch gets whole replies). Raises ValueError, TypeError or ConfigError for a
    request that cannot be made."""
    assert item.body is not None
    body = dict(item.body)
    body.pop("stream", None)
    own = body.pop("model", None)
    models = models_of(model if own is None else own)
    if item.embeddings:
        inputs = body.pop("input")
        return models, tuple(client.embedding_request(input=inputs, model=m, **body) for m in models)
    messages = body.pop("messages")
    return models, tuple(client.request(messages=messages, model=m, **body) for m in models)


def output_record(result: BatchResult) -> dict[str, Any]:
    """``result`` in the OpenAI Batch API output format. An embeddings body holds the
    vectors as the line asked for them: floats unless it set ``encoding_format`` (base64
    that went over the wire for speed is decoded)."""
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    reply = result.response
    if reply is not None:
        http = reply.http
        status, request_id = (200, None) if http is None else (http.status, http.request_id)
        body = reply.to_dict() if isinstance(reply, CreateEmbeddingResponse) else reply.raw
        response = {"status_code": status, "request_id": request_id, "body": body}
    exc = result.error
    if isinstance(exc, APIStatusError) and result.attempts:  # a server's answer, not a local refusal
        response = {"status_code": exc.status, "request_id": exc.request_id, "body": exc.body}
    if exc is not None:
        error = {"code": type(exc).__name__, "message": str(exc)}
    return {"id": f"batch_req_{result.index}", "custom_id": result.custom_id, "response": response, "error": error}


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
        self._stopping = True
        for lane in self._lanes.values():
            parked, lane.parked = lane.parked, {}
            for handle in parked.values():
                handle.cancel()
                self.dropped += 1
                self._finish()

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
                while all(lane.ready.qsize() >= self._queue_room for lane in self._lanes.values()):
                    self._room.clear()
                    await self._room.wait()
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

    def _finish(self) -> None:
        self._open -= 1
        self._held.release()
        if not self._open:
            self._idle.set()

    async def _work(self, lane: _Lane) -> None:
        assert self._results is not None
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
        chunk size (``embed_chunk``, else the provider's ``max_inputs``), one call per
        chunk in turn, their replies joined."""
        request = line.request
        if isinstance(request, EmbeddingRequest):
            api = route.spec.embeddings
            size = self._embed_chunk or (api.max_inputs if api is not None else None)
            parts = chunked(request, size) if size else [request]
            if len(parts) > 1:
                while len(line.parts) < len(parts):
                    reply = await self._send_one(route, line, parts[len(line.parts)])
                    assert isinstance(reply, CreateEmbeddingResponse)
                    line.parts.append(reply)
                    line.key = None  # the next chunk is another call
                    if len(line.parts) > 1:
                        line.attempts -= 1  # its chunks count as one call: their retries count
                replies, line.parts = line.parts, []
                return joined(replies)
        return await self._send_one(route, line, request)

    async def _send_one(self, route: Route, line: _Line, request: Request) -> Reply:
        """One call of ``request``, with the line's Idempotency-Key when it was sent before."""
        call = route.call(request, defer_rate_limits=True)
        if line.key is None:
            line.key = call.idempotency_key
        else:
            call.idempotency_key = line.key
        try:
            return await route.handle(call)
        finally:
            line.attempts += call.attempts


# Latencies are counted in buckets 1% wide (on a log scale), not kept one by one: the
# summary of a run of millions of requests stays a few KiB.
_BUCKET = math.log(1.01)


@attrs.define
class LatencyHistogram:
    """Counts of latencies in buckets 1% wide; percentiles within 0.5%."""

    counts: Counter[int] = attrs.field(factory=Counter)
    total: int = 0

    def add(self, seconds: float) -> None:
        self.counts[math.floor(math.log(seconds) / _BUCKET) if seconds > 0 else -(2**31)] += 1
        self.total += 1

    def percentile(self, p: float) -> float | None:
        """The latency under which ``p`` percent of them fall: the middle of its bucket."""
        if not self.total:
            return None
        rank = max(1, math.ceil(p / 100 * self.total))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return 0.0 if bucket == -(2**31) else math.exp((bucket + 0.5) * _BUCKET)
        raise AssertionError("unreachable: the counts add up to the total")


@attrs.define
class BatchSummary:
    """The figures of a batch run; `add` each result, then `as_dict`."""

    started: float = attrs.field(factory=time.monotonic)
    outcomes: Counter[str] = attrs.field(factory=Counter)
    latencies: LatencyHistogram = attrs.field(factory=LatencyHistogram)
    tokens_in: int = 0
    tokens_out: int = 0
    retries: int = 0
    cached: int = 0  # replies answered by the response cache
    costs: CostTally = attrs.field(factory=CostTally)
    unpriced: Counter[str] = attrs.field(factory=Counter)  # replies of models with no known price
    limits: dict[str, dict[str, Any]] = attrs.field(factory=dict)  # AsyncClient.limits() at the end

    @property
    def done(self) -> int:
        return sum(self.outcomes.values())

    @property
    def errors(self) -> int:
        return self.done - self.outcomes["ok"]

    def add(self, result: BatchResult) -> None:
        self.outcomes["ok" if result.error is None else type(result.error).__name__] += 1
        if result.attempts:
            self.latencies.add(result.latency_s)
            self.retries += result.attempts - 1
        reply = result.response
        if reply is None:
            return
        if reply.http is not None and reply.http.cached:
            self.cached += 1
        if reply.usage is not None:
            self.tokens_in += reply.usage.prompt_tokens or 0
            self.tokens_out += reply.usage.completion_tokens or 0
        model = f"{reply.provider}/{reply.model}"
        if reply.cost is None:
            self.unpriced[model] += 1
        else:
            self.costs.add(model, reply.cost)

    def as_dict(self) -> dict[str, Any]:
        wall = time.monotonic() - self.started

        def percentile(p: float) -> float | None:
            value = self.latencies.percentile(p)
            return None if value is None else round(value, 4)

        return {
            "requests": self.done,
            "ok": self.outcomes["ok"],
            "errors": self.errors,
            "errors_by_kind": {k: v for k, v in sorted(self.outcomes.items()) if k != "ok"},
            "retries": self.retries,
            "cached": self.cached,
            "latency_s": {"p50": percentile(50), "p95": percentile(95), "p99": percentile(99)},
            "tokens": {"in": self.tokens_in, "out": self.tokens_out},
            "cost": {**self.costs.as_dict(), "unpriced": dict(sorted(self.unpriced.items()))},
            "wall_s": round(wall, 3),
            "requests_per_s": round(self.done / wall, 1) if wall > 0 else None,
            "limits": self.limits,
        }


def write_record(out: IO[str], result: BatchResult) -> None:
    """Append ``result``'s record and flush: once this returns, a killed process loses it
    no more. A record the output's encoding cannot hold (a lone surrogate, from an escape
    in the input or in a server's reply) is written with ASCII escapes, which read back
    the same."""
    record = output_record(result)
    try:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
    except UnicodeEncodeError:  # raised before anything is written
        out.write(json.dumps(record) + "\n")
    out.flush()
