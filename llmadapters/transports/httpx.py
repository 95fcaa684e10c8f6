"""The ``httpx`` transport: raw HTTP on httpx2, with llmadapters' own SSE decoder.

One ``httpx2.AsyncClient`` slows down as its pool grows: its connection bookkeeping
costs more per request the more connections it holds (encode/httpx#3215,
httpcore#1035); one client of 256 connections ran at 337 req/s against a local nginx
where 32 clients of 8 connections ran at 1,407 req/s. So this transport keeps a list of
small clients ("shards") and opens a new one only when every open shard is busy: at low
concurrency it is one client, at high concurrency many small ones, and the cost per
request stays flat.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import attrs
import httpx2

from .base import Endpoint, decode_json_body, decode_sse_json, drain, raise_for_status, read_body
from .httpx2_base import httpx_timeout, map_httpx_errors

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping

__all__ = ["HttpxTransport"]


@attrs.define
class _Shard:
    client: httpx2.AsyncClient
    in_flight: int = 0


def _body(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


class HttpxTransport:
    """Sends requests through a growing set of small ``httpx2.AsyncClient`` pools.

    Args:
        max_connections: connections open at most, over all shards.
        connections_per_shard: connections of one ``httpx2.AsyncClient``; small pools
            keep httpx2's per-request bookkeeping cheap.
        http2: negotiate HTTP/2 (needs the ``h2`` package). HTTP/1.1 by default: HTTP/2
            puts every request to an origin on one connection.
    """

    def __init__(self, *, max_connections: int = 1024, connections_per_shard: int = 8, http2: bool = False) -> None:
        if connections_per_shard < 1 or max_connections < connections_per_shard:
            raise ValueError("need 1 <= connections_per_shard <= max_connections")
        self._per_shard = connections_per_shard
        self._max_shards = max_connections // connections_per_shard
        self._http2 = http2
        self._shards: list[_Shard] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"HttpxTransport(shards={len(self._shards)}, connections_per_shard={self._per_shard})"

    def _acquire(self) -> _Shard:
        if self._closed:
            raise RuntimeError("transport is closed")
        least: _Shard | None = None
        for shard in self._shards:
            if shard.in_flight < self._per_shard:
                least = shard
                break
            if least is None or shard.in_flight < least.in_flight:
                least = shard
        else:
            if len(self._shards) < self._max_shards:
                least = _Shard(self._new_client())
                self._shards.append(least)
        assert least is not None
        least.in_flight += 1
        return least

    def _new_client(self) -> httpx2.AsyncClient:
        limits = httpx2.Limits(max_connections=self._per_shard, max_keepalive_connections=self._per_shard)
        # Redirects are not followed: an auth header must never reach another host.
        return httpx2.AsyncClient(limits=limits, http2=self._http2, follow_redirects=False, trust_env=False)

    def _request(self, shard: _Shard, endpoint: Endpoint, payload: Mapping[str, Any]) -> httpx2.Request:
        headers = {**endpoint.headers, "content-type": "application/json"}
        return shard.client.build_request(
            "POST", endpoint.url, content=_body(payload), headers=headers, timeout=httpx_timeout(endpoint.timeouts)
        )

    async def send(self, endpoint: Endpoint, payload: Mapping[str, Any]) -> dict[str, Any]:
        shard = self._acquire()
        try:
            with map_httpx_errors(endpoint.url):
                response = await shard.client.send(self._request(shard, endpoint, payload), stream=True)
                try:
                    body = await read_body(response.aiter_bytes())
                finally:
                    await response.aclose()
        finally:
            shard.in_flight -= 1
        raise_for_status(response.status_code, response.headers, body, endpoint)
        return decode_json_body(body)

    async def stream(self, endpoint: Endpoint, payload: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        shard = self._acquire()
        try:
            with map_httpx_errors(endpoint.url):
                response = await shard.client.send(self._request(shard, endpoint, payload), stream=True)
                try:
                    error_body = await read_body(response.aiter_bytes()) if response.status_code >= 300 else b""
                    raise_for_status(response.status_code, response.headers, error_body, endpoint)
                    body = response.aiter_bytes()
                    async for event in decode_sse_json(body, provider=endpoint.provider):
                        yield event
                    await drain(body)
                finally:
                    await response.aclose()
        finally:
            shard.in_flight -= 1

    async def aclose(self) -> None:
        self._closed = True
        shards, self._shards = self._shards, []
        for shard in shards:
            await shard.client.aclose()
