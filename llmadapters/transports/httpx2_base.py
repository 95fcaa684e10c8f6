"""What both built-in transports share, since both move bytes through httpx2 (the
``openai`` SDK is built on it): the conversion of `Timeouts`, and the client settings
made from `NetworkOptions`. (httpx2's exceptions are mapped by the table
`._errors.HTTPX2_ERRORS`.)
"""

from __future__ import annotations

import ssl
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import httpx2

from .network import KEEPALIVE_EXPIRY, require

if TYPE_CHECKING:
    from .base import Timeouts
    from .network import NetworkOptions

__all__ = ["client_settings", "httpx_timeout", "pool_settings"]

# For a route that needs no TLS: httpx2 would otherwise load the system's CAs for each
# client (24 ms). It verifies, with no CA, so a TLS connection it is ever used for fails.
_NO_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


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
