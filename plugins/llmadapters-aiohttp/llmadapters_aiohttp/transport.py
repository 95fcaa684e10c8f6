"""`AiohttpTransport`: the Transport protocol on one ``aiohttp.ClientSession``.

aiohttp has no write timeout, and starts its read timeout only once the request body is
sent, so a server that stops reading an upload would hold the call forever. A body
larger than one write is therefore handed to aiohttp in 64 KiB chunks, and the call
fails with `APITimeoutError` when the next chunk is not taken within the write timeout.
(A smaller body goes to the socket's buffer in one write, which never waits.)
"""

from __future__ import annotations

import asyncio
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import aiohttp
import yarl

from llmadapters.plugin import (
    AIOHTTP_ERRORS,
    BUILTIN_ERRORS,
    DEFAULT_MAX_CONNECTIONS,
    KEEPALIVE_EXPIRY,
    MAX_BODY_BYTES,
    ErrorMap,
    NetworkOptions,
    encode_json,
    json_reply,
    read_body,
    require,
    resend_if_closed,
    stream_reply,
    timeout_error,
)

from .protocol import use_lean_protocol

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping

    from llmadapters.plugin import APITimeoutError, Endpoint, ResponseInfo, Timeouts

__all__ = ["AiohttpTransport"]

_ERRORS = ErrorMap(AIOHTTP_ERRORS, BUILTIN_ERRORS)

# aiohttp waits for the socket to drain once more than this is buffered.
_CHUNK = 64 * 1024


