"""The ``httpx`` transport below httpx2's request and response objects: its network
backend (asyncio transports under httpcore2), on both event loops the library meets,
asyncio's own and uvloop (which the command line runs on), and the
compressed bodies it inflates itself. Over real loopback connections: plain and TLS,
through a CONNECT tunnel, bodies larger than the socket buffers both ways, a pooled
connection the server closed, a server that stops answering, gzip and deflate."""

from __future__ import annotations

import asyncio
import json
import ssl as ssl_module
import zlib
from typing import TYPE_CHECKING, Any

import pytest
import uvloop

import llmadapters as la
from llmadapters.testing import FakeServer
from llmadapters.transports._asyncio_net import AsyncioBackend
from llmadapters.transports.base import Endpoint, Timeouts
from llmadapters.transports.httpx import HttpxTransport
from llmadapters.transports.network import NetworkOptions

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from tests.netservers import LoopbackCA, TinyProxy

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, None]], None]:
    """Runs a test's body on a new loop of the kind the test is parametrised with."""

    def run_on_loop(body: Coroutine[Any, Any, None]) -> None:
        loop = LOOPS[request.param]()
        try:
            loop.run_until_complete(body)
        finally:
            loop.close()

    return run_on_loop


def _payload(text: str = "hi", **params: Any) -> dict[str, Any]:
    return {"model": "echo", "messages": [{"role": "user", "content": text}], **params}


async def _ask(transport: HttpxTransport, endpoint: Endpoint, text: str = "hi") -> str:
    body, _ = await transport.send(endpoint, _payload(text))
    content = body["choices"][0]["message"]["content"]
    assert isinstance(content, str)
    return content


async def _stream(transport: HttpxTransport, endpoint: Endpoint, text: str = "hi") -> str:
    parts = [
        item["choices"][0]["delta"].get("content") or ""
        async for item in transport.stream(endpoint, _payload(text, stream=True))
        if isinstance(item, dict) and item.get("choices")
    ]
    return "".join(parts)


def test_the_transport_moves_its_bytes_on_asyncio_transports() -> None:
    async def body() -> None:
        transport = HttpxTransport()
        async with FakeServer() as server:
            assert await _ask(transport, Endpoint(base_url=server.base_url)) == "hi"
            (shard,) = transport._shards
            assert shard.core is shard.pool._pool  # httpx2 builds the pool, the transport sends to it
            assert isinstance(shard.core._network_backend, AsyncioBackend)
        await transport.aclose()

    asyncio.run(body())


def test_plain_and_tls_and_through_a_tunnel(
    run: Callable[[Coroutine[Any, Any, None]], None], test_ca: LoopbackCA, tinyproxy: TinyProxy
) -> None:
    async def body() -> None:
        async with FakeServer() as plain, FakeServer(ssl=test_ca.server_ssl_context()) as tls:
            ssl = test_ca.client_ssl_context()
            for options, server in [
                (NetworkOptions(), plain),
                (NetworkOptions(ssl=ssl), tls),
                (NetworkOptions(ssl=ssl, proxy=tinyproxy.url), tls),
            ]:
                transport = HttpxTransport(options)
                endpoint = Endpoint(base_url=server.base_url)
                try:
                    assert await _ask(transport, endpoint, "one") == "one"
                    assert await _stream(transport, endpoint, "two") == "two"
                    assert await _ask(transport, endpoint, "three") == "three"  # on a pooled connection
                finally:
                    await transport.aclose()
            unverified = HttpxTransport(NetworkOptions(ssl=ssl_module.SSLContext(ssl_module.PROTOCOL_TLS_CLIENT)))
            try:
                with pytest.raises(la.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
                    await _ask(unverified, Endpoint(base_url=tls.base_url))  # it verifies, and knows no CA
            finally:
                await unverified.aclose()

    run(body())


def test_bodies_larger_than_the_socket_buffers_pass_whole(run: Callable[[Coroutine[Any, Any, None]], None]) -> None:
    # 6 MB out and back: the write waits for the socket to drain, and the read pauses
    # the socket while more than a megabyte is unread.
    text = "".join(f"{i:07d} " for i in range(750_000))

    async def body() -> None:
        transport = HttpxTransport()
        async with FakeServer() as server:
            endpoint = Endpoint(base_url=server.base_url)
            try:
                assert await _ask(transport, endpoint, text) == text
                assert await _ask(transport, endpoint, "small") == "small"  # and the connection goes on
            finally:
                await transport.aclose()

    run(body())


class _ClosingServer:
    """Answers each connection's first request with a keep-alive reply, then closes it,
    as a server whose idle timeout is shorter than the client's does."""

    REPLY = b'{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}]}'

    def __init__(self) -> None:
        self.connections = 0
        self.closed = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: keep-alive\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(self.REPLY), self.REPLY)
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        self.closed.set()


