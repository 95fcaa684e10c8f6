"""What both built-in transports share, since both move bytes through httpx2 (the
``openai`` SDK is built on it): the mapping of httpx2's exceptions to ours, the
conversion of `Timeouts`, and the client settings made from `NetworkOptions`.

The mapping looks at the innermost recognised exception of the ``__cause__`` chain
(`classify_transport_error`), not the outermost: the SDK wraps its aiohttp client's
errors in httpx2 classes through a table that turns every
``aiohttp.ClientConnectionError`` (a DNS failure, a server disconnect) into
``httpx2.ConnectTimeout``, which would make them timeouts here.
"""

from __future__ import annotations

import ssl
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import httpx2

from .. import errors
from .base import classify_transport_error, native_error_kind
from .network import KEEPALIVE_EXPIRY, require

if TYPE_CHECKING:
    from .base import Endpoint, Timeouts
    from .network import NetworkOptions

__all__ = ["client_settings", "httpx_timeout", "map_httpx_errors", "pool_settings", "transport_error"]

# For a route that needs no TLS: httpx2 would otherwise load the system's CAs for each
# client (24 ms). It verifies, with no CA, so a TLS connection it is ever used for fails.
_NO_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)

_CONNECT = (httpx2.ConnectError, httpx2.ProxyError, httpx2.UnsupportedProtocol)


def _kind(exc: BaseException) -> type[errors.TransportError] | None:
    if isinstance(exc, httpx2.TimeoutException):
        return errors.TimeoutError
    if isinstance(exc, _CONNECT):
        return errors.ConnectError
    if isinstance(exc, (httpx2.HTTPError, httpx2.InvalidURL)):
        return errors.TransportError
    return native_error_kind(exc)


def transport_error(exc: BaseException, endpoint: Endpoint) -> errors.TransportError:
    """Our error for an httpx2 one (or for what it wraps: aiohttp's, under the SDK)."""
    return classify_transport_error(exc, endpoint, _kind)


_HTTPX_ERRORS = (httpx2.HTTPError, httpx2.InvalidURL)


class map_httpx_errors:
    """``with map_httpx_errors(endpoint):`` raises httpx2's errors as ours. A class, not
    a generator context manager: it is on every call's path."""

    __slots__ = ("_endpoint",)

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, _HTTPX_ERRORS):
            raise transport_error(exc, self._endpoint) from exc


@lru_cache(maxsize=64)
def httpx_timeout(timeouts: Timeouts) -> httpx2.Timeout:
    return httpx2.Timeout(connect=timeouts.connect, read=timeouts.read, write=timeouts.write, pool=timeouts.pool)


def client_settings(options: NetworkOptions, connections: int) -> dict[str, Any]:
    """The ``httpx2.AsyncClient`` keyword arguments for ``options``, with a pool of
    ``connections``: `pool_settings`, and redirects not followed, so that an auth header
    never reaches another host."""
    return {**pool_settings(options, connections), "follow_redirects": False}


def pool_settings(options: NetworkOptions, connections: int) -> dict[str, Any]:
    """The ``httpx2.AsyncHTTPTransport`` keyword arguments for ``options``, with a pool
    of ``connections``. Environment proxies are already resolved into ``options.proxy``."""
    proxy = None
    if options.proxy is not None:
        if options.proxy.startswith("socks"):
            require("socksio", "llmadapters[socks]", "a socks5:// proxy")
        https = options.proxy.startswith("https:")
        proxy = httpx2.Proxy(options.proxy, ssl_context=options.ssl if https else None)
    if options.http2:
        require("h2", "llmadapters[http2]", "http2 = true")
    limits = httpx2.Limits(
        max_connections=connections,
        max_keepalive_connections=connections,
        keepalive_expiry=options.keepalive_expiry or KEEPALIVE_EXPIRY,
    )
    return {
        "limits": limits,
        "verify": _NO_TLS if options.ssl is None else options.ssl,
        "proxy": proxy,
        "http2": options.http2,
        "trust_env": False,
    }
