"""`AiohttpTransport`: the Transport protocol on aiohttp's connection pool and parser.

A request goes straight to a connection of the session's connector: the transport
writes the request line, the headers aiohttp would add (``Host``, ``Accept``,
``Accept-Encoding``, ``User-Agent``), the endpoint's, ``Content-Type``,
``Content-Length`` and the body in one write, and reads the reply through aiohttp's
own protocol and C parser (which inflate it and apply the read timeout), then hands the
connection back. The layers above the pool, ``ClientSession.request`` with its
``ClientRequest`` and ``ClientResponse`` (URL building, a cookie jar, tracing, redirects,
a task that writes the body), which an API call has no use for, cost over a third of a
call's CPU: measured at 256 calls in flight, 110 µs a call through them, 70 µs without.
(The ``httpx`` transport skips ``httpx2.AsyncClient`` the same way.) A request through a
proxy, or with a body larger than one 64 KiB write, goes through ``ClientSession.post``,
which writes it as the socket takes it and starts the read timeout once it is sent.
Either way no cookie is kept, as on the ``httpx`` transport.

aiohttp has no write timeout, and starts its read timeout only once the request body is
sent, so a server that stops reading an upload would hold the call forever. A body
larger than one write is therefore handed to aiohttp in 64 KiB chunks, and the call
fails with `APITimeoutError` when the next chunk is not taken within the write timeout.
(A smaller body goes to the socket's buffer in one write, which never waits.)
"""

from __future__ import annotations

import asyncio
import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeAlias

import aiohttp
import yarl
from aiohttp.client_reqrep import ClientRequest

from llmadapters.plugin import (
    AIOHTTP_ERRORS,
    BUILTIN_ERRORS,
    DEFAULT_MAX_CONNECTIONS,
    KEEPALIVE_EXPIRY,
    MAX_BODY_BYTES,
    ErrorMap,
    NetworkOptions,
    TransportError,
    encode_json,
    json_reply,
    read_body,
    require,
    resend_if_closed,
    socket_readable,
    stream_reply,
    timeout_error,
)

from .protocol import use_lean_protocol

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping

    from aiohttp.connector import Connection
    from multidict import CIMultiDictProxy

    from llmadapters.plugin import APITimeoutError, Endpoint, ResponseInfo, Timeouts

__all__ = ["AiohttpTransport"]

_ERRORS = ErrorMap(AIOHTTP_ERRORS, BUILTIN_ERRORS)

# aiohttp waits for the socket to drain once more than this is buffered.
_CHUNK = 64 * 1024
# What ClientSession reads a reply with, by default.
_READ_BUFSIZE = 2**16
_MAX_LINE = 8190
# The headers aiohttp adds to each request it sends.
_LIBRARY_HEADERS = ("Host", "Accept", "Accept-Encoding", "User-Agent")
# Connections taken for one request, when the pool's are found closed by the server.
_CONNECTION_TRIES = 3
# The most URLs whose request line and headers are kept (a query per call would grow it).
_MAX_ORIGINS = 256
# Control characters, but a tab, are refused in a header: one would end it early.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

# The status, headers and body of a reply whose head has come.
_Head: TypeAlias = "tuple[int, CIMultiDictProxy[str], aiohttp.StreamReader]"


class _Origin:
    """What every request to one URL shares: an aiohttp ``ClientRequest``, never sent,
    by which the connector finds or opens a connection (host, port, TLS); the request
    line; and the headers aiohttp adds to a request, as it adds them."""

    __slots__ = ("headers", "line", "request")

    def __init__(self, url: str) -> None:
        try:
            parsed = yarl.URL(url)
        except ValueError as exc:  # (a port out of range, an unclosed "[")
            raise aiohttp.InvalidURL(url) from exc
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise aiohttp.InvalidURL(url)
        self.request = ClientRequest("POST", parsed, loop=asyncio.get_running_loop(), ssl=True)
        self.line = f"POST {parsed.raw_path_qs} HTTP/1.1"
        self.headers = {
            name.lower(): value for name in _LIBRARY_HEADERS if (value := self.request.headers.get(name)) is not None
        }

    def head(self, headers: Mapping[str, str], length: int) -> bytes:
        """The request's line and headers: aiohttp's, then ``headers`` over them."""
        fields = {**self.headers, **{name.lower(): value for name, value in headers.items()}}
        fields["content-type"] = "application/json"
        fields["content-length"] = str(length)
        lines = [f"{name}: {value}" for name, value in fields.items()]
        if _FORBIDDEN.search("".join(lines)) is not None:  # (the value may be a key: not quoted)
            raise TransportError(f"a request header holds a control character: not sent to {self.request.url}")
        lines.insert(0, self.line)
        lines.append("\r\n")
        try:
            # (As aiohttp encodes: a byte that os.environ decoded as a surrogate goes as it was.)
            return "\r\n".join(lines).encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            pass  # (raised below, apart from this error, whose arguments hold every header)
        raise TransportError(f"a request header cannot be encoded: not sent to {self.request.url}")


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
        self._direct = proxy is None  # requests go straight to the pool's connections
        self._origins: dict[str, _Origin] = {}
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
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    def _origin(self, url: str) -> _Origin:
        origin = self._origins.get(url)
        if origin is None:
            if len(self._origins) >= _MAX_ORIGINS:
                self._origins.clear()
            origin = self._origins[url] = _Origin(url)
        return origin

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
    async def _read(headers: CIMultiDictProxy[str], content: aiohttp.StreamReader) -> bytes:
        """The whole body: in one read when its declared size is under the cap."""
        size = headers.get("content-length", "")
        if size.isdigit() and int(size) <= MAX_BODY_BYTES and not headers.get("content-encoding"):
            return await content.read()
        return await read_body(content.iter_any())

    async def send(self, endpoint: Endpoint, payload: Mapping[str, Any]) -> tuple[dict[str, Any], ResponseInfo]:
        async with _Exchange(self, endpoint, payload) as (status, headers, content):
            reply = await self._read(headers, content)
        return json_reply(status, headers, reply, endpoint)

    async def stream(
        self, endpoint: Endpoint, payload: Mapping[str, Any]
    ) -> AsyncGenerator[ResponseInfo | dict[str, Any], None]:
        async with _Exchange(self, endpoint, payload) as (status, headers, content):
            chunks: AsyncIterator[bytes] = content.iter_any()
            async for item in stream_reply(status, headers, chunks, endpoint):
                yield item

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


