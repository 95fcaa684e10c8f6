from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from typing import TYPE_CHECKING, Any

import llmadapters_aiohttp
import pytest

import llmadapters as la
from llmadapters.plugins import Registry
from llmadapters.testing import FakeServer, FakeServerOptions
from llmadapters.transports.network import FEATURES
from llmadapters.transports.openai_sdk import OpenAITransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from contextlib import AbstractAsyncContextManager

# The proxies, test CA and stall servers of the network tests.
pytest_plugins = ["netservers"]

# Every transport a test can run through: the two built-ins (the openai SDK on its
# aiohttp client and on its default httpx2 client), and the aiohttp plugin's, which these
# same tests hold to the same contract.
TRANSPORTS = ("httpx", "openai", "openai-httpx", "aiohttp")


def test_registry() -> Registry:
    registry = Registry.builtin()
    registry.add_transport(
        "openai-httpx", lambda options: OpenAITransport(options, http_client="httpx"), supports=FEATURES
    )
    registry.add_transport("aiohttp", llmadapters_aiohttp.aiohttp_transport, supports=llmadapters_aiohttp.FEATURES)
    return registry


test_registry.__test__ = False  # type: ignore[attr-defined]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """Read one request, its head and its body (by its content-length); the head."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
    await reader.readexactly(int(length.group(1)) if length else 0)
    return head


@contextlib.asynccontextmanager
async def serving(
    answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """The base URL of a loopback server whose connections ``answer`` handles."""
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    finally:
        server.close()
        await server.wait_closed()


def answering(status: int, content_type: str, body: bytes, headers: bytes = b"") -> AbstractAsyncContextManager[str]:
    """The base URL of a loopback server that answers every request with ``body`` (whole,
    then the connection closes; ``headers``: more header lines, each ending CRLF): a
    reply the fake server does not make."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 %d X\r\ncontent-type: %s\r\n%s" % (status, content_type.encode(), headers))
        writer.write(b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    return serving(answer)


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Let the event loop run until ``condition()`` holds (e.g. a dropped stream, closed
    by a task of its own), for at most a minute: a bound no loaded machine reaches."""
    for _ in range(6000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still not {what} after a minute")


@pytest.fixture(autouse=True)
def no_plugin_autoload(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see the built-ins only, whatever is installed, unless they ask for plugins."""
    monkeypatch.setenv("LLMADAPTERS_DISABLE_PLUGIN_AUTOLOAD", "1")


_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see no proxy from the environment unless they set one."""
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
async def fake_server() -> AsyncIterator[FakeServer]:
    async with FakeServer(FakeServerOptions(clock=lambda: 1_700_000_000.0)) as server:
        yield server


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_client(fake_server: FakeServer) -> AsyncIterator[Callable[..., la.AsyncClient]]:
    """Builds AsyncClients whose ``local`` provider is the test's fake server."""
    clients: list[la.AsyncClient] = []

    def make(
        transport: str = "httpx", base_url: str | None = None, middleware: Any = (), **local: Any
    ) -> la.AsyncClient:
        """No middleware unless asked: these clients test the bare transports."""
        providers = {"local": {"base_url": base_url or fake_server.base_url, **local}}
        client = la.AsyncClient(
            {}, transport=transport, providers=providers, middleware=middleware, registry=test_registry()
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def failing_dns(monkeypatch: pytest.MonkeyPatch) -> str:
    """A host name whose resolution fails in-process: no lookup leaves the machine."""
    name = "no-such-host.invalid"
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in (name, name.encode()):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if host not in ("127.0.0.1", "::1", "localhost", b"127.0.0.1", b"::1", b"localhost"):
            raise AssertionError(f"test tried to resolve {host!r}: only loopback is allowed")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return name
