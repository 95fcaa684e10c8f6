"""Every client the benchmark compares (bench/run.py), each as setup functions over one
base URL.

A unary setup returns ``(call, close)``: ``call()`` makes one non-streamed chat call. A
stream setup returns ``(stream_call, close)``: ``stream_call()`` makes one streamed call,
reads it to the end as a user's loop would (each event decoded) and returns how many
chunks it got. A batch setup returns ``(run, close)``: ``run(n, concurrency)`` answers
``n`` requests through llmadapters' ``client.batch``. ``connections`` sizes each client's
connection pool, so that no client waits for a connection, and every client waits up to
``CONNECT_TIMEOUT`` for a connection to be accepted.

Libraries are imported inside the setups, so that a worker process holds only its own
contender's.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal

from common import Call, run_calls

if TYPE_CHECKING:
    import llmadapters as la

MESSAGES = [{"role": "user", "content": "benchmark request"}]
# Thousands of connections opened at once to the fake server (Python) take longer than the
# usual 5 s to be accepted: its listen backlog overflows, and the kernel sends a dropped
# SYN again after 1, 3, then 7 s.
CONNECT_TIMEOUT = 60.0
BODY = {"model": "echo", "messages": MESSAGES}
STREAM_BODY = {**BODY, "stream": True}

Close = Callable[[], Awaitable[None]]
StreamCall = Callable[[], Awaitable[int]]
Run = Callable[[int, int], Awaitable[int]]
UnarySetup = Callable[[str, int], Awaitable[tuple[Call, Close]]]
StreamSetup = Callable[[str, int], Awaitable[tuple[StreamCall, Close]]]
BatchSetup = Callable[[str, int], Awaitable[tuple[Run, Close]]]
Kind = Literal["unary", "stream"]


@dataclass(frozen=True)
class Contender:
    """One client: its setups, and what it needs installed.

    Exactly one of ``unary`` and ``batch`` is set; ``stream`` when it streams too.
    ``sync`` marks a blocking client, measured at concurrency 1 only; ``share`` is the
    fraction of the usual number of requests it gets, for a slow one; ``memory`` whether
    its memory with thousands of calls in flight is measured (a variant's adds little).
    """

    label: str
    needs: str
    unary: UnarySetup | None = None
    stream: StreamSetup | None = None
    batch: BatchSetup | None = None
    sync: bool = False
    share: float = 1.0
    memory: bool = True

    async def open(self, kind: Kind, base_url: str, connections: int) -> tuple[Run, Close]:
        """``run(n, concurrency)`` makes ``n`` calls of ``kind`` with at most ``concurrency``
        in flight and returns what it got: requests, or chunks for streams."""
        if kind == "stream":
            assert self.stream is not None
            stream_call, close = await self.stream(base_url, connections)
            return _streams(stream_call), close
        if self.batch is not None:
            return await self.batch(base_url, connections)
        assert self.unary is not None
        call, close = await self.unary(base_url, connections)
        return _calls(call), close


def _calls(call: Call) -> Run:
    async def run(n: int, concurrency: int) -> int:
        await run_calls(call, n, concurrency)
        return n

    return run


def _streams(stream_call: StreamCall) -> Run:
    async def run(n: int, concurrency: int) -> int:
        chunks = 0

        async def one() -> None:
            nonlocal chunks
            got = await stream_call()  # not `chunks += await ...`: that reads chunks before the await
            chunks += got

        await run_calls(one, n, concurrency)
        return chunks

    return run


async def _count(stream: AsyncIterable[object]) -> int:
    chunks = 0
    async for _ in stream:
        chunks += 1
    return chunks


def _chat_client(make: Callable[[str, int], tuple[Any, Close]], model: str) -> tuple[UnarySetup, StreamSetup]:
    """The unary and stream setups of a client with the openai SDK's surface (``await
    client.chat.completions.create(...)``, a stream read with ``async for``), which
    ``make(base_url, connections)`` returns with its close."""

    async def unary(base_url: str, connections: int) -> tuple[Call, Close]:
        client, close = make(base_url, connections)

        async def call() -> object:
            return await client.chat.completions.create(model=model, messages=MESSAGES)

        return call, close

    async def stream(base_url: str, connections: int) -> tuple[StreamCall, Close]:
        client, close = make(base_url, connections)

        async def stream_call() -> int:
            return await _count(await client.chat.completions.create(model=model, messages=MESSAGES, stream=True))

        return stream_call, close

    return unary, stream


# -- llmadapters --------------------------------------------------------------------


def _llmadapters_client(
    transport: str, base_url: str, connections: int, middleware: list[str] | None
) -> la.AsyncClient:
    """llmadapters through ``transport`` ("aiohttp", "httpx", "openai-aiohttp" or
    "openai-httpx2": the openai transport on the SDK's aiohttp or httpx2 client), with the
    default middleware stack unless ``middleware`` is given. No installed plugin is loaded
    but the aiohttp one, when the transport is "aiohttp"."""
    import llmadapters as la
    from llmadapters.plugins import Registry

    registry = Registry.builtin()
    if transport == "aiohttp":
        import llmadapters_aiohttp

        registry.add_transport("aiohttp", llmadapters_aiohttp.aiohttp_transport, supports=llmadapters_aiohttp.FEATURES)
    elif transport.startswith("openai-"):
        from llmadapters.transports.network import FEATURES, NetworkOptions
        from llmadapters.transports.openai_sdk import OpenAITransport

        http_client: Literal["aiohttp", "httpx"] = "aiohttp" if transport == "openai-aiohttp" else "httpx"

        def make(options: NetworkOptions) -> OpenAITransport:
            return OpenAITransport(options, http_client=http_client)

        registry.add_transport(transport, make, supports=FEATURES)
    provider = {"base_url": base_url, "max_connections": connections, "timeout": {"connect": CONNECT_TIMEOUT}}
    providers = {"bench": provider}
    return la.AsyncClient({}, transport=transport, providers=providers, registry=registry, middleware=middleware)


def llmadapters(transport: str, middleware: list[str] | None = None) -> tuple[UnarySetup, StreamSetup]:
    def make(base_url: str, connections: int) -> tuple[Any, Close]:
        client = _llmadapters_client(transport, base_url, connections, middleware)
        return client, client.aclose

    return _chat_client(make, "bench/echo")


def llmadapters_batch(transport: str) -> BatchSetup:
    async def setup(base_url: str, connections: int) -> tuple[Run, Close]:
        client = _llmadapters_client(transport, base_url, connections, None)

        async def run(n: int, concurrency: int) -> int:
            requests = ({"model": "bench/echo", "messages": MESSAGES} for _ in range(n))
            async for result in client.batch(requests, concurrency=concurrency):
                if result.error is not None:
                    raise result.error
            return n

        return run, client.aclose

    return setup


# -- plain aiohttp --------------------------------------------------------------------


def _aiohttp_session(connections: int) -> Any:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(sock_connect=CONNECT_TIMEOUT))


async def plain_aiohttp(base_url: str, connections: int) -> tuple[Call, Close]:
    session = _aiohttp_session(connections)
    url = base_url + "/chat/completions"

    async def call() -> object:
        async with session.post(url, json=BODY) as response:
            response.raise_for_status()
            return await response.json()

    return call, session.close


async def plain_aiohttp_stream(base_url: str, connections: int) -> tuple[StreamCall, Close]:
    session = _aiohttp_session(connections)
    url = base_url + "/chat/completions"

    async def stream_call() -> int:
        chunks = 0
        async with session.post(url, json=STREAM_BODY) as response:
            response.raise_for_status()
            async for line in response.content:
                if line.startswith(b"data: "):
                    data = line[6:].rstrip()
                    if data == b"[DONE]":
                        break
                    json.loads(data)
                    chunks += 1
            # Read to the end of the body, as the httpx loop does: aiohttp closes a
            # connection released with bytes unread.
            await response.content.read()
        return chunks

    return stream_call, session.close


# -- plain httpx2 and httpx (the same API) -----------------------------------------------


def _httpx_client(module: str, connections: int) -> Any:
    """An ``AsyncClient`` of ``module`` ("httpx2" or "httpx") with a pool of ``connections``,
    and no timeout as short as its default 5 s."""
    httpx = importlib.import_module(module)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(600, connect=CONNECT_TIMEOUT))


def plain_httpx(module: str) -> tuple[UnarySetup, StreamSetup]:
    async def unary(base_url: str, connections: int) -> tuple[Call, Close]:
        client = _httpx_client(module, connections)
        url = base_url + "/chat/completions"

        async def call() -> object:
            response = await client.post(url, json=BODY)
            response.raise_for_status()
            return response.json()

        return call, client.aclose

    async def stream(base_url: str, connections: int) -> tuple[StreamCall, Close]:
        client = _httpx_client(module, connections)
        url = base_url + "/chat/completions"

        async def stream_call() -> int:
            chunks = 0
            async with client.stream("POST", url, json=STREAM_BODY) as response:
                response.raise_for_status()
                lines = response.aiter_lines()
                async for line in lines:
                    if line.startswith("data: "):
                        if line == "data: [DONE]":
                            break
                        json.loads(line[6:])
                        chunks += 1
                # Read to the end of the body: httpx drops a connection left unread (a
                # break alone made this loop 1.7x slower, every stream a new connection).
                async for _ in lines:
                    pass
            return chunks

        return stream_call, client.aclose

    return unary, stream


# -- the openai SDK -------------------------------------------------------------------


def plain_openai(http_client: str) -> tuple[UnarySetup, StreamSetup]:
    """``AsyncOpenAI`` on the SDK's own httpx2 client (its default) or on its aiohttp one,
    the pool raised to ``connections``; no retries (none would happen)."""

    def make(base_url: str, connections: int) -> tuple[Any, Close]:
        import httpx2
        import openai

        limits = httpx2.Limits(max_connections=connections, max_keepalive_connections=connections)
        http = openai.DefaultAioHttpClient if http_client == "aiohttp" else openai.DefaultAsyncHttpxClient
        client = openai.AsyncOpenAI(
            api_key="unused",
            base_url=base_url,
            max_retries=0,
            timeout=httpx2.Timeout(600, connect=CONNECT_TIMEOUT),
            http_client=http(limits=limits),
        )
        return client, client.close

    return _chat_client(make, "echo")


async def sync_openai(base_url: str, connections: int) -> tuple[Call, Close]:
    """The blocking ``openai.OpenAI``, one call after another (run at concurrency 1)."""
    import openai

    client = openai.OpenAI(api_key="unused", base_url=base_url, max_retries=0)

    async def call() -> object:
        return client.chat.completions.create(model="echo", messages=MESSAGES)  # type: ignore[arg-type]

    async def close() -> None:
        client.close()

    return call, close


# -- LiteLLM --------------------------------------------------------------------------


def _litellm(base_url: str, connections: int) -> tuple[Any, Close]:
    """``litellm.acompletion`` on ``base_url``, behind the SDK's surface. Its aiohttp pool
    is sized to ``connections`` when litellm is first imported (a worker process sizes
    every pool alike). It keeps its clients in a cache of its own for the life of the
    process: closing them (``litellm.close_litellm_async_clients``) would break the
    process's later calls, so its close does nothing."""
    os.environ.setdefault("AIOHTTP_CONNECTOR_LIMIT", str(connections))
    os.environ.setdefault("AIOHTTP_CONNECTOR_LIMIT_PER_HOST", str(connections))
    import litellm

    create = functools.partial(litellm.acompletion, api_base=base_url, api_key="unused")
    return SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=create))), _keep_open


