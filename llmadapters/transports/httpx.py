"""The ``httpx`` transport: raw HTTP on httpx2, with llmadapters' own SSE decoder.

One ``httpx2.AsyncClient`` slows down as its pool grows: its connection bookkeeping
costs more per request the more connections it holds (encode/httpx#3215,
httpcore#1035); one client of 256 connections ran at 337 req/s against a local nginx
where 32 clients of 8 connections ran at 1,407 req/s. So this transport keeps a list of
small clients ("shards") and opens a new one only when every open shard is busy: at low
concurrency it is one client, at high concurrency many small ones, and the cost per
request stays flat.

Each shard is an ``httpx2.AsyncHTTPTransport`` (httpx2's connection pool, built from
the route's proxy, TLS and limits), sent httpcore2 requests directly: the layers above
its pool, ``AsyncClient`` (URL merging, auth flows, redirects, a cookie jar, event hooks)
and httpx2's own request and response objects, which an API call has no use for, cost
two fifths of its CPU per request. So the transport does the little of theirs it needs:
the ``Host`` and ``Content-Length`` headers, and inflating a gzip or deflate body. Its
connections move their bytes on asyncio's own transports (`._asyncio_net.AsyncioBackend`),
not anyio's streams: a third less CPU per request.
"""

from __future__ import annotations

import zlib
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import attrs
import httpcore2
import httpx2

from ._asyncio_net import AsyncioBackend
from ._errors import BUILTIN_ERRORS, HTTPX2_ERRORS, ErrorMap
from ._kernel import DEFAULT_MAX_CONNECTIONS, encode_json, json_reply, read_body, stream_reply
from .httpx2_base import httpx_timeout, pool_settings
from .network import NetworkOptions

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Mapping

    from ..types import ResponseInfo
    from .base import Endpoint, Timeouts

__all__ = ["HttpxTransport"]


@attrs.define
class _Shard:
    pool: httpx2.AsyncHTTPTransport  # its settings, and what closes it
    core: httpcore2.AsyncConnectionPool  # what its requests go to
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
_PIECE = 1 << 20  # the most a compressed body is inflated by at once


_ERRORS = ErrorMap(HTTPX2_ERRORS, BUILTIN_ERRORS)


def _shard(options: NetworkOptions, connections: int) -> _Shard:
    """A shard of ``connections``: httpx2's pool for ``options`` (proxies, TLS, limits),
    sent httpcore2 requests directly, its bytes moved by `AsyncioBackend`. httpx2 takes
    no network backend as an argument: httpcore2's pool (and its proxy pools, which
    subclass it) hand theirs to each connection they open."""
    pool = httpx2.AsyncHTTPTransport(**pool_settings(options, connections))
    core = pool._pool
    core._network_backend = _BACKEND
    return _Shard(pool, core, connections)


_BACKEND = AsyncioBackend()


@lru_cache(maxsize=64)
def _target(url: str) -> tuple[httpcore2.URL, bytes]:
    """httpcore2's URL for ``url``, and its ``Host`` header, as httpx2 makes them."""
    parsed = httpx2.URL(url)
    core = httpcore2.URL(scheme=parsed.raw_scheme, host=parsed.raw_host, port=parsed.port, target=parsed.raw_path)
    return core, parsed.netloc


@lru_cache(maxsize=64)
def _extensions(timeouts: Timeouts) -> dict[str, Any]:
    return {"timeout": httpx_timeout(timeouts).as_dict()}


class _Headers(dict[str, str]):
    """A reply's headers by their names in lower case, looked up in any case (as
    `ResponseInfo` promises); a name sent twice has its values joined by commas, as
    ``httpx2.Headers.get`` does."""

    __slots__ = ()

    @classmethod
    def of(cls, raw: list[tuple[bytes, bytes]]) -> _Headers:
        headers = cls()
        for name, value in raw:
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        return headers

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name.lower() if isinstance(name, str) else name)

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


def _body(response: httpcore2.Response, headers: Mapping[str, str]) -> AsyncIterator[bytes]:
    """The reply's body, inflated when its ``content-encoding`` is one of those asked for."""
    chunks = response.aiter_stream()
    encoding = headers.get("content-encoding")
    return _inflated(chunks, encoding) if encoding in ("gzip", "deflate") else chunks


async def _inflated(chunks: AsyncIterator[bytes], encoding: str) -> AsyncIterator[bytes]:
    """``chunks`` decoded from gzip or deflate, a megabyte at most at a time, so that
    `read_body`'s cap stops a gzip bomb."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    first = encoding == "deflate"  # zlib's format, as the RFC says, or the raw one some servers send
    try:
        async for chunk in chunks:
            if first and chunk:
                first = False
                try:
                    data = inflater.decompress(chunk, _PIECE)
                except zlib.error:
                    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                    data = inflater.decompress(chunk, _PIECE)
            else:
                data = inflater.decompress(chunk, _PIECE)
            while data:
                yield data
                data = inflater.decompress(inflater.unconsumed_tail, _PIECE) if inflater.unconsumed_tail else b""
        if tail := inflater.flush():
            yield tail
    except zlib.error as exc:
        raise httpx2.DecodingError(f"the body is not valid {encoding}: {exc}") from exc


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
                least = _shard(self._options, capacity)
                self._shards.append(least)
        assert least is not None
        least.in_flight += 1
        return least

    @staticmethod
    def _request(endpoint: Endpoint, payload: Mapping[str, Any]) -> httpcore2.Request:
        url, host = _target(endpoint.url)
        body = encode_json(payload)
        headers = {**_HEADERS, **{name.lower(): value for name, value in endpoint.headers.items()}}
        return httpcore2.Request(
            b"POST",
            url,
            headers=[
                (b"Host", host),
                *((name.encode("ascii"), value.encode("ascii")) for name, value in headers.items()),
                (b"Content-Length", str(len(body)).encode("ascii")),
            ],
            content=body,
            extensions=_extensions(endpoint.timeouts),
        )

    async def send(self, endpoint: Endpoint, payload: Mapping[str, Any]) -> tuple[dict[str, Any], ResponseInfo]:
        shard = self._acquire()
        try:
            with _ERRORS(endpoint):
                response = await shard.core.handle_async_request(self._request(endpoint, payload))
                try:
                    headers = _Headers.of(response.headers)
                    body = await read_body(_body(response, headers))
                finally:
                    await response.aclose()
        finally:
            shard.in_flight -= 1
        return json_reply(response.status, headers, body, endpoint)

    async def stream(
        self, endpoint: Endpoint, payload: Mapping[str, Any]
    ) -> AsyncGenerator[ResponseInfo | dict[str, Any], None]:
        shard = self._acquire()
        try:
            with _ERRORS(endpoint):
                response = await shard.core.handle_async_request(self._request(endpoint, payload))
                try:
                    headers = _Headers.of(response.headers)
                    async for item in stream_reply(response.status, headers, _body(response, headers), endpoint):
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
