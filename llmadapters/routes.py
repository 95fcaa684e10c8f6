"""A route: one provider + one transport instance, built once per provider and cached.

The per-call path is plain function calls: provider.prepare -> transport -> value types.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import attrs

from .errors import AuthenticationError, ConfigError
from .providers.builtin import openai_compatible
from .transports.base import Endpoint, Transport
from .types import ChatCompletion, ChatCompletionChunk, ChatRequest

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from .config import Settings
    from .plugins import Registry
    from .providers.base import Launched, ProviderSpec

__all__ = ["Route", "build_route", "provider_spec"]


@attrs.define
class Route:
    spec: ProviderSpec
    transport: Transport
    endpoint: Endpoint
    transport_name: str
    launched: Launched | None = None

    async def complete(self, request: ChatRequest) -> ChatCompletion:
        data = await self.transport.send(self.endpoint, self.spec.prepare(request))
        if self.spec.normalize is not None:
            data = self.spec.normalize(data)
        return ChatCompletion.from_dict(data, provider=self.spec.name)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatCompletionChunk, None]:
        normalize, name = self.spec.normalize, self.spec.name
        events = self.transport.stream(self.endpoint, self.spec.prepare(request))
        try:
            async for data in events:
                yield ChatCompletionChunk.from_dict(normalize(data) if normalize else data, provider=name)
        finally:
            await events.aclose()

    async def aclose(self) -> None:
        try:
            await self.transport.aclose()
        finally:
            if self.launched is not None:
                await self.launched.aclose()


def provider_spec(name: str, settings: Settings, registry: Registry) -> ProviderSpec:
    """The registered provider ``name``, or an ad hoc OpenAI-compatible one when the
    settings give it a base_url."""
    spec = registry.providers.get(name)
    if spec is not None:
        return spec
    if settings.provider(name).base_url:
        return openai_compatible(name)
    known = ", ".join(sorted(registry.providers))
    raise ConfigError(
        f"unknown provider {name!r}; known: {known}; for any OpenAI-compatible server set providers.{name}.base_url"
    )


def _api_key(spec: ProviderSpec, settings: Settings) -> str | None:
    own = settings.provider(spec.name)
    if own.api_key is not None:
        return own.api_key.get()
    env = own.api_key_env or spec.api_key_env
    key = os.environ.get(env) if env else None
    if key:
        return key
    if spec.key_required:
        where = f"set {env}" if env else f"set providers.{spec.name}.api_key_env"
        raise AuthenticationError(f"no API key for provider {spec.name!r}: {where}", status=401, provider=spec.name)
    return None


async def build_route(name: str, settings: Settings, registry: Registry) -> Route:
    spec = provider_spec(name, settings, registry)
    own = settings.provider(name)
    transport_name = settings.transport_of(name)
    factory = registry.transports.get(transport_name)
    if factory is None:
        known = ", ".join(sorted(registry.transports))
        raise ConfigError(f"providers.{name}.transport: unknown transport {transport_name!r}; available: {known}")
    key = _api_key(spec, settings)
    headers = {**spec.headers, **own.headers, **(spec.auth(key) if key else {})}
    launched = None
    base_url = own.base_url or spec.base_url
    if base_url is None:
        if spec.launch is None:
            raise ConfigError(f"provider {name!r} has no base_url: set providers.{name}.base_url")
        launched = await spec.launch()
        base_url = launched.base_url
    endpoint = Endpoint(base_url=base_url, headers=headers, timeouts=settings.timeouts_of(name), provider=name)
    return Route(spec=spec, transport=factory(), endpoint=endpoint, transport_name=transport_name, launched=launched)
