"""A response cache, as a middleware (``cache``), off by default.

A reply is stored under its provider, model and the canonical body of its request
(messages, parameters, whether it streams, the call's own query; for an embeddings
call, its input and encoding instead of messages and streaming), in one SQLite file
that several processes may share (write-ahead log, a busy timeout): a whole reply as its
JSON, a streamed one as its chunks, replayed as a stream. The HTTP status and headers
come back too, and ``reply.http.cached`` is True on a hit.

What is not stored: errors; a stream that ended in an error or was closed early; and,
unless ``nondeterministic`` is set, a request that samples (``temperature`` above 0 and
no ``seed``). A request that states no temperature is cached: set ``temperature`` if the
provider's default sampling should keep it out.

Placed before ``retry`` and ``ratelimit`` (``["logging", "cache", "retry", "ratelimit",
"timeout"]``), a hit costs no rate-limit budget and no attempt. The file holds at most
``max_size`` bytes of replies: past that, the least recently used go first. With
``expire``, a reply older than that many seconds is a miss (and is removed).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..policies import CacheSettings
from ..streaming import ChatCompletionStream
from ..types import ChatCompletion, ChatCompletionChunk, CreateEmbeddingResponse, EmbeddingRequest, ResponseInfo

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Mapping

    from ..types import Request
    from .base import Call, CallNext, Reply

__all__ = ["CacheSettings", "CacheMiddleware", "ResponseCache", "default_cache_path"]


def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/llmadapters/responses.sqlite`` (``~/.cache`` by default)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "llmadapters" / "responses.sqlite"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    used REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS replies_used ON replies (used);
CREATE TABLE IF NOT EXISTS totals (id INTEGER PRIMARY KEY CHECK (id = 0), size INTEGER NOT NULL);
INSERT OR IGNORE INTO totals VALUES (0, 0);
"""


_BUSY_TIMEOUT = 30.0


def _use_write_ahead_log(db: sqlite3.Connection) -> None:
    """Switch ``db`` to the write-ahead log, which it keeps from then on. While another
    connection holds a write lock on a file still in rollback mode (two processes opening
    a new cache at the same moment), SQLite refuses the switch at once, without waiting
    its busy timeout; so the switch is tried again until that timeout has passed."""
    deadline = time.monotonic() + _BUSY_TIMEOUT
    pause = 0.001
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


class ResponseCache:
    """Replies in one SQLite file, safe for several processes at once. Every query runs
    on a thread of its own, so that a disk that stalls never holds up the event loop."""

    def __init__(self, settings: CacheSettings) -> None:
        self.settings = settings
        self.path = Path(settings.path) if settings.path is not None else default_cache_path()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="llmadapters-cache")
        self._db: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT, isolation_level=None)
            _use_write_ahead_log(db)
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    async def _run(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: work(self._connect()))

    async def get(self, key: str) -> Any:
        """The value stored under ``key`` (JSON), or None."""
        return await self._run(functools.partial(self._get, key, time.time()))

    def _get(self, key: str, now: float, db: sqlite3.Connection) -> Any:
        row = db.execute("SELECT body, size, created FROM replies WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        body, size, created = row
        expire = self.settings.expire
        with db:
            if expire is not None and now - created > expire:
                if db.execute("DELETE FROM replies WHERE key = ?", (key,)).rowcount:
                    db.execute("UPDATE totals SET size = size - ? WHERE id = 0", (size,))
                return None
            db.execute("UPDATE replies SET used = ? WHERE key = ?", (now, key))
        return json.loads(body)

    async def put(self, key: str, value: Any) -> None:
        """Store ``value`` (JSON) under ``key``, then drop the least recently used
        replies while the file holds more than ``max_size`` bytes of them."""
        body = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        await self._run(functools.partial(self._put, key, body, time.time()))

    def _put(self, key: str, body: bytes, now: float, db: sqlite3.Connection) -> None:
        with db:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time: the total stays exact
            old = db.execute("SELECT size FROM replies WHERE key = ?", (key,)).fetchone()
            db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?)", (key, body, len(body), now, now))
            db.execute("UPDATE totals SET size = size + ? WHERE id = 0", (len(body) - (old[0] if old else 0),))
            (total,) = db.execute("SELECT size FROM totals WHERE id = 0").fetchone()
            while total > self.settings.max_size:
                oldest = db.execute("SELECT key, size FROM replies ORDER BY used LIMIT 64").fetchall()
                if not oldest:
                    break
                for victim, size in oldest:
                    if total <= self.settings.max_size:
                        break
                    db.execute("DELETE FROM replies WHERE key = ?", (victim,))
                    total -= size
                db.execute("UPDATE totals SET size = ? WHERE id = 0", (total,))

    async def aclose(self) -> None:
        if self._db is not None:
            await self._run(lambda db: db.close())
            self._db = None
        self._executor.shutdown(wait=False)


