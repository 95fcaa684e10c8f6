"""A route: one provider + one transport instance + a composed middleware chain, built
once per provider and cached by the client.

The per-call path is plain function calls: middleware -> provider.prepare -> transport
-> value types. No lookup, config parsing or plugin dispatch happens in it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from .errors import (
    APITimeoutError,
    AuthenticationError,
    ConfigError,
    LLMAdapterError,
    MalformedResponseError,
    PluginError,
    StreamError,
    TransportError,
    credentials,
    snippet,
    unknown_name,
)
from .middleware.auth import AuthMiddleware, KeyRing
from .middleware.base import Call, CallNext, Middleware, Reply, compose, new_idempotency_key
from .pricing import PriceList
from .providers.base import embeddings_payload
from .providers.builtin import openai_compatible
from .streaming import ChatCompletionStream
from .transports.base import Endpoint, Timeouts
from .transports.network import FEATURES, NetworkOptions, proxy_feature, proxy_for, redact_url, ssl_context
from .types import ChatCompletion, ChatCompletionChunk, CreateEmbeddingResponse, EmbeddingRequest, ResponseInfo

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Sequence

    from .config import NetworkSettings, Settings
    from .plugins import Registry
    from .providers.base import Launched, ProviderSpec
    from .transports.base import Transport
    from .types import Request

__all__ = [
    "Route",
    "build_route",
    "check_features",
    "needed_features",
    "price_list",
    "provider_spec",
    "shared_limiter",
]

MiddlewareChoice = str | Middleware


@attrs.define
class Route:
    """Attributes:
    spec: the provider.
    transport: this route's own transport instance.
    endpoint: the provider's endpoint, before auth.
    handle: the composed chain; ``await route.handle(call)`` makes one call.
    middleware: the chain's middleware, outermost first (auth last when a key is set).
    keys: the provider's API keys (names and state), or None when it takes none.
    prices: the provider's prices (the plugin's, with the config's over them), which
        price each reply (``reply.cost``) when the call is sent, by their clock.
    auth: the auth headers of each key, by key name, for requests made beside the
        chain (the Batch API's files and batches).
    """

    spec: ProviderSpec
    transport: Transport
    transport_name: str
    endpoint: Endpoint
    handle: CallNext
    middleware: tuple[Middleware, ...]
    keys: KeyRing | None = None
    launched: Launched | None = None
    prices: PriceList = attrs.field(factory=PriceList)
    auth: Mapping[str, Mapping[str, str]] = attrs.field(factory=dict, repr=False)
    embeddings_endpoint: Endpoint = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # Made once: a middleware that memoises per endpoint (auth) sees the same one on
        # every embeddings call.
        self.embeddings_endpoint = attrs.evolve(self.endpoint, path=EmbeddingRequest.path)

    def call(self, request: Request, *, idempotency_key: str | None = None, defer_rate_limits: bool = False) -> Call:
        """A new `Call` of ``request`` on this route, for ``await route.handle(call)``,
        with the request's own headers, query and timeouts over the route's, sent to the
        path of its kind (``/embeddings`` for an `EmbeddingRequest`); a fresh
        ``idempotency_key`` unless one is given (see `AsyncClient.call`)."""
        endpoint = self.endpoint
        if isinstance(request, EmbeddingRequest):
            endpoint = self.embeddings_endpoint
        if request.extra_query or request.timeout:
            endpoint = attrs.evolve(
                endpoint,
                query={**endpoint.query, **request.extra_query},
                timeouts=attrs.evolve(endpoint.timeouts, **request.timeout or {}),
            )
        return Call(
            request=request,
            spec=self.spec,
            endpoint=endpoint,
            headers=dict(request.extra_headers),
            idempotency_key=new_idempotency_key() if idempotency_key is None else idempotency_key,
            keys=self.keys,
            defer_rate_limits=defer_rate_limits,
        )

    async def aclose(self) -> None:
        """Close the transport, the middleware that hold resources (an ``aclose``
        method), and a server the provider launched."""
        try:
            await self.transport.aclose()
            for middleware in self.middleware:
                close = getattr(middleware, "aclose", None)
                if close is not None:
                    await close()
        finally:
            if self.launched is not None:
                await self.launched.aclose()


class plugin_code:
    """Around a plugin's (or the user's) code on a route: a bug there becomes a
    `PluginError` naming it, recorded like any failed call, instead of a bare exception
    that would end a whole batch. Stateless, so one instance serves every call (a class,
    not a generator: it is on every call's path)."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is None or isinstance(exc, LLMAdapterError) or not isinstance(exc, Exception):
            return
        raise PluginError(f"{self.what} raised {type(exc).__name__}: {exc}") from exc


def _terminal(spec: ProviderSpec, transport: Transport, transport_name: str, prices: PriceList) -> CallNext:
    """The innermost handler: provider quirks, the transport, the value types, the cost."""
    name, prepare, normalize = spec.name, spec.prepare, spec.normalize
    in_normalize = plugin_code(f"provider {name!r} (normalize)")
    in_prepare = plugin_code(f"provider {name!r} (prepare)")
    in_transport = plugin_code(f"transport {transport_name!r}")

    def value(data: dict[str, Any]) -> dict[str, Any]:
        if normalize is None:
            return data
        with in_normalize:
            return normalize(data)

    async def chunks(
        events: AsyncGenerator[ResponseInfo | dict[str, Any], None], wants_usage: bool, model: str, sent: float
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        from_dict = ChatCompletionChunk.from_dict
        unfinished: set[int] = set()  # the choices seen whose last chunk had no finish_reason
        began = finished = usage = False
        try:
            with in_transport:
                try:
                    async for data in events:
                        if type(data) is not dict and isinstance(data, ResponseInfo):
                            raise TypeError("a stream yielded its ResponseInfo twice")
                        chunk = from_dict(data if normalize is None else value(data), provider=name)
                        for choice in chunk.choices:
                            if not choice.finish_reason:  # ("" on every chunk but the last: sglang, GLM)
                                unfinished.add(choice.index)
                            else:
                                unfinished.discard(choice.index)
                                finished = True
                        if chunk.usage is not None:
                            usage = True
                            cost = prices.cost(model, chunk.usage, sent)
                            if cost is not None:
                                chunk = attrs.evolve(chunk, cost=cost)
                        began = True
                        yield chunk
                except StreamError as exc:
                    # Some servers end a finished stream without [DONE]: the answer is whole.
                    if not (exc.ended_early and finished and not unfinished and (usage or not wants_usage)):
                        raise
                except TransportError as exc:
                    # Cut after output began, the stream is truncated, whichever way the
                    # connection broke (before, the call can still be retried; a stall
                    # stays a timeout).
                    if not began or isinstance(exc, APITimeoutError):
                        raise
                    raise StreamError(f"stream from {name} broke after its first chunk: {exc}") from exc
        finally:
            await events.aclose()

    async def embed(call: Call, request: EmbeddingRequest) -> Reply:
        if spec.embeddings is None:
            raise ConfigError(f"provider {name!r} has no embeddings endpoint that llmadapters knows of")
        sent = prices.clock()
        payload = embeddings_payload(request, spec.embeddings)
        endpoint = call.endpoint.with_headers(call.headers) if call.headers else call.endpoint
        with in_transport:
            data, info = await transport.send(endpoint, payload)
        # (``normalize`` is the chat dialect's: an embeddings body goes as it came.)
        try:
            reply = CreateEmbeddingResponse.from_dict(
                data, provider=name, http=info, decode=request.encoding_format is None
            )
        except (ValueError, TypeError) as exc:  # a vector that is not base64 float32s, or not numbers
            raise MalformedResponseError(f"{name} answered embeddings that cannot be read: {exc}", body=data) from None
        if len(reply.data) != len(request.texts):
            raise MalformedResponseError(
                f"{name} answered {len(reply.data)} embeddings for {len(request.texts)} inputs", body=data
            )
        reply = _in_input_order(reply, name, data)
        # Priced as a call whose tokens are all input (the usage leaves completions out).
        usage = attrs.evolve(reply.usage, completion_tokens=0) if reply.usage is not None else None
        cost = prices.cost(request.model, usage, sent)
        return reply if cost is None else attrs.evolve(reply, cost=cost)

    async def send(call: Call) -> Reply:
        if isinstance(call.request, EmbeddingRequest):
            return await embed(call, call.request)
        sent = prices.clock()
        with in_prepare:
            payload = prepare(call.request)
        endpoint = call.endpoint.with_headers(call.headers) if call.headers else call.endpoint
        if not call.request.stream:
            with in_transport:
                sent_reply = await transport.send(endpoint, payload)
                if not (
                    isinstance(sent_reply, tuple) and len(sent_reply) == 2 and isinstance(sent_reply[1], ResponseInfo)
                ):
                    raise TypeError("send() must return (the reply's JSON, its ResponseInfo)")
            data, info = sent_reply
            reply = ChatCompletion.from_dict(value(data), provider=name, http=info)
            if not reply.choices:  # MiniMax's error with status 200, {"success": false}, ...
                raise MalformedResponseError(
                    f"a 2xx reply from {name} without choices: {snippet(repr(data))}", body=data
                )
            cost = prices.cost(call.request.model, reply.usage, sent)
            return reply if cost is None else attrs.evolve(reply, cost=cost)
        # Wait for the response's info and the first chunk, so that errors before it
        # raise here, where the middleware (retry above all) can still act on them.
        with in_transport:
            events = transport.stream(endpoint, payload)
            try:
                head = await events.__anext__()
            except BaseException:
                await events.aclose()
                raise
            if not isinstance(head, ResponseInfo):
                await events.aclose()
                raise TypeError("a stream's first item must be its ResponseInfo")
        info = head
        options = payload.get("stream_options")
        wants_usage = isinstance(options, Mapping) and bool(options.get("include_usage"))
        rest = chunks(events, wants_usage, call.request.model, sent)
        try:
            first: ChatCompletionChunk | None = await rest.__anext__()
        except StopAsyncIteration:
            first = None
        except BaseException:
            await rest.aclose()
            raise
        return ChatCompletionStream(rest, first=first, http=info)

    return send


def _in_input_order(reply: CreateEmbeddingResponse, name: str, data: dict[str, Any]) -> CreateEmbeddingResponse:
    """``reply`` with its vectors in the order of their ``index``, the inputs' order (a
    server may send them in another, as OpenAI's guide warns); a `MalformedResponseError`
    when the indexes are not each input's once. Vectors with no index are taken in the
    order they came."""
    indexes = [item.index for item in reply.data]
    if indexes == list(range(len(indexes))) or not any("index" in item.raw for item in reply.data):
        return reply
    if sorted(indexes) != list(range(len(indexes))):
        raise MalformedResponseError(f"{name} answered embeddings indexed {indexes}, not one per input", body=data)
    return attrs.evolve(reply, data=tuple(sorted(reply.data, key=lambda item: item.index)))


def provider_spec(name: str, settings: Settings, registry: Registry) -> ProviderSpec:
    """The registered provider ``name``, or an ad hoc OpenAI-compatible one when the
    settings give it a base_url."""
    spec = registry.providers.get(name)
    if spec is not None:
        return spec
    if settings.provider(name).base_url:
        return openai_compatible(name)
    error = unknown_name(f"model {name + '/...'!r}", "provider", name, registry.providers)
    raise ConfigError(f"{error}; for any OpenAI-compatible server, set providers.{name}.base_url")


def price_list(spec: ProviderSpec, settings: Settings) -> PriceList:
    """The provider's prices: its plugin's, with the config's over them, model by model."""
    return PriceList({**spec.prices, **settings.provider(spec.name).prices})


def _api_keys(spec: ProviderSpec, settings: Settings) -> dict[str, str]:
    """The provider's keys, by name: the variable each came from, or ``api_key`` (a key
    given in code; ``api_key[i]`` when there are several). Keys are stripped of the
    spaces and line ends around them, wherever they come from: a server takes them off
    the header it receives, and a key that differed from what it echoes could not be
    masked."""
    own = settings.provider(spec.name)
    if own.api_key:
        if len(own.api_key) == 1:
            return {"api_key": own.api_key[0].get().strip()}
        return {f"api_key[{i}]": key.get().strip() for i, key in enumerate(own.api_key)}
    names = own.api_key_env or ((spec.api_key_env,) if spec.api_key_env else ())
    keys = {env: key for env in names if (key := os.environ.get(env, "").strip())}
    if keys or not spec.key_required:
        return keys
    where = f"set {' or '.join(names)}" if names else f"set providers.{spec.name}.api_key_env"
    raise AuthenticationError(f"no API key for provider {spec.name!r}: {where}", status=401, provider=spec.name)


def _check_headers(headers: Mapping[str, str], what: str) -> None:
    """Refuse header values HTTP cannot carry, before a transport quotes them in an error
    (the value may be a key): printable ASCII only."""
    for name, value in headers.items():
        if not (value.isascii() and value.isprintable()) or not (name.isascii() and name.isprintable()):
            raise ConfigError(f"{what}: header {name!r} has a value HTTP cannot send (non-ASCII or control characters)")


def shared_limiter(middleware: str, backend: str) -> str:
    """The middleware that serves ``middleware``: ``ratelimit`` with a shared backend is
    the plugin's ``ratelimit-BACKEND``. The client checked that it is registered."""
    return f"ratelimit-{backend}" if middleware == "ratelimit" and backend != "local" else middleware


def needed_features(network: NetworkSettings, timeouts: Timeouts) -> dict[str, str]:
    """The transport features that explicit settings need, each with its key."""
    needed: dict[str, str] = {}
    if isinstance(network.proxy, str):
        needed[proxy_feature(network.proxy) or "proxy"] = "proxy"
    if network.cert is not None:
        needed["tls"] = "cert"
    elif network.verify not in (None, True):
        needed["tls"] = "verify"
    for key in ("max_connections", "keepalive_expiry", "http2"):
        if getattr(network, key):
            needed[key] = key
    if timeouts.write != Timeouts().write:
        needed["write_timeout"] = "timeout.write"
    if timeouts.pool is not None:
        needed["pool_timeout"] = "timeout.pool"
    return needed


def check_features(where: str, transport: str, needed: Mapping[str, str], registry: Registry) -> None:
    """Refuse a setting that ``transport`` cannot honour, naming both, and the
    transports that can."""
    supported = registry.transport_features.get(transport, frozenset())
    for feature, key in needed.items():
        if feature not in supported:
            able = sorted(name for name, features in registry.transport_features.items() if feature in features)
            hint = f"; transports that can: {', '.join(able)}" if able else ""
            raise ConfigError(f"{where}.{key}: transport {transport!r} cannot honour {FEATURES[feature]}{hint}")


def _network_options(
    name: str, settings: Settings, registry: Registry, base_url: str, *, launched: bool, keys: int
) -> NetworkOptions:
    """The route's connection settings, the proxy resolved for its base URL (a server
    the provider launched itself on loopback is reached directly). The pool holds as
    many connections as the calls the limits let be in flight: ``max_concurrency`` for
    each of the ``keys``."""
    network = settings.network_of(name)
    limits = settings.limits_of(name)
    needed = needed_features(network, settings.timeouts_of(name))
    proxy, variable = (None, None) if launched else proxy_for(base_url, network.proxy)
    if proxy is not None and variable is not None:
        feature = proxy_feature(proxy)
        if feature is None:
            url = redact_url(proxy)
            raise ConfigError(f"the environment variable {variable} holds an unsupported proxy URL {url!r}")
        transport = settings.transport_of(name)
        check_features(f"providers.{name} (proxy from {variable})", transport, {feature: "proxy"}, registry)
        needed[feature] = "proxy"
    tls = base_url.startswith("https:") or (proxy or "").startswith("https:")
    verify = True if network.verify is None else network.verify
    default_connections = None if limits.per_model or not limits.max_concurrency else limits.max_concurrency * keys
    return NetworkOptions(
        proxy=proxy,
        ssl=ssl_context(verify, network.cert) if tls else None,
        max_connections=network.max_connections or default_connections,
        keepalive_expiry=network.keepalive_expiry,
        http2=bool(network.http2),
        features=frozenset(needed),
    )


def _middleware(
    spec: ProviderSpec, settings: Settings, registry: Registry, chosen: Sequence[MiddlewareChoice] | None
) -> list[Middleware]:
    names: Sequence[MiddlewareChoice] = settings.middleware_of(spec.name) if chosen is None else chosen
    chain: list[Middleware] = []
    for item in names:
        if not isinstance(item, str):
            chain.append(item)
            continue
        if item == "auth":  # named last, where it always is: added by build_route
            continue
        factory = registry.middleware[shared_limiter(item, settings.limits_of(spec.name).backend)]
        with plugin_code(f"middleware {item!r} (making it for provider {spec.name!r})"):
            chain.append(factory(spec, settings))
    return chain


async def build_route(
    name: str, settings: Settings, registry: Registry, middleware: Sequence[MiddlewareChoice] | None = None
) -> Route:
    """Build the route of provider ``name``. ``middleware`` (names or callables,
    outermost first) replaces the configured chain; auth is always added innermost.
    Transport and middleware names must be registered: `AsyncClient` checks them all
    when it is made, with the key path and a "did you mean" in the message."""
    spec = provider_spec(name, settings, registry)
    own = settings.provider(name)
    transport_name = settings.transport_of(name)
    factory = registry.transports[transport_name]  # the client checked every name and setting when it was made
    chain = _middleware(spec, settings, registry, middleware)
    headers = {**spec.headers, **settings.headers_of(name)}
    _check_headers(headers, f"providers.{name}.headers")
    keys = _api_keys(spec, settings)
    auth: dict[str, dict[str, str]] = {}
    for key_name, key in keys.items():
        with plugin_code(f"provider {name!r} (auth)"):
            auth[key_name] = dict(spec.auth(key))
        _check_headers(auth[key_name], f"the API key in {key_name} of provider {name!r}")
    secret = credentials(headers)
    if not auth and secret:
        # Credentials given as headers (a gateway's own scheme), with no key: auth masks
        # them, and says when they are refused, as it does a key.
        auth[f"providers.{name}.headers"], secret = secret, {}
    ring = KeyRing(name, list(auth)) if auth else None
    if ring is not None:
        chain.append(AuthMiddleware(ring, auth, also=secret.values()))  # (beside a key, masked all the same)
    base_url = own.base_url or spec.base_url
    if base_url is None and spec.launch is None:
        raise ConfigError(f"provider {name!r} has no base_url: set providers.{name}.base_url")
    launched = None
    if base_url is None:
        assert spec.launch is not None
        launched = await spec.launch()
        base_url = launched.base_url
    try:
        options = _network_options(
            name, settings, registry, base_url, launched=launched is not None, keys=max(1, len(keys))
        )
        with plugin_code(f"transport {transport_name!r} (making it)"):
            transport = factory(options)
    except BaseException:
        if launched is not None:
            await launched.aclose()
        raise
    prices = price_list(spec, settings)
    endpoint = Endpoint(
        base_url=base_url,
        headers=headers,
        query=settings.query_of(name),
        timeouts=settings.timeouts_of(name),
        provider=name,
    )
    return Route(
        spec=spec,
        transport=transport,
        transport_name=transport_name,
        endpoint=endpoint,
        handle=compose(chain, _terminal(spec, transport, transport_name, prices)),
        middleware=tuple(chain),
        keys=ring,
        launched=launched,
        prices=prices,
        auth=auth,
    )
