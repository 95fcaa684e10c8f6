"""The ``httpx`` transport: raw HTTP on httpx2, with llmadapters' own SSE decoder.

One ``httpx2.AsyncClient`` slows down as its pool grows: its connection bookkeeping
costs more per request the more connections it holds (encode/httpx#3215,
httpcore#1035); one client of 256 connections ran at 337 req/s against a local nginx
where 32 clients of 8 connections ran at 1,407 req/s. So this transport keeps a list of
small clients ("shards") and opens a new one only when every open shard is busy: at low
concurrency it is one client, at high concurrency many small ones, and the cost per
request stays flat.

Each shard is an ``httpx2.AsyncHTTPTransport`` (httpx2's connection pool), sent
``httpx2.Request``s directly: the ``AsyncClient`` layer above it (URL merging, auth
flows, redirects, a cookie jar, event hooks), which an API call has no use for, cost a
fifth of httpx2's CPU per request. Its connections move their bytes on asyncio's own
transports (`._asyncio_net.AsyncioBackend`), not anyio's streams: a third less CPU per
request.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import attrs
import httpx2

from ._asyncio_net import AsyncioBackend
from ._errors import BUILTIN_ERRORS, HTTPX2_ERRORS, ErrorMap
from ._kernel import DEFAULT_MAX_CONNECTIONS, encode_json, json_reply, read_body, stream_reply
from .httpx2_base import httpx_timeout, pool_settings
from .network import NetworkOptions

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping

    from ..types import ResponseInfo
    from .base import Endpoint, Timeouts

__all__ = ["HttpxTransport"]


@attrs.define
class _Shard:
    pool: httpx2.AsyncHTTPTransport
    capacity: int
    in_flight: int = 0


# What httpx2.AsyncClient would add to each request; the endpoint's headers, in lower
# case, replace them.
_HEADERS = {
    "accept": "*/*",
    "accept-encoding": "gzip, deflate",
    "connection": "keep-alive",
    "user-agent": f"python-httpx2/{httpx2.__version__}",
    "content-type": "application/json",
}


_ERRORS = ErrorMap(HTTPX2_ERRORS, BUILTIN_ERRORS)


def _pool(options: NetworkOptions, connections: int) -> httpx2.AsyncHTTPTransport:
    """One shard's pool: httpx2's, its bytes moved by `AsyncioBackend`. httpx2 takes no
    network backend as an argument: httpcore2's pool (and its proxy pools, which
    subclass it) hand theirs to each connection they open."""
    pool = httpx2.AsyncHTTPTransport(**pool_settings(options, connections))
    pool._pool._network_backend = _BACKEND
    return pool


_BACKEND = AsyncioBackend()


@lru_cache(maxsize=64)
def _url(url: str) -> httpx2.URL:
    return httpx2.URL(url)


@lru_cache(maxsize=64)
def _extensions(timeouts: Timeouts) -> dict[str, Any]:
    return {"timeout": httpx_timeout(timeouts).as_dict()}


class HttpxTransport:
    """Sends requests through a growing set of small ``httpx2.AsyncClient`` pools.

    Args:
        options: the route's proxy, TLS and connection settings; ``max_connections``
            (default `DEFAULT_MAX_CONNECTIONS`) counts over all shards.
        connections_per_shard: connections of one ``httpx2.AsyncClient``; small pools
            keep httpx2's per-request bookkeeping cheap.
    """

    def __init__(self, options: NetworkOptions | None = None, *, connections_per_shard: int = 8) -> None:
        options = options or NetworkOptions()
        max_connections = options.max_connections or DEFAULT_MAX_CONNECTIONS
        if connections_per_shard < 1:
            raise ValueError("need connections_per_shard >= 1")
        self._per_shard = connections_per_shard
        self._max_connections = max_connections
        self._options = options
        self._shards: list[_Shard] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"HttpxTransport(shards={len(self._shards)}, connections_per_shard={self._per_shard})"

    def _acquire(self) -> _Shard:
        if self._closed:
            raise RuntimeError("transport is closed")
        least: _Shard | None = None
        for shard in self._shards:
            if shard.in_flight < shard.capacity:
                least = shard
                break
            if least is None or shard.in_flight < least.in_flight:
                least = shard
        else:
            capacity = min(self._per_shard, self._max_connections - sum(s.capacity for s in self._shards))
            if capacity > 0:
                least = _Shard(_pool(self._options, capacity), capacity)
                self._shards.append(least)
        assert least is not None
        least.in_flight += 1
        return least

    @staticmethod
    def _request(endpoint: Endpoint, payload: Mapping[str, Any]) -> httpx2.Request:
        return httpx2.Request(
            "POST",
            _url(endpoint.url),
            headers={**_HEADERS, **{name.lower(): value for name, value in endpoint.headers.items()}},
            content=encode_json(payload),
            extensions=_extensions(endpoint.timeouts),
        )

    async def send(self, endpoint: Endpoint, payload: Mapping[str, Any]) -> tuple[dict[str, Any], ResponseInfo]:
        shard = self._acquire()
        try:
            with _ERRORS(endpoint):
                response = await shard.pool.handle_async_request(self._request(endpoint, payload))
                try:
                    body = await read_body(response.aiter_bytes())
                finally:
                    await response.aclose()
        finally:
            shard.in_flight -= 1
        return json_reply(response.status_code, response.headers, body, endpoint)

    async def stream(
        self, endpoint: Endpoint, payload: Mapping[str, Any]
    ) -> AsyncGenerator[ResponseInfo | dict[str, Any], None]:
        shard = self._acquire()
        try:
            with _ERRORS(endpoint):
                response = await shard.pool.handle_async_request(self._request(endpoint, payload))
                try:
                    chunks = response.aiter_bytes()
                    async for item in stream_reply(response.status_code, response.headers, chunks, endpoint):
                        yield item
                finally:
                    await response.aclose()
        finally:
            shard.in_flight -= 1

    async def aclose(self) -> None:
        self._closed = True
        shards, self._shards = self._shards, []
        for shard in shards:
            await shard.pool.aclose()
