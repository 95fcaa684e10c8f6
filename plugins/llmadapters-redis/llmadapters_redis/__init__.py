"""Rate limits shared through Redis, registered as the ``redis`` backend of the
``ratelimit`` middleware: ``[providers.NAME.limits] backend = "redis"`` with
``url = "redis://..."``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmadapters import hookimpl

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmadapters.plugin import Middleware, ProviderSpec, Settings

__all__ = ["register_middleware"]


def redis_ratelimit(spec: ProviderSpec, settings: Settings) -> Middleware:
    from .limiter import RedisRateLimit

    return RedisRateLimit(settings.limits_of(spec.name), provider=spec.name)


@hookimpl
def register_middleware(register: Callable[..., None]) -> None:
    register("ratelimit-redis", redis_ratelimit)