class _Upload:
    """A large body, fed to aiohttp chunk by chunk; cancels the calling task (and says
    so) when a chunk is not taken within ``seconds``."""

    def __init__(self, body: bytes, seconds: float) -> None:
        self.body = body
        self.seconds = seconds
        self.expired = False
        self._task = asyncio.current_task()
        self._timer: asyncio.TimerHandle | None = None

    def _expire(self) -> None:
        self.expired = True
        if self._task is not None:
            self._task.cancel()

    async def chunks(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        for start in range(0, len(self.body), _CHUNK):
            # Taken again only once aiohttp has written the last chunk out.
            self.stop()
            self._timer = loop.call_later(self.seconds, self._expire)
            yield self.body[start : start + _CHUNK]
        self.stop()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def timed_out(self, url: str) -> APITimeoutError:
        """The error of an expired upload, the task's cancellation taken back."""
        uncancel = getattr(self._task, "uncancel", None)  # Python 3.11+
        if uncancel is not None:
            uncancel()
        return timeout_error("write", url, self.seconds)


@lru_cache(maxsize=64)
def _timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
    # The pool wait is bounded by the transport's own slots, not by aiohttp's ``connect``
    # (which would add it to the connect time).
    return aiohttp.ClientTimeout(total=None, connect=None, sock_connect=timeouts.connect, sock_read=timeouts.read)


class AiohttpTransport:
    """Args:
    options: the route's proxy (http://, https:// or, with aiohttp-socks, socks5://),
        TLS and connection settings; ``max_connections`` defaults to
        ``DEFAULT_MAX_CONNECTIONS``.
    """

    def __init__(self, options: NetworkOptions | None = None) -> None:
        self._options = options or NetworkOptions()
        self._max_connections = self._options.max_connections or DEFAULT_MAX_CONNECTIONS
        # One slot per connection: a call waits here, for at most its pool timeout,
        # instead of in aiohttp's connector.
        self._slots = asyncio.Semaphore(self._max_connections)
        self._proxy: yarl.URL | None = None
        proxy = self._options.proxy
        if proxy is not None and not proxy.startswith("socks"):
            self._proxy = yarl.URL(proxy)  # aiohttp takes the credentials from the URL
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"AiohttpTransport(max_connections={self._max_connections})"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            options = self._options
            settings: dict[str, Any] = {
                "limit": self._max_connections,
                "limit_per_host": 0,
                "ssl": True if options.ssl is None else options.ssl,
                "keepalive_timeout": options.keepalive_expiry or KEEPALIVE_EXPIRY,
            }
            connector: aiohttp.TCPConnector
            if options.proxy is not None and options.proxy.startswith("socks"):
                require("aiohttp_socks", "llmadapters-aiohttp[socks]", "a socks5:// proxy with the aiohttp transport")
                from aiohttp_socks import ProxyConnector

                # The proxy resolves host names, for socks5:// as for socks5h:// (as httpx2
                # does), and aiohttp-socks knows only the former scheme.
                url = "socks5://" + options.proxy.split("://", 1)[1]
                connector = ProxyConnector.from_url(url, rdns=True, **settings)
            else:
                connector = aiohttp.TCPConnector(**settings)
            use_lean_protocol(connector)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    async def _slot(self, endpoint: Endpoint) -> None:
        pool = endpoint.timeouts.pool
        if not self._slots.locked() or pool is None:
            await self._slots.acquire()
            return
        try:
            await asyncio.wait_for(self._slots.acquire(), pool)
        except asyncio.TimeoutError:
            raise timeout_error("pool", endpoint.url, pool) from None

    def _post(self, endpoint: Endpoint, body: bytes, upload: _Upload | None) -> Awaitable[aiohttp.ClientResponse]:
        headers = {**endpoint.headers, "content-type": "application/json", "content-length": str(len(body))}
        return self._client().post(
            endpoint.url,
            data=body if upload is None else upload.chunks(),
            headers=headers,
            timeout=_timeout(endpoint.timeouts),
            allow_redirects=False,
            proxy=self._proxy,
        )

    @staticmethod
    def _upload(endpoint: Endpoint, body: bytes) -> _Upload | None:
        """A watch on the upload, for a body larger than one write under a write timeout."""
        write = endpoint.timeouts.write
        return _Upload(body, write) if write is not None and len(body) > _CHUNK else None

    @staticmethod
    async def _read(response: aiohttp.ClientResponse) -> bytes:
        """The whole body: in one read when its declared size is under the cap."""
        size = response.content_length
        if size is not None and size <= MAX_BODY_BYTES and not response.headers.get("content-encoding"):
            return await response.read()
        return await read_body(response.content.iter_any())

    async def send(self, endpoint: Endpoint, payload: Mapping[str, Any]) -> tuple[dict[str, Any], ResponseInfo]:
        async with _Exchange(self, endpoint, payload) as response:
            reply = await self._read(response)
        return json_reply(response.status, response.headers, reply, endpoint)

    async def stream(
        self, endpoint: Endpoint, payload: Mapping[str, Any]
    ) -> AsyncGenerator[ResponseInfo | dict[str, Any], None]:
        async with _Exchange(self, endpoint, payload) as response:
            chunks: AsyncIterator[bytes] = response.content.iter_any()
            async for item in stream_reply(response.status, response.headers, chunks, endpoint):
                yield item

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


class _Exchange:
    """One request, as ``async with``: a connection slot, the upload watch, the response
    (released on the way out), and aiohttp's errors (and an expired upload) raised as
    ours. A class, not a generator context manager: it is on every call's path."""

    __slots__ = ("_body", "_endpoint", "_response", "_transport", "_upload")

    def __init__(self, transport: AiohttpTransport, endpoint: Endpoint, payload: Mapping[str, Any]) -> None:
        self._transport = transport
        self._endpoint = endpoint
        self._body = encode_json(payload)
        self._upload = transport._upload(endpoint, self._body)
        self._response: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> aiohttp.ClientResponse:
        await self._transport._slot(self._endpoint)
        try:
            self._response = await resend_if_closed(self._post)
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)  # raises ours, when it maps
            raise
        return self._response

    def _post(self) -> Awaitable[aiohttp.ClientResponse]:
        # A method, not a closure in __aenter__: its variables would be cells made on
        # every call, and held while it waits.
        return self._transport._post(self._endpoint, self._body, self._upload)

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        try:
            if self._response is not None:
                if exc is None:
                    await self._response.__aexit__(None, None, None)  # release, once the upload is done
                else:
                    self._response.release()
        finally:
            self._transport._slots.release()
            if self._upload is not None:
                self._upload.stop()
        if isinstance(exc, Exception) and _ERRORS.rule(exc) is not None:
            raise _ERRORS.error(exc, self._endpoint) from exc
        if isinstance(exc, asyncio.CancelledError) and self._upload is not None and self._upload.expired:
            raise self._upload.timed_out(self._endpoint.url) from None
