"""The built-in transports, registered through the plugin hook like any other. Each
factory imports its HTTP library only when a route first needs a transport."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..hookspecs import hookimpl
from .network import FEATURES

if TYPE_CHECKING:
    from collections.abc import Callable

    from .base import Transport
    from .network import NetworkOptions

__all__ = ["register_transports"]


def httpx_transport(options: NetworkOptions) -> Transport:
    from .httpx import HttpxTransport

    return HttpxTransport(options)


def openai_transport(options: NetworkOptions) -> Transport:
    from .openai_sdk import OpenAITransport

    return OpenAITransport(options)


@hookimpl
def register_transports(register: Callable[..., None]) -> None:
    register("httpx", httpx_transport, supports=FEATURES)
    register("openai", openai_transport, supports=FEATURES)
