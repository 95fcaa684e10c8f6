"""`AsyncClient` and its sync facade `Client`: ``client.chat.completions.create(...)``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import (
    AsyncIterable,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar, overload

from .batch import BatchRun
from .config import Settings, load_settings
from .errors import ConfigError, LLMAdapterError, MalformedResponseError, shown, unknown_name
from .fallback import FALLBACK_ON, ModelChoice, chain_error, models_of
from .plugins import Registry
from .pricing import parse_amount
from .routes import (
    MiddlewareChoice,
    Route,
    build_route,
    check_features,
    needed_features,
    provider_spec,
    shared_limiter,
)
from .streaming import ChatCompletionStream
from .types import (
    ChatCompletion,
    ChatRequest,
    Cost,
    CreateEmbeddingResponse,
    EmbeddingRequest,
    Message,
    Model,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

    from .middleware.base import Reply

__all__ = ["AsyncClient", "ChatCompletionStream", "ClientOptions"]

T = TypeVar("T")
# What `messages` takes: dicts, a reply's `Message`, or anything with a `to_dict` (see `wire_messages`).
Messages = Iterable[Mapping[str, Any] | Message]


class _Completions:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    @overload
    async def create(
        self,
        *,
        messages: Messages,
        model: ModelChoice = ...,
        provider: str | None = ...,
        stream: Literal[False] = ...,
        **params: Any,
    ) -> ChatCompletion: ...

    @overload
    async def create(
        self,
        *,
        messages: Messages,
        model: ModelChoice = ...,
        provider: str | None = ...,
        stream: Literal[True],
        **params: Any,
    ) -> ChatCompletionStream: ...

    @overload
    async def create(
        self, *, messages: Messages, model: ModelChoice = ..., provider: str | None = ..., stream: bool, **params: Any
    ) -> ChatCompletion | ChatCompletionStream: ...

    async def create(
        self,
        *,
        messages: Messages,
        model: ModelChoice = None,
        provider: str | None = None,
        stream: bool = False,
        **params: Any,
    ) -> ChatCompletion | ChatCompletionStream:
        """Call the chat-completions API of the provider named in ``model``.

        ``model="deepseek/deepseek-chat"`` splits on the first ``/`` into provider and
        model; ``provider=`` names the provider explicitly (``model`` is then passed as
        is). ``messages`` takes dicts and the `Message` of a reply alike. Every other
        keyword (``temperature``, ``tools``, ``stream_options``, ...) goes into the
        request body unchanged, except the openai SDK's per-call options, which mean what
        they mean there: ``extra_headers`` and ``extra_query`` (headers and query
        parameters of this call, over the configured ones), ``extra_body`` (fields merged
        into the body, over the keywords) and ``timeout`` (seconds for each of connect,
        read, write and pool, or a dict of some of them, or an ``httpx.Timeout``). With
        ``stream=True`` the call returns once the first chunk has arrived, so status
        errors raise here, not while iterating.

        A list of models is a fallback chain: each is tried, with its own route's
        retries and limits, until one answers; ``reply.provider`` and ``reply.model``
        say which did. A model whose call fails for good (retries exhausted, or an
        error not worth retrying) passes the call on to the next. When all fail, the
        last one's error is raised, its message naming each model's failure (see
        `llmadapters.fallback`). Configuration errors are raised at once.
        """
        client = self._client  # (not a bound method: that would be one more object held per call)
        chain = models_of(model)
        if len(chain) == 1:
            reply = await client.send(messages=messages, model=chain[0], provider=provider, stream=stream, **params)
            return _chat_reply(reply)
        failures: list[tuple[str | None, LLMAdapterError]] = []
        for candidate in chain:
            try:
                reply = await client.send(
                    messages=messages, model=candidate, provider=provider, stream=stream, **params
                )
            except FALLBACK_ON as exc:
                failures.append((candidate, exc))
            else:
                return _chat_reply(reply)
        raise chain_error(failures)


class _Chat:
    def __init__(self, client: AsyncClient) -> None:
        self.completions = _Completions(client)


class _Embeddings:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        *,
        input: str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]],
        model: str | None = None,
        provider: str | None = None,
        dimensions: int | None = None,
        encoding_format: Literal["float", "base64"] | None = None,
        **params: Any,
    ) -> CreateEmbeddingResponse:
        """Call the embeddings API of the provider named in ``model``, as the openai
        SDK's ``embeddings.create``: ``input`` is a string or a list of strings (or
        token ids), ``dimensions`` shortens the vectors where the model allows it.
        Without ``encoding_format`` the vectors travel as base64 (where the provider
        takes it) and come back decoded to floats; ``"float"`` or ``"base64"`` asks for
        that, and the vectors are left as sent. ``model="zhipu"`` (a provider alone)
        takes the first embedding model its plugin lists. Other keywords and the
        per-call options (``extra_headers``, ``extra_body``, ...) are as in
        ``chat.completions.create``. Retries, rate limits (counting the input's tokens),
        timeouts, logging and the cache apply as to a chat call.
        """
        if dimensions is not None:
            params["dimensions"] = dimensions
        request = self._client.embedding_request(
            input=input, model=model, provider=provider, encoding_format=encoding_format, **params
        )
        reply = await self._client.call(request)
        assert isinstance(reply, CreateEmbeddingResponse)
        return reply


class _Models:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(self, provider: str | None = None) -> list[Model]:
        """The models ``provider`` lists (``GET /models``; the default model's provider
        when None), as the openai SDK's ``models.list()``, but whole, not a page.
        `ConfigError` for a provider that has no such endpoint (``ProviderSpec.models_path``).
        Sent beside the middleware chain, with the provider's first key: no retry, no
        rate limit."""
        client = self._client
        if provider is None:
            default = client.settings.model
            if default is None:
                raise ConfigError("no provider given, and no default model (defaults.model) to take it from")
            provider = default.partition("/")[0]
        spec = provider_spec(provider, client.settings, client.registry)
        path = spec.models_path
        if path is None:
            raise ConfigError(f"provider {provider!r} lists no models that llmadapters knows of (no models endpoint)")
        route = await client.route(provider)
        from .provider_http import ProviderHTTP  # httpx2, imported when models are listed

        http = ProviderHTTP(route)
        try:
            page = await http.json("GET", path)
        finally:
            await http.aclose()
        data = page.get("data")
        if not isinstance(data, list):
            raise MalformedResponseError(
                f"GET {path} of {provider} answered no list of models: {shown(data)}", body=page
            )
        return [Model.from_dict(item, provider=provider) for item in data if isinstance(item, Mapping)]


Config = str | os.PathLike[str] | Mapping[str, Any] | None


class ClientOptions(TypedDict, total=False):
    """The keyword arguments of `AsyncClient` and `Client` (documented on `AsyncClient`)."""

    model: str | None
    transport: str | None
    timeout: float | Mapping[str, float] | None
    retry: Mapping[str, Any] | None
    limits: Mapping[str, Any] | None
    headers: Mapping[str, str] | None
    query: Mapping[str, str] | None
    proxy: str | bool | None
    verify: bool | str | None
    cert: str | Mapping[str, str] | None
    max_connections: int | None
    keepalive_expiry: float | None
    http2: bool | None
    providers: Mapping[str, Mapping[str, Any]] | None
    middleware: Sequence[MiddlewareChoice] | None
    registry: Registry | None


_NOT_SETTINGS = ("middleware", "registry")


class AsyncClient:
    """Calls any configured provider; routes are built on first use and cached.

    Args:
        config: a TOML file path or a dict shaped like one (see `llmadapters.config`);
            None reads ``$LLMADAPTERS_CONFIG`` or ``./llmadapters.toml`` when present.
        model: the default ``"provider/model"``.
        transport: the default transport (``"httpx"`` or ``"openai"``).
        timeout: default per-attempt timeout in seconds, or a dict of connect/read/write/pool/
            total/first_token.
        retry: the default retry policy, e.g. ``{"max_attempts": 6, "deadline": 600}``.
        limits: the default limits of each provider, e.g. ``{"rpm": 1000, "max_concurrency": 64}``.
        headers, query: extra headers and query parameters of every request.
        proxy, verify, cert, max_connections, keepalive_expiry, http2: the default
            connection settings of every provider, as in ``[defaults]``: e.g.
            ``proxy="http://proxy.corp:3128"``, ``verify="corp-ca.pem"``.
        providers: per-provider settings, e.g. ``{"local": {"base_url": ..., "transport": "openai"}}``.
        middleware: the middleware of every route, outermost first: names (``"logging"``,
            ``"retry"``, ``"timeout"``, a plugin's) or your own async callables
            ``(call, call_next) -> reply``; replaces the configured chain. ``[]`` for none.
            Auth is always added innermost.
        registry: the providers, transports and middleware to choose from; by default the
            built-ins and the installed plugins (`Registry.load`).

    Use ``async with AsyncClient() as client:`` or call `aclose`.
    """

    def __init__(self, config: Config = None, **options: Unpack[ClientOptions]) -> None:
        unknown = sorted(set(options) - set(ClientOptions.__annotations__))
        if unknown:
            raise TypeError(f"AsyncClient() got unexpected keyword arguments: {', '.join(unknown)}")
        settings = {key: value for key, value in options.items() if key not in _NOT_SETTINGS}
        self.settings: Settings = load_settings(config, **settings)
        middleware = options.get("middleware")
        self.registry = options.get("registry") or Registry.load(allow=self.settings.plugins)
        self._middleware = None if middleware is None else tuple(middleware)
        self._check()
        self._routes: dict[str, Route] = {}
        self._route_lock: asyncio.Lock | None = None
        self._closed = False
        self.chat = _Chat(self)
        self.embeddings = _Embeddings(self)
        self.models = _Models(self)

    def _check(self) -> None:
        """Fail now, not at the first call: on names nobody registered, and on key
        variables named in the settings but not set; every such mistake at once, each
        message naming the source and key."""
        problems = list(self._problems())
        if problems:
            source = " + ".join(self.settings.sources)
            raise ConfigError("\n".join(f"{source}: {p}" if source else p for p in problems))

    def _middleware_problems(self, where: str, names: Sequence[str]) -> Iterator[str]:
        """Names no plugin registers; ``auth`` anywhere but last (it is always innermost)."""
        for i, name in enumerate(names):
            if name == "auth":
                if i != len(names) - 1:
                    yield (
                        f"{where}: 'auth' is always the innermost middleware: put it last, or leave it "
                        "out (it is added whenever the provider has a key)"
                    )
            elif name not in self.registry.middleware:
                yield str(unknown_name(where, "middleware", name, [*self.registry.middleware, "auth"]))

    def _problems(self) -> Iterator[str]:
        """The mistakes of the settings, checked against the registry."""
        settings, registry = self.settings, self.registry
        places: list[tuple[str, str | None, tuple[str, ...] | None]] = [
            ("defaults", settings.transport, settings.middleware)
        ]
        places += [(f"providers.{n}", p.transport, p.middleware) for n, p in settings.providers.items()]
        for where, transport, middleware in places:
            if transport is not None and transport not in registry.transports:
                yield str(unknown_name(f"{where}.transport", "transport", transport, registry.transports))
            yield from self._middleware_problems(f"{where}.middleware", middleware or ())
        if self._middleware is not None:
            yield from self._middleware_problems("middleware", [m for m in self._middleware if isinstance(m, str)])
        yield from _raised(self._check_default_model)
        needed = needed_features(settings.network, settings.timeouts)
        yield from _raised(check_features, "defaults", settings.transport, needed, registry)
        for name, provider in settings.providers.items():
            if name not in registry.providers and provider.base_url is None:
                error = unknown_name(f"providers.{name}", "provider", name, registry.providers)
                yield f"{error}; or give it a base_url"
            unset = [env for env in provider.api_key_env or () if not os.environ.get(env, "").strip()]
            if unset and provider.api_key is None:
                which = f"the variable {unset[0]} is" if len(unset) == 1 else f"the variables {', '.join(unset)} are"
                yield f"providers.{name}.api_key_env: {which} not set"
            needed = needed_features(settings.network_of(name), settings.timeouts_of(name))
            yield from _raised(check_features, f"providers.{name}", settings.transport_of(name), needed, registry)
        limits = [("defaults", settings.limits)]
        limits += [(f"providers.{n}", p.limits) for n, p in settings.providers.items() if p.limits is not None]
        for where, limit in limits:
            if shared_limiter("ratelimit", limit.backend) not in registry.middleware:
                yield (
                    f"{where}.limits.backend: no plugin provides the rate limit backend {limit.backend!r} "
                    f"(middleware 'ratelimit-{limit.backend}'); for redis, pip install llmadapters-redis"
                )

    def _check_default_model(self) -> None:
        """defaults.model, when set, names a provider that is registered or configured."""
        model = self.settings.model
        if model is None:
            return
        try:
            self._resolve(model, None)
        except ValueError as exc:
            raise ConfigError(f"defaults.model: {exc}") from None
        provider = model.partition("/")[0]
        if not self._known(provider):
            error = unknown_name(f"defaults.model: {shown(model)}", "provider", provider, self.registry.providers)
            raise ConfigError(f"{error}; for any OpenAI-compatible server, set providers.{provider}.base_url")

    def __repr__(self) -> str:
        return f"AsyncClient(transport={self.settings.transport!r}, routes={sorted(self._routes)})"

    def request(
        self,
        *,
        messages: Messages,
        model: str | None = None,
        provider: str | None = None,
        stream: bool = False,
        **params: Any,
    ) -> ChatRequest:
        """Resolve provider and model names into a `ChatRequest`, without sending it."""
        name, model_name = self._provider_and_model(model, provider)
        if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Iterable):
            alone = " (one message is a list of one)" if isinstance(messages, Mapping) else ""
            raise TypeError(
                f"messages must be a list of message dicts, e.g. [{{'role': 'user', 'content': 'hi'}}]{alone}"
            )
        options = _call_options(params)
        return ChatRequest(provider=name, model=model_name, messages=messages, params=params, stream=stream, **options)

    def embedding_request(
        self,
        *,
        input: object,
        model: str | None = None,
        provider: str | None = None,
        encoding_format: str | None = None,
        **params: Any,
    ) -> EmbeddingRequest:
        """Resolve provider and model names into an `EmbeddingRequest`, without sending it."""
        name, model_name = self._provider_and_model(model, provider, embeddings=True)
        options = _call_options(params)
        return EmbeddingRequest(
            provider=name, model=model_name, input=input, params=params, encoding_format=encoding_format, **options
        )

    def _provider_and_model(
        self, model: str | None, provider: str | None, *, embeddings: bool = False
    ) -> tuple[str, str]:
        if model is not None and not isinstance(model, str):
            raise TypeError(f"model must be a 'provider/model' string, got {shown(model)}")
        if provider is not None and (not isinstance(provider, str) or not provider):
            raise TypeError(f"provider must be a provider's name, got {shown(provider)}")
        name, model_name = self._resolve(model, provider, embeddings=embeddings)
        if name not in self._routes and not self._known(name):
            where = f"model {shown(model or self.settings.model)}" if provider is None else "provider"
            error = unknown_name(where, "provider", name, self.registry.providers)
            raise ConfigError(f"{error}; for any OpenAI-compatible server, set providers.{name}.base_url")
        return name, model_name

    def _known(self, provider: str) -> bool:
        """Whether ``provider`` is registered, or configured with a base_url (ad hoc)."""
        return provider in self.registry.providers or bool(self.settings.provider(provider).base_url)

    # send and call hand back the chain's awaitable instead of awaiting it in a
    # coroutine of their own: each coroutine frame between a call's task and the
    # transport is stepped through again every time the task resumes.

    def send(
        self,
        *,
        messages: Messages,
        model: str | None = None,
        provider: str | None = None,
        stream: bool = False,
        **params: Any,
    ) -> Awaitable[Reply]:
        """Make one call to one model through its route (what ``create`` does per model,
        before it keeps a stream's chunks for ``get_final_completion``)."""
        return self.call(self.request(messages=messages, model=model, provider=provider, stream=stream, **params))

    def call(
        self,
        request: ChatRequest | EmbeddingRequest,
        *,
        idempotency_key: str | None = None,
        defer_rate_limits: bool = False,
    ) -> Awaitable[Reply]:
        """Send one request, made by `request` or `embedding_request`, through its
        route: ``await client.call(request)``.

        ``idempotency_key``: the ``Idempotency-Key`` header of every attempt (a fresh
        one by default): give the same to a request sent again, so that a provider that
        honours it does not do the work twice. ``defer_rate_limits``: raise a 429 at
        once instead of waiting to retry it, so that the caller can put the request
        aside and send it again later (the batch engine does). The attempts the call
        took are ``reply.http.attempts``, or the error's ``attempts``.
        """
        route = self._routes.get(request.provider)
        if route is None:
            return self._call_on_new_route(request, idempotency_key, defer_rate_limits)
        return route.handle(route.call(request, idempotency_key=idempotency_key, defer_rate_limits=defer_rate_limits))

    async def _call_on_new_route(
        self, request: ChatRequest | EmbeddingRequest, idempotency_key: str | None, defer_rate_limits: bool
    ) -> Reply:
        route = await self.route(request.provider)
        return await route.handle(
            route.call(request, idempotency_key=idempotency_key, defer_rate_limits=defer_rate_limits)
        )

    def _resolve(self, model: str | None, provider: str | None, *, embeddings: bool = False) -> tuple[str, str]:
        if embeddings and not model and not provider and self.settings.model:
            provider = self.settings.model.partition("/")[0]  # the default model is a chat model
        model = model or (None if provider else self.settings.model)
        if provider is None:
            if model is None:
                raise ValueError("no model given and no default model configured (defaults.model)")
            head, sep, tail = model.partition("/")
            if sep:
                provider, model = head, tail
            elif model in self.registry.providers or model in self.settings.providers:
                provider, model = model, None
            elif self.settings.model and "/" in self.settings.model:
                provider = self.settings.model.partition("/")[0]
            else:
                raise ValueError(f"model {shown(model)} names no provider: write 'provider/model' or pass provider=")
        if not model:
            if embeddings:
                return provider, self._default_embedding_model(provider)
            model = self.settings.provider(provider).model or self._default_model(provider)
        return provider, model

    def _default_embedding_model(self, provider: str) -> str:
        spec = self.registry.providers.get(provider)
        if spec is None or spec.embeddings is None or not spec.embeddings.models:
            raise ValueError(f"no model given for provider {shown(provider)} and it lists no embedding model")
        return spec.embeddings.models[0]

    def _default_model(self, provider: str) -> str:
        spec = self.registry.providers.get(provider)
        if spec is None or spec.default_model is None:
            raise ValueError(f"no model given for provider {shown(provider)} and it has no default model")
        return spec.default_model

    async def route(self, provider: str) -> Route:
        """The cached route of ``provider``, built on first use."""
        route = self._routes.get(provider)
        if route is not None:
            return route
        if self._closed:
            raise RuntimeError("the client is closed")
        if self._route_lock is None:
            self._route_lock = asyncio.Lock()
        async with self._route_lock:
            route = self._routes.get(provider)
            if route is None:
                route = await build_route(provider, self.settings, self.registry, self._middleware)
                self._routes[provider] = route
        return route

    def batch(
        self,
        requests: Iterable[object] | AsyncIterable[object],
        *,
        concurrency: int = 64,
        model: str | None = None,
        line_deadline: float = 3600.0,
        max_cost: Cost | str | float | None = None,
        embed_chunk: int | None = None,
    ) -> BatchRun:
        """Answer many requests: ``async for result in client.batch(requests)``.

        ``requests`` is any iterable or async iterable, read lazily, of OpenAI Batch API
        lines (``{"custom_id", "method", "url", "body"}``) or plain chat-completions
        bodies (``{"model", "messages", ...}``), or embeddings requests (``"url":
        "/v1/embeddings"``, or ``{"model", "input", ...}``), mixed as they come; ``model``
        is used where a request names none. An embeddings input of more than
        ``embed_chunk`` items (by default the provider's documented ``max_inputs``) is
        sent as requests of that many, in turn, joined into one result. Each provider
        gets ``concurrency`` calls in flight at most, within its
        route's limits, retries and timeouts; results come as they complete, one per
        request, in `BatchResult`s. A request answered 429 is put aside and sent again
        (after its ``Retry-After``) until ``line_deadline`` seconds have passed since
        its first attempt, without holding a place among the ``concurrency``. With
        ``max_cost`` (``5``, ``"30 CNY"``; by default the config's ``max_cost``), no
        call starts once the spent and in-flight cost would pass it (`llmadapters.spend`).
        See `llmadapters.batch`.
        """
        budget = self.settings.max_cost if max_cost is None else parse_amount(max_cost)
        return BatchRun(
            self,
            requests,
            concurrency=concurrency,
            model=model,
            line_deadline=line_deadline,
            max_cost=budget,
            embed_chunk=embed_chunk,
        )

    def limits(self) -> dict[str, dict[str, Any]]:
        """Per provider with a route, what its rate limiter has learned and met
        (`RateLimitMiddleware.stats`): the concurrency, rpm and tpm in force, 429s, and
        seconds spent waiting on the limits; and under ``"retired_keys"``, the API keys
        it refused for good (by variable name) and why."""
        found: dict[str, dict[str, Any]] = {}
        for name, route in self._routes.items():
            for middleware in route.middleware:
                stats = getattr(middleware, "stats", None)
                if callable(stats):
                    found[name] = stats()
            retired = route.keys.retired() if route.keys is not None else {}
            if retired:
                found.setdefault(name, {})["retired_keys"] = retired
        return found

    async def aclose(self) -> None:
        """Close every route (its connections, its launched server); idempotent."""
        self._closed = True
        routes, self._routes = self._routes, {}
        results = [await _capture(route.aclose()) for route in routes.values()]
        for error in results:
            if error is not None:
                raise error

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


_CALL_OPTIONS = frozenset({"extra_headers", "extra_query", "timeout", "extra_body"})


def _chat_reply(reply: Reply) -> ChatCompletion | ChatCompletionStream:
    """What ``create`` returns: the reply, a stream keeping its chunks for
    ``get_final_completion``."""
    assert not isinstance(reply, CreateEmbeddingResponse)
    return reply.keep_chunks() if isinstance(reply, ChatCompletionStream) else reply


def _call_options(params: dict[str, Any]) -> dict[str, Any]:
    """Take the openai SDK's per-call options out of ``params``: ``extra_headers``,
    ``extra_query`` and ``timeout`` are returned, ``extra_body`` merged into ``params``."""
    if _CALL_OPTIONS.isdisjoint(params):  # most calls: the request's defaults
        return {}
    options = {key: params.pop(key, None) for key in ("extra_headers", "extra_query", "timeout")}
    extra_body = params.pop("extra_body", None) or {}
    if not isinstance(extra_body, Mapping):
        raise TypeError(f"extra_body must be a dict of body fields, got {type(extra_body).__name__}")
    params.update(extra_body)
    return options


def _raised(check: Callable[..., None], *args: Any) -> list[str]:
    """The message of the `ConfigError` that ``check(*args)`` raises, if any."""
    try:
        check(*args)
    except ConfigError as exc:
        return [str(exc)]
    return []


async def _capture(awaitable: Awaitable[None]) -> BaseException | None:
    try:
        await awaitable
    except Exception as exc:
        return exc
    return None
