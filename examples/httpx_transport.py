"""A transport plugin on httpx 0.28, whole: the worked example of "Writing a transport".

It passes `llmadapters.testing.conformance.TransportConformance`, like the built-in
transports. In a package of its own, point an entry point at this module::

    [project.entry-points.llmadapters]
    httpx028 = "my_package.httpx_transport"

and choose it with ``transport = "httpx028"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmadapters.plugin import (
    BUILTIN_ERRORS,
    DEFAULT_MAX_CONNECTIONS,
    KEEPALIVE_EXPIRY,
    APITimeoutError,
    ConnectError,
    ErrorMap,
    ErrorRule,
    ErrorTable,
    TransportError,
    encode_json,
    hookimpl,
    json_reply,
    read_body,
    require,
    stream_reply,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Mapping

    import httpx

    from llmadapters.plugin import Endpoint, NetworkOptions, ResponseInfo, Transport

# httpx's exceptions, most specific first, by name: reading the table imports nothing.
# A timeout names its phase; a connection the server dropped mid-answer says "lost".
HTTPX_ERRORS = ErrorTable(
    ErrorRule("httpx.ConnectTimeout", APITimeoutError, "connect"),
    ErrorRule("httpx.ReadTimeout", APITimeoutError, "read"),
    ErrorRule("httpx.WriteTimeout", APITimeoutError, "write"),
    ErrorRule("httpx.PoolTimeout", APITimeoutError, "pool"),
    ErrorRule("httpx.ConnectError", ConnectError),
    ErrorRule("httpx.ProxyError", ConnectError),
    ErrorRule("httpx.UnsupportedProtocol", ConnectError),
    ErrorRule("httpx.RemoteProtocolError", TransportError, lost=True),
    ErrorRule("httpx.ReadError", TransportError, lost=True),
    ErrorRule("httpx.WriteError", TransportError, lost=True),  # dropped while the request was sent
    ErrorRule("httpx.HTTPError", TransportError),
    ErrorRule("httpx.InvalidURL", TransportError),
)
ERRORS = ErrorMap(HTTPX_ERRORS, BUILTIN_ERRORS)

# What it honours of llmadapters.plugin.FEATURES; the client refuses the others.
FEATURES = ("proxy", "https_proxy", "socks_proxy", "tls", "max_connections", "keepalive_expiry", "write_timeout",
            "pool_timeout")  # fmt: skip


class HttpxTransport:
    """One ``httpx.AsyncClient`` for the route, made from its `NetworkOptions`."""

    def __init__(self, options: NetworkOptions) -> None:
        require("httpx", "httpx==0.28.*", "the httpx028 transport")  # a ConfigError, naming the package
        import httpx

        connections = options.max_connections or DEFAULT_MAX_CONNECTIONS
        proxy = None
        if options.proxy is not None:
            if options.proxy.startswith("socks"):
                require("socksio", "httpx[socks]", "a socks5:// proxy with the httpx028 transport")
            # An https:// proxy is verified with the route's TLS context, as the provider is.
            proxy = httpx.Proxy(options.proxy, ssl_context=options.ssl if options.proxy.startswith("https:") else None)
        self._httpx = httpx
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=connections,
                max_keepalive_connections=connections,
                keepalive_expiry=options.keepalive_expiry or KEEPALIVE_EXPIRY,
            ),
            verify=True if options.ssl is None else options.ssl,
            proxy=proxy,
            follow_redirects=False,  # an auth header must never reach another host
            trust_env=False,  # the route has resolved the environment's proxies already
        )

    def _request(self, endpoint: Endpoint, payload: Mapping[str, Any]) -> httpx.Request:
        timeouts = endpoint.timeouts
        return self._client.build_request(
            "POST",
            endpoint.url,  # the query is in it
            content=encode_json(payload),
            headers={**endpoint.headers, "content-type": "application/json"},
            timeout=self._httpx.Timeout(
                connect=timeouts.connect, read=timeouts.read, write=timeouts.write, pool=timeouts.pool
            ),
        )

    async def send(self, endpoint: Endpoint, payload: Mapping[str, Any]) -> tuple[dict[str, Any], ResponseInfo]:
        with ERRORS(endpoint):
            response = await self._client.send(self._request(endpoint, payload), stream=True)
            try:
                body = await read_body(response.aiter_bytes())  # capped at MAX_BODY_BYTES
            finally:
                await response.aclose()
        return json_reply(response.status_code, response.headers, body, endpoint)

    async def stream(
        self, endpoint: Endpoint, payload: Mapping[str, Any]
    ) -> AsyncGenerator[ResponseInfo | dict[str, Any], None]:
        with ERRORS(endpoint):
            response = await self._client.send(self._request(endpoint, payload), stream=True)
            try:
                chunks = response.aiter_bytes()
                async for item in stream_reply(response.status_code, response.headers, chunks, endpoint):
                    yield item
            finally:
                await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()


def httpx_transport(options: NetworkOptions) -> Transport:
    return HttpxTransport(options)


@hookimpl
def register_transports(register: Callable[..., None]) -> None:
    register("httpx028", httpx_transport, supports=FEATURES)
