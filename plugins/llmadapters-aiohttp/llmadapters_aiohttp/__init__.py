"""An aiohttp transport for llmadapters, registered as ``aiohttp``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmadapters import hookimpl

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmadapters.plugin import NetworkOptions, Transport

__all__ = ["register_transports"]

# What the transport honours of `llmadapters.plugin.FEATURES`: all but HTTP/2,
# which aiohttp's client does not speak.
FEATURES = (
    "proxy",
    "https_proxy",
    "socks_proxy",
    "tls",
    "max_connections",
    "keepalive_expiry",
    "write_timeout",
    "pool_timeout",
)


def aiohttp_transport(options: NetworkOptions) -> Transport:
    from .transport import AiohttpTransport

    return AiohttpTransport(options)


@hookimpl
def register_transports(register: Callable[..., None]) -> None:
    register("aiohttp", aiohttp_transport, supports=FEATURES)
