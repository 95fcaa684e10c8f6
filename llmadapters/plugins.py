"""The registry: which providers and transports exist, by name.

The built-ins are registered here; plugin packages will register through the same
`Registry` (see DESIGN.md, "Plugins"). Transports are registered as factories that import
their HTTP library only when a route first needs one, so ``import llmadapters`` stays
light.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from .errors import PluginError
from .providers.builtin import BUILTIN_PROVIDERS
from .transports.base import Transport

if TYPE_CHECKING:
    from .providers.base import ProviderSpec

__all__ = ["Registry", "TransportFactory"]

TransportFactory = Callable[[], Transport]


def _httpx_transport() -> Transport:
    from .transports.httpx import HttpxTransport

    return HttpxTransport()


def _openai_transport() -> Transport:
    from .transports.openai_sdk import OpenAITransport

    return OpenAITransport()


BUILTIN_TRANSPORTS: dict[str, TransportFactory] = {"httpx": _httpx_transport, "openai": _openai_transport}


class Registry:
    """Providers and transport factories by name."""

    def __init__(self) -> None:
        self.providers: dict[str, ProviderSpec] = {}
        self.transports: dict[str, TransportFactory] = {}

    @classmethod
    def builtin(cls) -> Registry:
        registry = cls()
        registry.add_providers(BUILTIN_PROVIDERS)
        for name, factory in BUILTIN_TRANSPORTS.items():
            registry.add_transport(name, factory)
        return registry

    def add_providers(self, specs: Iterable[ProviderSpec]) -> None:
        for spec in specs:
            if spec.name in self.providers:
                raise PluginError(f"provider {spec.name!r} is registered twice")
            if "/" in spec.name or not spec.name:
                raise PluginError(f"provider name {spec.name!r} must be non-empty and contain no '/'")
            self.providers[spec.name] = spec

    def add_transport(self, name: str, factory: TransportFactory) -> None:
        if name in self.transports:
            raise PluginError(f"transport {name!r} is registered twice")
        self.transports[name] = factory
