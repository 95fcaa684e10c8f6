"""The ``openai`` transport: the official ``openai.AsyncOpenAI`` SDK moves the bytes.

The SDK builds and sends the request (its headers, its HTTP client, its status-error
handling); its own retries are off, since retrying is the retry middleware's job. The
reply comes back as the raw ``httpx2.Response`` and is decoded by the same code as the
``httpx`` transport, so both yield equal values and equal errors for the same bytes,
and the SDK's SSE decoder bugs (openai-python #2722) do not apply.

When ``aiohttp`` is installed the SDK runs on its aiohttp client
(``openai.DefaultAioHttpClient``), which measured 1.7x-3.3x the requests/s of its default
httpx2 client at concurrency 64-256, unless the route asks for what only the httpx2
client does: a socks5:// proxy, HTTP/2, or a write or pool timeout of its own (that
client bounds a stalled upload by the read timeout, and the pool wait together with the
connect).
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any, Literal

import httpx2
import openai

from ._errors import AIOHTTP_ERRORS, BUILTIN_ERRORS, HTTPX2_ERRORS, OPENAI_ERRORS, ErrorMap
from ._kernel import DEFAULT_MAX_CONNECTIONS, encode_json, json_reply, read_body, resend_if_closed, stream_reply
from .httpx2_base import client_settings, httpx_timeout
from .network import NetworkOptions

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping

    from ..types import ResponseInfo
    from .base import Endpoint

__all__ = ["OpenAITransport"]

HttpClientKind = Literal["auto", "aiohttp", "httpx"]

# The SDK's own, and what it wraps: httpx2's, or aiohttp's under its aiohttp client, which
# re-raises those it has no mapping for (a bad status line, an invalid chunk size, an
# oversized header).
_ERRORS = ErrorMap(HTTPX2_ERRORS, AIOHTTP_ERRORS, OPENAI_ERRORS, BUILTIN_ERRORS)


# What the SDK's aiohttp client cannot do, and its httpx2 client can.
_HTTPX2_ONLY = frozenset({"socks_proxy", "http2", "write_timeout", "pool_timeout"})


class OpenAITransport:
    """Sends requests through one ``openai.AsyncOpenAI`` per base URL.

    Args:
        options: the route's proxy, TLS and connection settings; ``max_connections``
            sizes the SDK's pool (default `DEFAULT_MAX_CONNECTIONS`).
        http_client: ``"aiohttp"`` for the SDK's aiohttp client, ``"httpx"`` for its
            default httpx2 client, ``"auto"`` for aiohttp when it is installed and
            ``options`` need nothing only httpx2 does.
    """

    def __init__(self, options: NetworkOptions | None = None, *, http_client: HttpClientKind = "auto") -> None:
        self._network = options or NetworkOptions()
        if http_client == "auto":
            aiohttp = importlib.util.find_spec("aiohttp") is not None
            http_client = "aiohttp" if aiohttp and not self._network.features & _HTTPX2_ONLY else "httpx"
        self.http_client_kind: Literal["aiohttp", "httpx"] = http_client
        self._clients: dict[str, openai.AsyncOpenAI] = {}

    def __repr__(self) -> str:
        return f"OpenAITransport(http_client={self.http_client_kind!r})"

    def _client(self, base_url: str) -> openai.AsyncOpenAI:
        client = self._clients.get(base_url)
        if client is None:
            settings = client_settings(self._network, self._network.max_connections or DEFAULT_MAX_CONNECTIONS)
            http: httpx2.AsyncClient
            if self.http_client_kind == "aiohttp":
                http = openai.DefaultAioHttpClient(**settings)
            else:
                http = openai.DefaultAsyncHttpxClient(**settings)
            # The key travels in the endpoint's headers; the SDK's own is a placeholder
            # that `_options` removes from every request.
            client = openai.AsyncOpenAI(api_key="unused", base_url=base_url, max_retries=0, http_client=http)
            self._clients[base_url] = client
        return client

    def _options(self, endpoint: Endpoint) -> Any:
        # No header of the SDK's own making reaches the server: not its placeholder key,
        # nor OpenAI-Organization/-Project read from the environment.
        headers: dict[str, Any] = {
            "Authorization": openai.Omit(),
            "OpenAI-Organization": openai.Omit(),
            "OpenAI-Project": openai.Omit(),
            **endpoint.headers,
        }
        options = {"headers": headers, "timeout": httpx_timeout(endpoint.timeouts)}
        if endpoint.query:
            options["params"] = dict(endpoint.query)
        return options

    async def _open(self, endpoint: Endpoint, payload: Mapping[str, Any], *, stream: bool) -> httpx2.Response:
        """The response, an error status included: the SDK raises those, and we take the
        response back from its exception so that the shared code maps it, outside of any
        ``except`` (no SDK exception, holding the request's headers, in the chain)."""
        client = self._client(endpoint.base_url)

        async def post() -> httpx2.Response | openai.APIStatusError:
            try:
                return await client.post(
                    endpoint.path, cast_to=httpx2.Response, body=payload, options=self._options(endpoint), stream=stream
                )
            except openai.APIStatusError as exc:
                return exc
            except ValueError:  # the SDK could not write the body (NaN, a lone surrogate)
                encode_json(payload)  # raises what every transport raises for it
                raise

        with _ERRORS(endpoint):
            reply = await resend_if_closed(post)
        return reply.response if isinstance(reply, openai.APIStatusError) else reply

    async def send(self, endpoint: Endpoint, payload: Mapping[str, Any]) -> tuple[dict[str, Any], ResponseInfo]:
        # Streamed even for a unary reply, so that its (decoded) size can be capped.
        response = await self._open(endpoint, payload, stream=True)
        if response.status_code >= 300:  # the SDK has read an error's body
            body = response.content
        else:
            try:
                with _ERRORS(endpoint):
                    body = await read_body(response.aiter_bytes())
            finally:
                await response.aclose()
        return json_reply(response.status_code, response.headers, body, endpoint)

    async def stream(
        self, endpoint: Endpoint, payload: Mapping[str, Any]
    ) -> AsyncGenerator[ResponseInfo | dict[str, Any], None]:
        response = await self._open(endpoint, payload, stream=True)
        try:
            with _ERRORS(endpoint):
                # An error's body was read by the SDK: aiter_bytes gives it back.
                chunks = response.aiter_bytes()
                async for item in stream_reply(response.status_code, response.headers, chunks, endpoint):
                    yield item
        finally:
            with _ERRORS(endpoint):
                await response.aclose()

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()