class _Exchange:
    """One request, as ``async with``: a connection slot, the upload watch, the reply's
    head (its connection released, or closed unless the body was read whole, on the way
    out), and aiohttp's errors (and an expired upload) raised as ours. A class, not a
    generator context manager: it is on every call's path."""

    __slots__ = ("_body", "_connection", "_content", "_endpoint", "_response", "_transport", "_upload")

    def __init__(self, transport: AiohttpTransport, endpoint: Endpoint, payload: Mapping[str, Any]) -> None:
        self._transport = transport
        self._endpoint = endpoint
        self._body = encode_json(payload)
        self._upload = transport._upload(endpoint, self._body)
        self._response: aiohttp.ClientResponse | None = None
        self._connection: Connection | None = None
        self._content: aiohttp.StreamReader | None = None

    async def __aenter__(self) -> _Head:
        await self._transport._slot(self._endpoint)
        try:
            if self._transport._direct and len(self._body) <= _CHUNK:
                return await self._send()
            self._response = response = await resend_if_closed(self._post)
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)  # raises ours, when it maps
            raise
        return response.status, response.headers, response.content

    async def _send(self) -> _Head:
        """Write the request on a connection of the pool, and read the reply's head."""
        transport, endpoint = self._transport, self._endpoint
        origin = transport._origin(endpoint.url)
        request = origin.head(endpoint.headers, len(self._body)) + self._body
        timeout = _timeout(endpoint.timeouts)
        connector = transport._client().connector
        assert connector is not None
        for tries_left in reversed(range(_CONNECTION_TRIES)):
            try:
                connection = await connector.connect(origin.request, [], timeout)
            except asyncio.TimeoutError as exc:  # (as ClientSession words it)
                raise aiohttp.ConnectionTimeoutError(f"Connection timeout to host {origin.request.url}") from exc
            self._connection = connection
            protocol, socket = connection.protocol, connection.transport
            if (
                protocol is not None
                and socket is not None
                and not socket.is_closing()
                and (not tries_left or not socket_readable(socket))
            ):
                break
            # The server closed the pooled connection (or sent on it what it should not
            # have: the last try is sent on anyway) before a byte of ours: another.
            connection.close()
            self._connection = None
        else:
            raise aiohttp.ServerDisconnectedError("each connection was closed before the request was sent")
        protocol.set_response_params(
            read_until_eof=True,
            read_timeout=timeout.sock_read,
            read_bufsize=_READ_BUFSIZE,
            max_line_size=_MAX_LINE,
            max_field_size=_MAX_LINE,
        )
        socket.write(request)
        while True:
            protocol.start_timeout()  # (aiohttp drops it on an interim reply)
            message, content = await protocol.read()
            if not 100 <= message.code < 200 or message.code == 101:  # (a 1xx but 101 precedes the reply)
                self._content = content
                return message.code, message.headers, content

    def _post(self) -> Awaitable[aiohttp.ClientResponse]:
        # A method, not a closure in __aenter__: its variables would be cells made on
        # every call, and held while it waits.
        return self._transport._post(self._endpoint, self._body, self._upload)

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        try:
            if self._connection is not None:
                # Back to the pool once the whole reply has come, whatever was made of it
                # (an error status's body read, a stream's end drained), and the whole
                # request has gone (a server may answer before reading it); else closed.
                content, socket = self._content, self._connection.transport
                if content is not None and content.is_eof() and socket and not socket.get_write_buffer_size():
                    self._connection.release()
                else:
                    self._connection.close()
            elif self._response is not None:
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