def test_a_pooled_connection_the_server_closed_is_not_sent_on(run: Callable[[Coroutine[Any, Any, None]], None]) -> None:
    async def body() -> None:
        closing = _ClosingServer()
        server = await asyncio.start_server(closing.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport = HttpxTransport()
        endpoint = Endpoint(base_url=f"http://127.0.0.1:{port}/v1")
        try:
            for _ in range(3):
                closing.closed.clear()
                assert await _ask(transport, endpoint) == "ok"
                await closing.closed.wait()  # closed while idle in the pool, the next call must not use it
            assert closing.connections == 3
        finally:
            await transport.aclose()
            server.close()
            await server.wait_closed()

    run(body())


def test_a_server_that_stops_answering_is_a_read_timeout(run: Callable[[Coroutine[Any, Any, None]], None]) -> None:
    async def body() -> None:
        async with FakeServer() as server:
            transport = HttpxTransport()
            endpoint = Endpoint(base_url=server.base_url, headers={"x-fake-stall-s": "5"}, timeouts=Timeouts(read=0.2))
            try:
                with pytest.raises(la.APITimeoutError, match=r"^read timeout"):
                    await transport.send(endpoint, _payload(model="stall"))
                assert await _ask(transport, Endpoint(base_url=server.base_url)) == "hi"  # and the pool goes on
            finally:
                await transport.aclose()

    run(body())


def test_a_reader_that_falls_behind_holds_the_sender_back(run: Callable[[Coroutine[Any, Any, None]], None]) -> None:
    # 32 MiB, more than the kernel's socket buffers hold: while the stream is not read,
    # the socket is not read either, so the sender cannot finish.
    data = bytes(range(256)) * (1 << 17)

    async def body() -> None:
        sent = asyncio.Event()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(data)
            await writer.drain()
            sent.set()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port)
        try:
            received = [await stream.read(1 << 16)]
            await asyncio.sleep(0.3)
            assert not sent.is_set()
            while chunk := await stream.read(1 << 16, timeout=30):
                received.append(chunk)
            assert sent.is_set()
            assert b"".join(received) == data
        finally:
            await stream.aclose()
            server.close()
            await server.wait_closed()

    run(body())


async def _serve_once(body: bytes, encoding: str) -> tuple[asyncio.Server, str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: %s\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (encoding.encode(), len(body), body)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"


def _deflate(data: bytes, wbits: int) -> bytes:
    packer = zlib.compressobj(wbits=wbits)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("encoding", "wbits"), [("gzip", 16 + zlib.MAX_WBITS), ("deflate", zlib.MAX_WBITS), ("deflate", -zlib.MAX_WBITS)]
)
async def test_compressed_replies_are_inflated(encoding: str, wbits: int) -> None:
    # The transport asks for gzip and deflate (as httpx2 does); deflate comes in zlib's
    # format, or raw, as some servers send it.
    reply = {"object": "chat.completion", "choices": [{"index": 0, "message": {"content": "x" * 100_000}}]}
    server, url = await _serve_once(_deflate(json.dumps(reply).encode(), wbits), encoding)
    transport = HttpxTransport()
    try:
        body, info = await transport.send(Endpoint(base_url=url), _payload())
        assert body == reply
        assert info.headers["content-encoding"] == encoding
    finally:
        await transport.aclose()
        server.close()
        await server.wait_closed()


async def test_a_body_that_is_not_what_its_encoding_says_is_a_clear_error() -> None:
    server, url = await _serve_once(b"this is not gzip", "gzip")
    transport = HttpxTransport()
    try:
        with pytest.raises(la.TransportError, match="the body does not decode as its content-encoding says"):
            await transport.send(Endpoint(base_url=url), _payload())
    finally:
        await transport.aclose()
        server.close()
        await server.wait_closed()
