"""The transport's own request path: a request written straight to a connection of
aiohttp's pool, the reply read by aiohttp's protocol. What ``ClientSession`` would have
done for it is done here: a connection the server closed while it idled in the pool is
not sent on; a kept-alive connection is used again, and one the server ends with
``connection: close`` is not; an interim ``100 Continue`` is passed over; a reply with
no length is read to the connection's end; a header that would end early is refused,
nothing sent. And no cookie is kept, as on the httpx transport. Each against a raw
loopback server that records what it was sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import TYPE_CHECKING

import pytest
from llmadapters_aiohttp.transport import AiohttpTransport

from llmadapters.plugin import (
    APITimeoutError,
    BadRequestError,
    ConnectError,
    Endpoint,
    RateLimitError,
    Timeouts,
    TransportError,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

REPLY = json.dumps({"object": "chat.completion", "choices": [{"index": 0, "message": {"content": "ok"}}]}).encode()
PAYLOAD = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def _length(head: bytes) -> int:
    """The content-length a request's head gives (0 when none)."""
    length = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
    return int(length.group(1)) if length else 0


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    """Read one request, its head and its body (by its content-length); the head."""
    head = await reader.readuntil(b"\r\n\r\n")
    await reader.readexactly(_length(head))
    return head


class _Server:
    """Answers each request with ``reply(n)``'s bytes (``n``: the request's number on
    its connection), then closes the connection when ``close`` says so."""

    def __init__(self, reply: Callable[[int], bytes], close: Callable[[int], bool] = lambda n: False) -> None:
        self.reply, self.close = reply, close
        self.connections = 0
        self.heads: list[bytes] = []
        self.closed = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        n = 0
        try:
            while True:
                try:
                    head = await _read_request(reader)
                except asyncio.IncompleteReadError:
                    return
                self.heads.append(head)
                n += 1
                writer.write(self.reply(n))
                await writer.drain()
                if self.close(n):
                    return
        finally:
            writer.close()
            self.closed.set()


