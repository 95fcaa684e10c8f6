"""`AiohttpTransport`: the Transport protocol on one ``aiohttp.ClientSession``."""

from __future__ import annotations

import json
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import aiohttp

from llmadapters.transports.base import (
    Endpoint,
    Timeouts,
    classify_transport_error,
    decode_json_body,
    decode_sse_json,
    drain,
    raise_for_status,
    read_body,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Iterator, Mapping

__all__ = ["AiohttpTransport"]


@contextmanager
def _map_errors(url: str) -> Iterator[None]:
    try:
        yield
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise classify_transport_error(exc, url) from exc


@lru_cache(maxsize=64)
def _timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
    pool = None if timeouts.pool is None or timeouts.connect is None else timeouts.pool + timeouts.connect
    return aiohttp.ClientTimeout(total=None, connect=pool, sock_connect=timeouts.connect, sock_read=timeouts.read)


class AiohttpTransport:
    """Args:
    max_connections: connections open at most (aiohttp's ``TCPConnector(limit=...)``).
    """

    def __init__(self, *, max_connections: int = 1024) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"AiohttpTransport(max_connections={self._max_connections})"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    def _post(self, endpoint: Endpoint, payload: Mapping[str, Any]) -> Any:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {**endpoint.headers, "content-type": "application/json"}
        return self._client().post(
            endpoint.url, data=body, headers=headers, timeout=_timeout(endpoint.timeouts), allow_redirects=False
        )

    async def send(self, endpoint: Endpoint, payload: Mapping[str, Any]) -> dict[str, Any]:
        with _map_errors(endpoint.url):
            async with self._post(endpoint, payload) as response:
                body = await read_body(response.content.iter_any())
        raise_for_status(response.status, response.headers, body, endpoint)
        return decode_json_body(body)

    async def stream(self, endpoint: Endpoint, payload: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        with _map_errors(endpoint.url):
            response = await self._post(endpoint, payload)
            try:
                error_body = await read_body(response.content.iter_any()) if response.status >= 300 else b""
                raise_for_status(response.status, response.headers, error_body, endpoint)
                chunks = response.content.iter_any()
                async for event in decode_sse_json(chunks, provider=endpoint.provider):
                    yield event
                await drain(chunks)
            finally:
                response.release()

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
