"""The built-in transports, registered through the plugin hook like any other. Each
factory imports its HTTP library only when a route first needs a transport."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..hookspecs import hookimpl

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..plugins import TransportFactory
    from .base import Transport

__all__ = ["register_transports"]


def httpx_transport() -> Transport:
    from .httpx import HttpxTransport

    return HttpxTransport()


def openai_transport() -> Transport:
    from .openai_sdk import OpenAITransport

    return OpenAITransport()


@hookimpl
def register_transports(register: Callable[[str, TransportFactory], None]) -> None:
    register("httpx", httpx_transport)
    register("openai", openai_transport)