async def _keep_open() -> None:
    """LiteLLM's close: none (see `_litellm`)."""


# -- all of them ----------------------------------------------------------------------


def _llmadapters_contenders() -> dict[str, Contender]:
    """Each transport with the default middleware stack, with none, and through
    client.batch; and the openai transport on the SDK's httpx2 client."""
    contenders = {}
    transports = [
        ("la-aiohttp", "aiohttp", "aiohttp transport", "llmadapters_aiohttp"),
        ("la-httpx", "httpx", "httpx transport", "httpx2"),
        ("la-openai", "openai-aiohttp", "openai transport (SDK on aiohttp)", "aiohttp"),
    ]
    for key, transport, name, needs in transports:
        label = f"llmadapters, {name}"
        contenders[key] = Contender(label, needs, *llmadapters(transport))
        bare, _ = llmadapters(transport, [])
        contenders[f"{key}-bare"] = Contender(f"{label}, no middleware", needs, bare, memory=False)
        batch = llmadapters_batch(transport)
        contenders[f"{key}-batch"] = Contender(f"{label}, client.batch", needs, batch=batch, memory=False)
    unary, _ = llmadapters("openai-httpx2")
    contenders["la-openai-httpx2"] = Contender(
        "llmadapters, openai transport (SDK on httpx2)", "openai", unary, memory=False
    )
    return contenders


CONTENDERS: dict[str, Contender] = {
    **_llmadapters_contenders(),
    "aiohttp": Contender("plain aiohttp", "aiohttp", plain_aiohttp, plain_aiohttp_stream),
    "httpx2": Contender("plain httpx2.AsyncClient", "httpx2", *plain_httpx("httpx2")),
    "httpx": Contender("plain httpx.AsyncClient (httpx 0.28)", "httpx", *plain_httpx("httpx")),
    "openai-httpx2": Contender("plain AsyncOpenAI (default httpx2 client)", "openai", *plain_openai("httpx")),
    "openai-aiohttp": Contender("plain AsyncOpenAI (DefaultAioHttpClient)", "aiohttp", *plain_openai("aiohttp")),
    "openai-sync": Contender(
        "plain OpenAI (sync, one call after another)", "openai", sync_openai, sync=True, memory=False
    ),
    "litellm": Contender("LiteLLM acompletion", "litellm", *_chat_client(_litellm, "openai/echo"), share=0.25),
}
