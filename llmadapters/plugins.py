"""The registry: which providers, transports and middleware exist, by name.

The built-ins are registered here; plugin packages will register through the same
`Registry` (see DESIGN.md, "Plugins"). Transports are registered as factories that import
their HTTP library only when a route first needs one, so ``import llmadapters`` stays
light.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TypeAlias

from .errors import PluginError
from .middleware.logging import LoggingMiddleware
from .middleware.ratelimit import RateLimitMiddleware
from .middleware.retry import RetryMiddleware
from .middleware.timeout import TimeoutMiddleware
from .providers.builtin import BUILTIN_PROVIDERS
from .transports.base import Transport

if TYPE_CHECKING:
    from .config import Settings
    from .middleware.base import Middleware
    from .providers.base import ProviderSpec

__all__ = ["MiddlewareFactory", "Registry", "TransportFactory"]

TransportFactory = Callable[[], Transport]
# Makes one route's instance of a middleware, from the provider and the settings.
MiddlewareFactory: TypeAlias = "Callable[[ProviderSpec, Settings], Middleware]"


def _httpx_transport() -> Transport:
    from .transports.httpx import HttpxTransport

    return HttpxTransport()


def _openai_transport() -> Transport:
    from .transports.openai_sdk import OpenAITransport

    return OpenAITransport()


BUILTIN_TRANSPORTS: dict[str, TransportFactory] = {"httpx": _httpx_transport, "openai": _openai_transport}


def _logging(spec: ProviderSpec, settings: Settings) -> Middleware:
    return LoggingMiddleware()


def _retry(spec: ProviderSpec, settings: Settings) -> Middleware:
    return RetryMiddleware(settings.retry_of(spec.name))


def _ratelimit(spec: ProviderSpec, settings: Settings) -> Middleware:
    return RateLimitMiddleware(settings.limits_of(spec.name))


def _timeout(spec: ProviderSpec, settings: Settings) -> Middleware:
    timeouts = settings.timeouts_of(spec.name)
    return TimeoutMiddleware(total=timeouts.total, first_token=timeouts.first_token)


BUILTIN_MIDDLEWARE: dict[str, MiddlewareFactory] = {
    "logging": _logging,
    "retry": _retry,
    "ratelimit": _ratelimit,
    "timeout": _timeout,
}


class Registry:
    """Providers, transport factories and middleware factories by name."""

    def __init__(self) -> None:
        self.providers: dict[str, ProviderSpec] = {}
        self.transports: dict[str, TransportFactory] = {}
        self.middleware: dict[str, MiddlewareFactory] = {}

    @classmethod
    def builtin(cls) -> Registry:
        registry = cls()
        registry.add_providers(BUILTIN_PROVIDERS)
        for name, factory in BUILTIN_TRANSPORTS.items():
            registry.add_transport(name, factory)
        for name, make in BUILTIN_MIDDLEWARE.items():
            registry.add_middleware(name, make)
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

    def add_middleware(self, name: str, factory: MiddlewareFactory) -> None:
        if name in self.middleware or name == "auth":
            raise PluginError(f"middleware {name!r} is registered twice (auth is built in, always innermost)")
        self.middleware[name] = factory
