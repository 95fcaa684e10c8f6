"""An aiohttp transport for llmadapters, registered as ``aiohttp``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmadapters import hookimpl

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmadapters.plugins import TransportFactory
    from llmadapters.transports.base import Transport

__all__ = ["register_transports"]


def aiohttp_transport() -> Transport:
    from .transport import AiohttpTransport

    return AiohttpTransport()


@hookimpl
def register_transports(register: Callable[[str, TransportFactory], None]) -> None:
    register("aiohttp", aiohttp_transport)