def request_key(call: Call, server: str | None = None) -> str:
    """The key of ``call``'s reply: its provider and ``server``, the base URL configured
    for it (one name may mean another server in another config: the cache file is the
    user's, not the config's), the model and the canonical body."""
    request = call.request
    canonical: dict[str, object] = {
        "provider": call.provider,
        "server": server,
        "model": request.model,
        "params": request.params,
        "query": request.extra_query,
    }
    if isinstance(request, EmbeddingRequest):
        canonical.update(path=request.path, input=request.input, encoding_format=request.encoding_format)
    else:
        canonical.update(messages=request.messages, stream=request.stream)
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def samples(request: Request) -> bool:
    """Whether ``request`` asks for a sampled answer: ``temperature`` above 0 and no seed
    (an embedding never does)."""
    if isinstance(request, EmbeddingRequest):
        return False
    temperature = request.params.get("temperature")
    return isinstance(temperature, (int, float)) and temperature > 0 and request.params.get("seed") is None


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _http(stored: dict[str, Any]) -> ResponseInfo:
    return ResponseInfo(stored["status"], stored["headers"], cached=True)


class CacheMiddleware:
    """Answers a call from the `ResponseCache` when it can, and stores what the rest of
    the chain answers; see the module docstring."""

    def __init__(self, cache: ResponseCache, server: str | None = None) -> None:
        """``server``: the provider's configured base URL, part of every key (None for
        a server launched on first use, as the fake provider's, whose address changes
        from run to run and which no other config can mean)."""
        self.cache = cache
        self.server = server

    def __repr__(self) -> str:
        return f"CacheMiddleware({self.cache!r})"

    async def __call__(self, call: Call, call_next: CallNext) -> Reply:
        if samples(call.request) and not self.cache.settings.nondeterministic:
            return await call_next(call)
        key = request_key(call, self.server)
        stored = await self.cache.get(key)
        if stored is not None:  # a reply of this request's kind: whether it streams is in the key
            request = call.request
            if request.stream:
                return ChatCompletionStream(_replay(stored["chunks"], call.provider), http=_http(stored))
            if isinstance(request, EmbeddingRequest):
                decode = request.encoding_format is None
                return CreateEmbeddingResponse.from_dict(
                    stored["body"], provider=call.provider, http=_http(stored), decode=decode
                )
            return ChatCompletion.from_dict(stored["body"], provider=call.provider, http=_http(stored))
        reply = await call_next(call)
        http = reply.http
        stored = {"status": http.status if http else 200, "headers": _lower(http.headers) if http else {}}
        if isinstance(reply, ChatCompletionStream):
            return reply.with_chunks(self._recorded(reply, key, stored))
        await self.cache.put(key, {**stored, "body": reply.raw})
        return reply

    async def _recorded(
        self, stream: ChatCompletionStream, key: str, stored: dict[str, Any]
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        """``stream``'s chunks; stored once it has run to its end."""
        chunks = []
        async with stream:
            async for chunk in stream:
                chunks.append(chunk.raw)
                yield chunk
        await self.cache.put(key, {**stored, "chunks": chunks})

    async def aclose(self) -> None:
        await self.cache.aclose()


async def _replay(chunks: list[Any], provider: str) -> AsyncGenerator[ChatCompletionChunk, None]:
    for raw in chunks:
        yield ChatCompletionChunk.from_dict(raw, provider=provider)
