"""The built-in middleware, registered through the plugin hook like any other; each
factory makes one route's instance from the provider's settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..hookspecs import hookimpl
from .cache import CacheMiddleware, ResponseCache
from .logging import LoggingMiddleware
from .ratelimit import RateLimitMiddleware
from .retry import RetryMiddleware
from .timeout import TimeoutMiddleware

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..config import Settings
    from ..plugins import MiddlewareFactory
    from ..providers.base import ProviderSpec
    from .base import Middleware

__all__ = ["register_middleware"]


def logging_middleware(spec: ProviderSpec, settings: Settings) -> Middleware:
    return LoggingMiddleware()


def retry_middleware(spec: ProviderSpec, settings: Settings) -> Middleware:
    return RetryMiddleware(settings.retry_of(spec.name))


def ratelimit_middleware(spec: ProviderSpec, settings: Settings) -> Middleware:
    return RateLimitMiddleware(settings.limits_of(spec.name))


def timeout_middleware(spec: ProviderSpec, settings: Settings) -> Middleware:
    timeouts = settings.timeouts_of(spec.name)
    return TimeoutMiddleware(total=timeouts.total, first_token=timeouts.first_token)


def cache_middleware(spec: ProviderSpec, settings: Settings) -> Middleware:
    return CacheMiddleware(ResponseCache(settings.cache), settings.provider(spec.name).base_url or spec.base_url)


@hookimpl
def register_middleware(register: Callable[[str, MiddlewareFactory], None]) -> None:
    register("logging", logging_middleware)
    register("retry", retry_middleware)
    register("ratelimit", ratelimit_middleware)
    register("timeout", timeout_middleware)
    register("cache", cache_middleware)