@contextlib.asynccontextmanager
async def _serving(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[tuple[AiohttpTransport, Endpoint]]:
    """A transport, and an endpoint on a loopback server whose connections ``handle`` answers."""
    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    transport = AiohttpTransport()
    try:
        yield transport, Endpoint(base_url=f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}/v1")
    finally:
        await transport.aclose()
        listener.close()
        await listener.wait_closed()


def _ok(extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n%scontent-length: %d\r\n\r\n%s" % (
        extra,
        len(REPLY),
        REPLY,
    )


async def _content(transport: AiohttpTransport, endpoint: Endpoint) -> str:
    data, info = await transport.send(endpoint, PAYLOAD)
    assert info.status == 200
    return str(data["choices"][0]["message"]["content"])


async def test_a_pooled_connection_the_server_closed_is_not_sent_on() -> None:
    server = _Server(lambda n: _ok(b"connection: keep-alive\r\n"), close=lambda n: True)
    async with _serving(server.handle) as (transport, endpoint):
        for _ in range(3):
            server.closed.clear()
            assert await _content(transport, endpoint) == "ok"
            await server.closed.wait()  # closed while idle in the pool: the next call opens another
    assert server.connections == 3


async def test_a_kept_alive_connection_is_used_again_and_a_closed_one_is_not() -> None:
    # The server ends every second connection's reply with "connection: close".
    server = _Server(lambda n: _ok(b"connection: close\r\n" if n == 2 else b""), close=lambda n: n == 2)
    async with _serving(server.handle) as (transport, endpoint):
        for _ in range(4):
            assert await _content(transport, endpoint) == "ok"
    assert (len(server.heads), server.connections) == (4, 2)


async def test_an_interim_100_continue_is_passed_over() -> None:
    server = _Server(lambda n: b"HTTP/1.1 100 Continue\r\n\r\n" + _ok())
    async with _serving(server.handle) as (transport, endpoint):
        assert await _content(transport, endpoint) == "ok"
        assert await _content(transport, endpoint) == "ok"  # and the connection is whole for the next
    assert server.connections == 1


async def test_a_reply_without_a_length_is_read_to_the_end_of_its_connection() -> None:
    server = _Server(
        lambda n: b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n" + REPLY, close=lambda n: True
    )
    async with _serving(server.handle) as (transport, endpoint):
        assert await _content(transport, endpoint) == "ok"
        assert await _content(transport, endpoint) == "ok"
    assert server.connections == 2


async def test_no_cookie_is_kept() -> None:
    server = _Server(lambda n: _ok(b"set-cookie: session=abc; Path=/\r\n"))
    async with _serving(server.handle) as (transport, endpoint):
        await _content(transport, endpoint)
        await _content(transport, endpoint)
    assert len(server.heads) == 2
    assert b"cookie" not in server.heads[1].lower().replace(b"set-cookie", b"")


async def test_the_request_carries_aiohttps_headers_and_the_endpoints_over_them() -> None:
    server = _Server(lambda n: _ok())
    async with _serving(server.handle) as (transport, endpoint):
        own = Endpoint(base_url=endpoint.base_url, headers={"User-Agent": "mine/1", "x-extra": "1"}, query={"v": "2"})
        await _content(transport, own)
    lines = server.heads[0].decode().split("\r\n")
    fields = dict(line.lower().split(": ", 1) for line in lines[1:] if line)
    assert lines[0] == "POST /v1/chat/completions?v=2 HTTP/1.1"
    assert fields["host"] == f"127.0.0.1:{endpoint.base_url.split(':')[2].split('/')[0]}"
    assert (fields["user-agent"], fields["x-extra"], fields["accept"]) == ("mine/1", "1", "*/*")
    assert fields["content-length"] == str(len(json.dumps(PAYLOAD, separators=(",", ":"))))
    assert fields["content-type"] == "application/json"
    assert "gzip" in fields["accept-encoding"]
    assert len(fields) == len(lines) - 3  # each header once (the request line, and the blank line twice)


@pytest.mark.parametrize("value", ["a\r\nx-injected: 1", "a\nb", "a\x00b"])
async def test_a_header_holding_a_control_character_is_refused_unsent(value: str) -> None:
    server = _Server(lambda n: _ok())
    async with _serving(server.handle) as (transport, endpoint):
        with pytest.raises(TransportError, match="control character: not sent") as caught:
            await transport.send(Endpoint(base_url=endpoint.base_url, headers={"x-key": value}), PAYLOAD)
        assert value not in str(caught.value)
        assert await _content(transport, endpoint) == "ok"  # the slot was given back
    assert len(server.heads) == 1
    assert b"x-key" not in server.heads[0]


async def test_a_server_that_speaks_first_on_every_connection_costs_a_bounded_number_of_them() -> None:
    # Its reply is on the socket before the request is: each connection looks like one the
    # server is done with. The transport gives up on that after a few, and sends anyway.
    async def eager(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        writer.write(_ok(b"connection: close\r\n"))
        await writer.drain()
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
        writer.close()

    connections: list[asyncio.StreamWriter] = []
    async with _serving(eager) as (transport, endpoint):
        assert await asyncio.wait_for(_content(transport, endpoint), 60) == "ok"
    assert 1 <= len(connections) <= 3


async def test_a_connection_whose_error_reply_came_whole_is_used_again() -> None:
    # A stream refused with a 429 raises inside the exchange: its connection goes back to
    # the pool all the same (under a storm of 429s, a new connection per 429 would cost a
    # handshake each), and the next call is answered on it.
    error = b'{"error": {"message": "slow down", "type": "rate_limit_error"}}'
    refused = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
    server = _Server(lambda n: refused % (len(error), error) if n == 1 else _ok())
    async with _serving(server.handle) as (transport, endpoint):
        with pytest.raises(RateLimitError):
            async for _ in transport.stream(endpoint, {**PAYLOAD, "stream": True}):
                pass
        assert await _content(transport, endpoint) == "ok"
    assert (len(server.heads), server.connections) == (2, 1)


async def test_a_connection_left_before_its_reply_came_is_not_used_again() -> None:
    # Cancelled while the reply is still to come, the connection would hand that reply to
    # the next call: it is closed instead.
    replies = asyncio.Queue[None]()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        while True:
            try:
                await _read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()
                return
            asked.set()
            await replies.get()
            writer.write(_ok())

    connections: list[asyncio.StreamWriter] = []
    asked = asyncio.Event()
    async with _serving(slow) as (transport, endpoint):
        call = asyncio.ensure_future(transport.send(endpoint, PAYLOAD))
        await asked.wait()  # the request is in; its reply is held back
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        replies.put_nowait(None)  # the first call's reply, late
        replies.put_nowait(None)
        assert await _content(transport, endpoint) == "ok"
    assert len(connections) == 2


async def test_a_101_reply_is_an_error_at_once() -> None:
    # Not an interim reply to pass over: after it the connection is no longer HTTP.
    server = _Server(lambda n: b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n")
    async with _serving(server.handle) as (transport, endpoint):
        with pytest.raises(TransportError, match="unexpected HTTP status 101"):
            await asyncio.wait_for(transport.send(endpoint, PAYLOAD), 60)


async def test_the_read_timeout_holds_after_an_interim_reply() -> None:
    # aiohttp drops its read timer when a 1xx reply comes; a server that sends nothing
    # after it would hold the call for ever.
    server = _Server(lambda n: b"HTTP/1.1 100 Continue\r\n\r\n")
    async with _serving(server.handle) as (transport, endpoint):
        stalled = Endpoint(base_url=endpoint.base_url, timeouts=Timeouts(read=0.2))
        with pytest.raises(APITimeoutError, match="read timeout"):
            await asyncio.wait_for(transport.send(stalled, PAYLOAD), 60)


async def test_a_reply_before_a_large_body_is_sent_leaves_no_connection_for_the_next_call() -> None:
    # The server refuses an 8 MB body after its head, reading none of it, and keeps the
    # connection: the megabytes still to send must not go ahead of the next request.
    too_large = b'{"error": {"message": "too large"}}'
    refusal = b"HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if b"content-length: 8" in head.lower():  # the 8 MB one: answered, never read
            writer.write(refusal % (len(too_large), too_large))
            await closing.wait()
        else:
            await reader.readexactly(_length(head))
            writer.write(_ok())
        await writer.drain()
        writer.close()

    closing = asyncio.Event()
    async with _serving(refuse) as (transport, endpoint):
        try:
            big = {**PAYLOAD, "pad": "x" * 8_000_000}
            with pytest.raises(BadRequestError):
                await transport.send(Endpoint(base_url=endpoint.base_url, timeouts=Timeouts(write=None)), big)
            quick = Endpoint(base_url=endpoint.base_url, timeouts=Timeouts(read=30))
            assert await asyncio.wait_for(_content(transport, quick), 60) == "ok"
        finally:
            closing.set()


async def test_a_header_byte_decoded_as_a_surrogate_goes_as_it_came() -> None:
    # os.environ decodes a byte that is not UTF-8 as a lone surrogate: sent as that byte,
    # as aiohttp sends it.
    server = _Server(lambda n: _ok())
    async with _serving(server.handle) as (transport, endpoint):
        assert await _content(transport, Endpoint(base_url=endpoint.base_url, headers={"x-title": "caf\udce9"})) == "ok"
    assert b"x-title: caf\xe9\r\n" in server.heads[0]


@pytest.mark.parametrize(
    "base_url", ["http://127.0.0.1:99999/v1", "http://[::1/v1", "ftp://127.0.0.1/v1", "http:///v1"]
)
async def test_a_url_that_cannot_be_sent_to_is_a_connect_error(base_url: str) -> None:
    transport = AiohttpTransport()
    try:
        with pytest.raises(ConnectError):
            await transport.send(Endpoint(base_url=base_url), PAYLOAD)
    finally:
        await transport.aclose()
