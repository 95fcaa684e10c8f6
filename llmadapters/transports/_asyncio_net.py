"""A network backend for httpcore2 on asyncio's own transports and protocols.

httpcore2 (under httpx2) moves bytes through a pluggable network backend; its default
on asyncio is anyio's socket streams, which open a cancel scope (``anyio.fail_after``)
around every read and write and look up the running async library for each: measured
under the batch engine, about a third of the ``httpx`` transport's CPU per call. This
backend does the same work the way aiohttp does: a protocol that collects what
``data_received`` hands it, a read that waits on one future with one timer for its
timeout, writes that only wait when the transport asks them to (flow control), and an
idle connection's "readable" (the server closed it, or sent what it should not have)
told by the protocol before a ``poll`` system call is made for it.

It raises httpcore2's own exceptions, as anyio's backend does (``ConnectError``,
``ConnectTimeout``, ``ReadError``, ``ReadTimeout``, ``WriteError``,
``WriteTimeout``), so that httpx2 maps them as ever.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Any, cast

import httpcore2

from ._kernel import socket_readable

if TYPE_CHECKING:
    import socket
    import ssl
    from collections.abc import Iterable

__all__ = ["AsyncioBackend"]

_PAUSE_AT = 1 << 20  # bytes received and not yet read, at which the socket is no longer read ...
_RESUME_AT = 1 << 18  # ... until they fall to this
_GATHER_UP_TO = 1 << 16  # bytes written and held back to be sent with the next write
_HAPPY_EYEBALLS_DELAY = 0.25  # as anyio's connect_tcp: the next address is tried after this


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


async def _wait(waiter: asyncio.Future[None], timeout: float | None, expired: type[Exception], doing: str) -> None:
    """Wait for ``waiter``; ``expired`` after ``timeout`` seconds (None: none)."""
    if timeout is not None and timeout <= 0:
        raise expired(f"timed out {doing} the server")
    timer = None if timeout is None else asyncio.get_running_loop().call_later(timeout, _expire, waiter)
    try:
        await waiter
    except TimeoutError:
        raise expired(f"timed out {doing} the server") from None
    finally:
        if timer is not None:
            timer.cancel()


class _Protocol(asyncio.Protocol):
    """Collects one connection's bytes for `_Stream.read`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.closed = False  # the peer closed its end, or the connection is lost
        self.error: BaseException | None = None  # why it was lost, when not cleanly
        self.reader: asyncio.Future[None] | None = None  # a read waiting for bytes
        self.writer: asyncio.Future[None] | None = None  # a write waiting for room
        self.paused = False  # writing, by the transport's flow control

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # (uvloop's are not subclasses)

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > _PAUSE_AT and self.transport is not None:
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake_reader()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error = exc
        self._wake_reader()
        self._wake_writer()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake_writer()

    def _wake_reader(self) -> None:
        reader, self.reader = self.reader, None
        _wake(reader)

    def _wake_writer(self) -> None:
        writer, self.writer = self.writer, None
        _wake(writer)

    def take(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` of what was received (something must be)."""
        chunk = self.chunks.popleft()
        if len(chunk) > max_bytes:
            self.chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        self.buffered -= len(chunk)
        transport = self.transport
        if self.buffered <= _RESUME_AT and transport is not None and not self.closed and not transport.is_reading():
            transport.resume_reading()
        return chunk


class _Stream(httpcore2.AsyncNetworkStream):
    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._unsent: list[bytes] = []
        self._unsent_bytes = 0

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._send()
        protocol = self._protocol
        if not protocol.chunks and not protocol.closed:
            waiter = protocol.reader = asyncio.get_running_loop().create_future()
            await _wait(waiter, timeout, httpcore2.ReadTimeout, "reading from")
        if protocol.chunks:
            return protocol.take(max_bytes)
        if protocol.error is not None:
            raise httpcore2.ReadError(str(protocol.error) or type(protocol.error).__name__) from protocol.error
        return b""  # the server closed the connection

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        protocol = self._protocol
        if self._transport.is_closing():
            raise httpcore2.WriteError(str(protocol.error) if protocol.error else "the connection is closed")
        # A request's head and body come as two writes, one after the other: sent
        # together, in one system call, when the first read (or the loop's next turn) comes.
        if not self._unsent:
            asyncio.get_running_loop().call_soon(self._send)
        self._unsent.append(buffer)
        self._unsent_bytes += len(buffer)
        if self._unsent_bytes < _GATHER_UP_TO:
            return
        self._send()
        if protocol.paused:
            waiter = protocol.writer = asyncio.get_running_loop().create_future()
            await _wait(waiter, timeout, httpcore2.WriteTimeout, "writing to")
            if protocol.error is not None:
                raise httpcore2.WriteError(str(protocol.error)) from protocol.error

    def _send(self) -> None:
        if self._unsent:
            data = self._unsent[0] if len(self._unsent) == 1 else b"".join(self._unsent)
            self._unsent.clear()
            self._unsent_bytes = 0
            if not self._transport.is_closing():
                self._transport.write(data)

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(
                self._transport,
                self._protocol,
                ssl_context,
                server_hostname=server_hostname,
                ssl_handshake_timeout=timeout,
            )
        except TimeoutError as exc:
            self._transport.close()
            raise httpcore2.ConnectTimeout(str(exc) or "timed out in the TLS handshake") from exc
        except (OSError, EOFError) as exc:  # ssl.SSLError is an OSError
            self._transport.close()
            raise httpcore2.ConnectError(str(exc) or type(exc).__name__) from exc
        if transport is None:  # the connection was lost in the handshake
            raise httpcore2.ConnectError("the connection closed in the TLS handshake")
        self._protocol.transport = transport  # (its flow control is the TLS transport's now)
        return _Stream(transport, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # asked of an idle pooled connection: is it still usable?
            return bool(self._protocol.chunks) or self._protocol.closed or socket_readable(self._transport)
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info in ("ssl_object", "socket"):
            return self._transport.get_extra_info(info)
        return None


class AsyncioBackend(httpcore2.AsyncNetworkBackend):
    """httpcore2's network I/O on asyncio transports (see the module's docstring)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local_addr = (local_address, 0) if local_address else None
        if isinstance(loop, asyncio.BaseEventLoop):
            connecting = loop.create_connection(
                _Protocol, host, port, local_addr=local_addr, happy_eyeballs_delay=_HAPPY_EYEBALLS_DELAY
            )
        else:  # uvloop's has no happy eyeballs: it tries each address in turn
            connecting = loop.create_connection(_Protocol, host, port, local_addr=local_addr)
        return await self._connected(connecting, timeout, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        return await self._connected(loop.create_unix_connection(_Protocol, path), timeout, socket_options)

    @staticmethod
    async def _connected(
        connecting: Any, timeout: float | None, socket_options: Iterable[httpcore2.SOCKET_OPTION] | None
    ) -> httpcore2.AsyncNetworkStream:
        try:
            transport, protocol = await asyncio.wait_for(connecting, timeout)
        except TimeoutError as exc:
            raise httpcore2.ConnectTimeout(str(exc) or "timed out connecting") from exc
        except OSError as exc:  # socket.gaierror, ConnectionRefusedError, ...
            raise httpcore2.ConnectError(str(exc) or type(exc).__name__) from exc
        sock: socket.socket | None = transport.get_extra_info("socket")
        if sock is not None:
            for option in socket_options or ():
                sock.setsockopt(*option)
        return _Stream(transport, protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
