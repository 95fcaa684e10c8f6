"""Configuration: TOML file, dict or keyword arguments -> validated `Settings`.

Where settings come from, later ones winning: the file (``config=`` path, else
``$LLMADAPTERS_CONFIG``, else ``./llmadapters.toml`` when present), then a dict given as
``config=``, then keyword arguments of the client. A bad value fails here, at load, with
its source, its key path and what is allowed.

API keys never live in config files: ``api_key_env`` names the variable that holds one.
Code may pass ``api_key`` directly; it is kept in a `Secret`.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import sys
import urllib.parse
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import attrs

from .errors import ConfigError
from .policies import CacheSettings, Limits, RetryPolicy, Timeouts
from .pricing import WEEKDAYS, ModelPrice, Price, PriceWindow, parse_amount
from .transports.base import redacted_repr
from .transports.network import PROXY_SCHEMES, ClientCertificate, redact_url

if TYPE_CHECKING:
    from .types import Cost

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "DEFAULT_MIDDLEWARE",
    "DEFAULT_TRANSPORT",
    "SCHEMA",
    "NetworkSettings",
    "ProviderSettings",
    "Secret",
    "Settings",
    "load_settings",
]

DEFAULT_TRANSPORT = "httpx"
# Outermost first; auth is always added innermost.
DEFAULT_MIDDLEWARE = ("logging", "retry", "ratelimit", "timeout")
CONFIG_ENV = "LLMADAPTERS_CONFIG"
DEFAULT_CONFIG_FILE = "llmadapters.toml"


@attrs.frozen
class Secret:
    """Holds an API key; its repr and str never show it."""

    _value: str = attrs.field(repr=False)

    def get(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "Secret('**********')"


def _proxy_repr(proxy: str | bool | None) -> str:
    return repr(redact_url(proxy)) if isinstance(proxy, str) else repr(proxy)


@attrs.frozen(kw_only=True)
class NetworkSettings:
    """The connection keys of ``[defaults]`` or of one ``[providers.NAME]``; None
    where that table does not set them.

    Attributes:
        proxy: a proxy URL (credentials hidden in repr), False for none, or None/True for
            the environment's (``https_proxy``, ``http_proxy``, ``all_proxy``, ``no_proxy``).
        verify: True (the system's CAs), False, or a CA bundle's path.
        cert: a client certificate.
        max_connections: connections open at most.
        keepalive_expiry: seconds an idle connection is kept open.
        http2: negotiate HTTP/2.
    """

    proxy: str | bool | None = attrs.field(default=None, repr=_proxy_repr)
    verify: bool | str | None = None
    cert: ClientCertificate | None = None
    max_connections: int | None = None
    keepalive_expiry: float | None = None
    http2: bool | None = None

    def over(self, base: NetworkSettings) -> NetworkSettings:
        """These settings, with ``base``'s where these are not set."""
        mine = attrs.asdict(self, recurse=False)
        return attrs.evolve(base, **{key: value for key, value in mine.items() if value is not None})


@attrs.frozen(kw_only=True)
class ProviderSettings:
    """One ``[providers.NAME]`` table.

    Attributes:
        base_url: overrides the provider's own; for an unknown name it makes an ad hoc
            OpenAI-compatible provider.
        api_key_env: the variables holding the provider's keys (overrides the
            provider's own; a string in a file is one variable, a list several keys,
            each with rate-limit budgets of its own).
        api_key: keys given in code (never read from a file).
        transport: ``"httpx"``, ``"openai"``, or a plugin's.
        model: the model used when a call names only the provider.
        headers: extra headers for every request (over ``[defaults]``' ones).
        query: extra query parameters for every request (over ``[defaults]``' ones).
        timeouts: per-attempt timeouts.
        middleware: the middleware names, outermost first (auth is added innermost).
        retry: the retry middleware's policy.
        limits: the ratelimit middleware's limits.
        network: proxy, TLS and connection settings (over ``[defaults]``' ones).
        prices: model prices, by model name, over the provider plugin's.
    """

    base_url: str | None = None
    api_key_env: tuple[str, ...] | None = None
    api_key: tuple[Secret, ...] | None = None
    transport: str | None = None
    model: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=redacted_repr)
    query: Mapping[str, str] = attrs.field(factory=dict)
    timeouts: Timeouts | None = None
    middleware: tuple[str, ...] | None = None
    retry: RetryPolicy | None = None
    limits: Limits | None = None
    network: NetworkSettings = attrs.field(factory=NetworkSettings)
    prices: Mapping[str, ModelPrice] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Settings:
    """A client's settings, from its config file, dict and keywords; a middleware factory's
    second argument. The ``*_of(name)`` methods (``limits_of``, ``retry_of``,
    ``timeouts_of``, ``headers_of``, ``query_of``, ``network_of``, ``middleware_of``)
    give one provider's: its own ``[providers.NAME]`` value, else the default.

    Attributes:
        model: the default ``"provider/model"`` when a call names none.
        transport: the default transport of every provider.
        timeouts: the default per-attempt timeouts.
        middleware: the default middleware names, outermost first.
        retry: the default retry policy.
        limits: the default rate limits (each provider gets its own budget of them).
        cache: the response cache's settings, for the ``cache`` middleware.
        headers: extra headers for every provider's requests.
        query: extra query parameters for every provider's requests.
        network: the default proxy, TLS and connection settings.
        plugins: the installed plugins to load, by entry-point name; None for all.
        max_cost: a batch's budget (``llmadapters batch`` stops sending before passing it).
        providers: per-provider settings, by provider name.
        sources: where the settings came from, for messages.
    """

    model: str | None = None
    transport: str = DEFAULT_TRANSPORT
    timeouts: Timeouts = attrs.field(factory=Timeouts)
    middleware: tuple[str, ...] = DEFAULT_MIDDLEWARE
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    limits: Limits = attrs.field(factory=Limits)
    cache: CacheSettings = attrs.field(factory=CacheSettings)
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=redacted_repr)
    query: Mapping[str, str] = attrs.field(factory=dict)
    network: NetworkSettings = attrs.field(factory=NetworkSettings)
    plugins: tuple[str, ...] | None = None
    max_cost: Cost | None = None
    providers: Mapping[str, ProviderSettings] = attrs.field(factory=dict)
    sources: tuple[str, ...] = ()

    def provider(self, name: str) -> ProviderSettings:
        return self.providers.get(name) or ProviderSettings()

    def transport_of(self, name: str) -> str:
        return self.provider(name).transport or self.transport

    def timeouts_of(self, name: str) -> Timeouts:
        return self.provider(name).timeouts or self.timeouts

    def middleware_of(self, name: str) -> tuple[str, ...]:
        own = self.provider(name).middleware
        return self.middleware if own is None else own

    def retry_of(self, name: str) -> RetryPolicy:
        return self.provider(name).retry or self.retry

    def limits_of(self, name: str) -> Limits:
        return self.provider(name).limits or self.limits

    def headers_of(self, name: str) -> dict[str, str]:
        return {**self.headers, **self.provider(name).headers}

    def query_of(self, name: str) -> dict[str, str]:
        return {**self.query, **self.provider(name).query}

    def network_of(self, name: str) -> NetworkSettings:
        return self.provider(name).network.over(self.network)


# The connection keys, the same in [defaults] and [providers.NAME].
_NETWORK_SCHEMA = {
    "proxy": 'a proxy URL: "http://", "https://" or "socks5://", credentials allowed (hidden in logs and '
    "errors); false for none; by default the environment's https_proxy/http_proxy/all_proxy, except for "
    "hosts in no_proxy",
    "verify": "check the server's TLS certificate: true (the system's CAs, default), false, or a CA bundle "
    "(a file or directory; relative to the config file)",
    "cert": "a client certificate: a PEM file with the certificate and key, or a [cert] table",
    "max_connections": "connections open at most (default: limits.max_concurrency when set, "
    "else the transport's, about 1,000)",
    "keepalive_expiry": "seconds an idle connection is kept open (default: the transport's)",
    "http2": "negotiate HTTP/2 over TLS (default false; the httpx and openai transports, "
    "with the h2 package: pip install 'llmadapters[http2]')",
}

# The schema: every key the loader accepts, with what it means. The loader's allow-lists
# and the documentation's configuration reference are both made from these tables.
SCHEMA: Mapping[str, Mapping[str, str]] = {
    "defaults": {
        "model": 'the "provider/model" used when a call names none',
        "transport": '"httpx" (default), "openai", or a plugin\'s',
        "timeout": "seconds (connect, read, write and pool each), or a [timeout] table",
        "middleware": 'middleware names, outermost first (default ["logging", "retry", "ratelimit", "timeout"]); '
        "auth is always added innermost",
        "retry": "the retry policy: a [retry] table",
        "limits": "each provider's rate limits: a [limits] table",
        "cache": "the response cache's settings (the cache middleware, when named): a [cache] table",
        "plugins": "the installed plugins to load, by entry-point name (default: all)",
        "headers": "extra headers sent with every request to any provider, a table of strings",
        "query": "extra query parameters sent with every request, a table of strings (e.g. api-version)",
        "max_cost": 'a batch\'s budget: an amount, in USD by default ("30 CNY" for another currency); '
        "llmadapters batch stops sending new calls before the spent and in-flight cost would pass it",
        **_NETWORK_SCHEMA,
    },
    "providers.NAME": {
        "base_url": "the API root, e.g. https://api.deepseek.com; for a name no plugin registers, "
        "makes an ad hoc OpenAI-compatible provider",
        "api_key_env": (
            "the environment variable holding the key, or a list of them for several keys "
            "(keys never live in config files)"
        ),
        "transport": "overrides defaults.transport",
        "model": 'the model used when a call names only the provider ("deepseek")',
        "headers": "extra headers sent with every request, a table of strings (over defaults.headers)",
        "query": "extra query parameters sent with every request (over defaults.query)",
        "timeout": "overrides defaults.timeout",
        "middleware": "overrides defaults.middleware",
        "retry": "overrides defaults.retry",
        "limits": "overrides defaults.limits",
        "prices": "model prices per million tokens, over the plugin's: a [prices.MODEL] table each",
        **{key: f"overrides defaults.{key}" for key in _NETWORK_SCHEMA},
    },
    "prices.MODEL": {
        "input": "a prompt token (cache miss), per million tokens",
        "output": "a completion token, per million tokens",
        "cached_input": "a prompt token served from the cache (default: input)",
        "reasoning": "a reasoning token, where billed unlike output (default: output)",
        "currency": 'an ISO 4217 code (default "USD")',
        "windows": "hours of the week with other prices: a list of tables with start and end "
        '("HH:MM", UTC, same day), weekdays (e.g. ["mon", "fri"], default all) and the price keys above',
    },
    "timeout": {
        "connect": "seconds to establish a connection (default 5)",
        "read": "seconds between two reads of the response; bounds a stalled stream (default 600)",
        "write": "seconds between two writes of the request (default 600)",
        "pool": "seconds to wait for a free connection (default: no limit)",
        "total": "seconds for a whole attempt, a stream's last chunk included (default: no limit)",
        "first_token": "seconds until a stream's first chunk or a unary reply (default: no limit)",
    },
    "retry": {
        "max_attempts": "attempts in all, the first included (default 3)",
        "deadline": "seconds from the first attempt after which none starts (default: no limit)",
        "initial_delay": "the first backoff, in seconds (default 0.5)",
        "max_delay": "the longest backoff, in seconds (default 8)",
        "max_retry_after": "the longest Retry-After honoured, in seconds; longer ones fail at once (default 120)",
    },
    "limits": {
        "max_concurrency": "calls in flight at most (default: no limit)",
        "rpm": "requests per minute (default: no limit)",
        "tpm": "tokens per minute, prompt and completion (default: no limit)",
        "adaptive": "learn the limits from the replies: rpm/tpm from x-ratelimit-* headers, the concurrency "
        "from 429s; configured limits stay an upper bound (default true)",
        "per_model": "separate budgets per model instead of one for the provider (default false)",
        "account": "a name for an account whose limits several providers share: providers giving the same name "
        "share one budget, on the limits of the first to make a call (default: none)",
        "backend": 'where the budgets live: "local" for this process, or a shared backend that a plugin adds, '
        'such as "redis" (llmadapters-redis), for every process that uses it (default "local")',
        "url": "the shared backend's address, e.g. redis://127.0.0.1:6379/0 (default: none)",
        "fail_closed": "when the shared backend is unreachable, fail calls instead of falling back to "
        "local budgets (default false)",
        "lease": "seconds a shared concurrency permit outlives a process that died holding it (default 10)",
    },
    "cache": {
        "path": "the SQLite file of the cache (default $XDG_CACHE_HOME/llmadapters/responses.sqlite)",
        "max_size": "bytes of stored replies at most; the least recently used go first (default 1 GiB)",
        "expire": "seconds after which a stored reply is not used (default: never)",
        "nondeterministic": "also cache requests that sample: temperature above 0 and no seed (default false)",
    },
    "cert": {
        "cert": "PEM file with the client certificate (and its key, when key is not given)",
        "key": "PEM file with the private key",
        "password_env": "the environment variable holding the key's password",
    },
}

_TOP_KEYS = ("defaults", "providers")
_DEFAULT_KEYS = tuple(SCHEMA["defaults"])
_PROVIDER_KEYS = tuple(SCHEMA["providers.NAME"])
_LIMIT_KEYS = tuple(SCHEMA["limits"])
_TIMEOUT_KEYS = tuple(SCHEMA["timeout"])
_RETRY_KEYS = tuple(SCHEMA["retry"])
_CERT_KEYS = tuple(SCHEMA["cert"])
_CACHE_KEYS = tuple(SCHEMA["cache"])
_PRICE_KEYS = tuple(SCHEMA["prices.MODEL"])
_FIGURES = ("input", "output", "cached_input", "reasoning")


P = ParamSpec("P")
T = TypeVar("T")


def _per_key(check: Callable[Concatenate[_Reader, P], T]) -> Callable[Concatenate[_Reader, P], T | None]:
    """A check of one key's value. Called by a table's reader, it notes its problem in
    ``problems`` and gives None, so that every mistake of a source is reported at once;
    called by another check, it raises to that one, which notes it."""

    @functools.wraps(check)
    def checked(self: _Reader, /, *args: P.args, **kwargs: P.kwargs) -> T | None:
        if self.checking:
            return check(self, *args, **kwargs)
        self.checking = True
        try:
            return check(self, *args, **kwargs)
        except ConfigError as exc:
            self.problems.append(str(exc))
            return None
        finally:
            self.checking = False

    return checked


class _Reader:
    """Validates one source's dict, naming the source and key path in every error, and
    reporting every mistake of the source in one `ConfigError`, one line each."""

    def __init__(self, source: str, *, from_file: bool, base_dir: Path | None = None) -> None:
        self.source = source
        self.from_file = from_file
        self.base_dir = base_dir  # where relative paths start; the working directory if None
        self.problems: list[str] = []
        self.checking = False  # inside a `_per_key` check

    def fail(self, path: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: {path}: {problem}")

    def table(self, value: object, path: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
        """``value``'s known keys; each unknown one is noted in ``problems``."""
        if not isinstance(value, Mapping):
            raise self.fail(path or "<top level>", f"expected a table, got {type(value).__name__}")
        for key in value:
            if key not in allowed:
                hint = ""
                if key == "api_key" and self.from_file:
                    hint = " (keys never live in config files: set api_key_env to the name of a variable)"
                where = f"{path}.{key}" if path else str(key)
                self.problems.append(str(self.fail(where, f"unknown key{hint}; allowed: {', '.join(allowed)}")))
        return {key: item for key, item in value.items() if key in allowed}

    @_per_key
    def string(self, value: object, path: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"expected a non-empty string, got {value!r}")
        return value

    @_per_key
    def key_variables(self, value: object, path: str) -> tuple[str, ...] | None:
        """One variable's name, or a list of them (several keys of one provider)."""
        if isinstance(value, str):
            value = [value]
        names = self.names(value, path)
        if names is not None and len(set(names)) < len(names):
            raise self.fail(path, f"a variable is named twice in {list(names)!r}")
        if names == ():
            raise self.fail(path, "expected a variable's name or a non-empty list of them, got []")
        return names

    @_per_key
    def url(self, value: object, path: str) -> str | None:
        url = self.string(value, path)
        return None if url is None else self._checked_url(url, path, ("http", "https"), "URL")

    def _checked_url(self, url: str, path: str, schemes: Collection[str], what: str) -> str:
        """``url``, if it parses, has one of ``schemes`` and a host, and is printable
        ASCII; the error shows it with any credentials hidden."""
        problem = None
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError when out of range
        except ValueError as exc:
            problem = str(exc)
        else:
            if parts.scheme.lower() not in schemes or not parts.hostname:
                problem = f"expected {' or '.join(f'{s}://' for s in schemes)} URL with a host"
        if problem is None and not (url.isascii() and url.isprintable() and " " not in url):
            problem = "spaces or control characters"
        if problem is not None:
            raise self.fail(path, f"invalid {what} {redact_url(url)!r}: {problem}")
        return url

    @_per_key
    def timeouts(self, value: object, path: str) -> Timeouts | None:
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = self._seconds(value, path)
            return Timeouts(connect=seconds, read=seconds, write=seconds, pool=seconds)
        if not isinstance(value, Mapping):
            raise self.fail(path, f"expected seconds or a table of {', '.join(_TIMEOUT_KEYS)}; got {value!r}")
        table = self.table(value, path, _TIMEOUT_KEYS)
        given = {key: self._seconds(table[key], f"{path}.{key}") for key in table}
        return attrs.evolve(Timeouts(), **given)

    def _each(
        self, value: object, path: str, allowed: tuple[str, ...], read: Callable[[str, object, str], object]
    ) -> dict[str, object] | None:
        """``read(key, item, where)`` of each known key of the table ``value``: the values
        read, or None when any was wrong (each wrong one noted in ``problems``, so that a
        table's every mistake is reported, not its first)."""
        given: dict[str, object] = {}
        wrong = False
        for key, item in self.table(value, path, allowed).items():
            try:
                given[key] = read(key, item, f"{path}.{key}")
            except ConfigError as exc:
                self.problems.append(str(exc))
                wrong = True
        return None if wrong else given

    @_per_key
    def retry(self, value: object, path: str) -> RetryPolicy | None:
        if value is None:
            return None

        def read(key: str, item: object, where: str) -> object:
            return self.count(item, where) if key == "max_attempts" else self._seconds(item, where)

        given = self._each(value, path, _RETRY_KEYS, read)
        return None if given is None else RetryPolicy(**given)  # type: ignore[arg-type]

    @_per_key
    def limits(self, value: object, path: str) -> Limits | None:
        if value is None:
            return None

        def read(key: str, item: object, where: str) -> object:
            if key in ("adaptive", "per_model", "fail_closed"):
                if not isinstance(item, bool):
                    raise self.fail(where, f"expected true or false, got {item!r}")
                return item
            if key in ("backend", "url", "account"):
                return self.string(item, where)
            if key == "max_concurrency":
                return self.count(item, where)
            if key == "lease":
                return self._seconds(item, where)
            if isinstance(item, bool) or not isinstance(item, (int, float)) or not 0 < item < float("inf"):
                raise self.fail(where, f"expected a positive number per minute, got {item!r}")
            return item

        given = self._each(value, path, _LIMIT_KEYS, read)
        return None if given is None else Limits(**given)  # type: ignore[arg-type]

    @_per_key
    def cache(self, value: object, path: str) -> CacheSettings | None:
        if value is None:
            return None

        def read(key: str, item: object, where: str) -> object:
            if key == "path":
                return self.string(item, where)
            if key == "max_size":
                return self.count(item, where)
            if key == "expire":
                return self._seconds(item, where)
            if not isinstance(item, bool):
                raise self.fail(where, f"expected true or false, got {item!r}")
            return item

        given = self._each(value, path, _CACHE_KEYS, read)
        return None if given is None else CacheSettings(**given)  # type: ignore[arg-type]

    @_per_key
    def names(self, value: object, path: str) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(path, f"expected a list of names, got {value!r}")
        return tuple(value)

    def count(self, value: object, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(path, f"expected a whole number >= 1, got {value!r}")
        return value

    def _seconds(self, value: object, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise self.fail(path, f"expected a positive number of seconds, got {value!r}")
        return float(value)

    @_per_key
    def strings(self, value: object, path: str) -> dict[str, str]:
        if value is None:
            return {}
        table = self.table(value, path, tuple(value) if isinstance(value, Mapping) else ())
        for key, item in table.items():
            if not isinstance(item, str):
                raise self.fail(f"{path}.{key}", f"expected a string, got {item!r}")
        return dict(table)

    def provider(self, name: str, value: object) -> dict[str, Any]:
        path = f"providers.{name}"
        allowed = _PROVIDER_KEYS if self.from_file else (*_PROVIDER_KEYS, "api_key")
        table = self.table(value, path, allowed)
        out: dict[str, Any] = {
            "base_url": self.url(table.get("base_url"), f"{path}.base_url"),
            "api_key_env": self.key_variables(table.get("api_key_env"), f"{path}.api_key_env"),
            "transport": self.string(table.get("transport"), f"{path}.transport"),
            "model": self.string(table.get("model"), f"{path}.model"),
            "headers": self.strings(table.get("headers"), f"{path}.headers"),
            "query": self.strings(table.get("query"), f"{path}.query"),
            "network": self.network(table, path),
            "timeouts": self.timeouts(table.get("timeout"), f"{path}.timeout"),
            "middleware": self.names(table.get("middleware"), f"{path}.middleware"),
            "retry": self.retry(table.get("retry"), f"{path}.retry"),
            "limits": self.limits(table.get("limits"), f"{path}.limits"),
            "prices": self.prices(table.get("prices"), f"{path}.prices"),
        }
        keys = table.get("api_key")
        if keys is not None:
            listed = keys if isinstance(keys, (list, tuple)) and keys else [keys]
            out["api_key"] = tuple(
                key if isinstance(key, Secret) else Secret(self.string(key, f"{path}.api_key") or "") for key in listed
            )
        return {k: v for k, v in out.items() if v not in (None, {})}

    def settings(self, data: object) -> dict[str, Any]:
        """The settings of this source; a `ConfigError` naming each of its mistakes."""
        try:
            settings = self._settings(data)
        except ConfigError as exc:  # one that leaves nothing more to check (not a table)
            self.problems.append(str(exc))
        if self.problems:
            raise ConfigError("\n".join(self.problems))
        return settings

    def _settings(self, data: object) -> dict[str, Any]:
        top = self.table(data, "", _TOP_KEYS)
        defaults = self.table(top.get("defaults", {}), "defaults", _DEFAULT_KEYS)
        out: dict[str, Any] = {
            "model": self.string(defaults.get("model"), "defaults.model"),
            "transport": self.string(defaults.get("transport"), "defaults.transport"),
            "timeouts": self.timeouts(defaults.get("timeout"), "defaults.timeout"),
            "middleware": self.names(defaults.get("middleware"), "defaults.middleware"),
            "retry": self.retry(defaults.get("retry"), "defaults.retry"),
            "limits": self.limits(defaults.get("limits"), "defaults.limits"),
            "cache": self.cache(defaults.get("cache"), "defaults.cache"),
            "plugins": self.names(defaults.get("plugins"), "defaults.plugins"),
            "headers": self.strings(defaults.get("headers"), "defaults.headers"),
            "query": self.strings(defaults.get("query"), "defaults.query"),
            "network": self.network(defaults, "defaults"),
            "max_cost": self.amount(defaults.get("max_cost"), "defaults.max_cost"),
        }
        providers = top.get("providers", {})
        table = self.table(providers, "providers", tuple(providers) if isinstance(providers, Mapping) else ())
        out["providers"] = {str(name): self.provider(str(name), value) for name, value in table.items()}
        return {k: v for k, v in out.items() if v not in (None, {})}

    @_per_key
    def amount(self, value: object, path: str) -> Cost | None:
        if value is None:
            return None
        try:
            return parse_amount(value)
        except ValueError as exc:
            raise self.fail(path, str(exc)) from None

    @_per_key
    def prices(self, value: object, path: str) -> dict[str, ModelPrice]:
        if value is None:
            return {}
        table = self.table(value, path, tuple(value) if isinstance(value, Mapping) else ())
        return {str(model): self._model_price(item, f"{path}.{model}") for model, item in table.items()}

    def _model_price(self, value: object, path: str) -> ModelPrice:
        table = self.table(value, path, _PRICE_KEYS)
        price = self._price(table, path, Price(input=0, output=0), required=True)
        windows = table.get("windows", [])
        if not isinstance(windows, list):
            raise self.fail(f"{path}.windows", f"expected a list of tables, got {windows!r}")
        return ModelPrice(
            price=price, windows=tuple(self._window(w, f"{path}.windows[{i}]", price) for i, w in enumerate(windows))
        )

    def _price(self, table: Mapping[str, Any], path: str, base: Price, *, required: bool) -> Price:
        given: dict[str, Any] = {}
        for key in _FIGURES:
            if key not in table:
                if required and key in ("input", "output"):
                    raise self.fail(f"{path}.{key}", "required: the price per million tokens")
                continue
            item = table[key]
            if isinstance(item, bool) or not isinstance(item, (int, float)) or not 0 <= item < float("inf"):
                raise self.fail(f"{path}.{key}", f"expected a price per million tokens (a number >= 0), got {item!r}")
            given[key] = float(item)
        if "currency" in table:
            currency = table["currency"]
            if not (isinstance(currency, str) and len(currency) == 3 and currency.isalpha()):
                raise self.fail(f"{path}.currency", f'expected an ISO 4217 code such as "USD", got {currency!r}')
            given["currency"] = currency.upper()
        return attrs.evolve(base, **given)

    def _window(self, value: object, path: str, base: Price) -> PriceWindow:
        table = self.table(value, path, (*_FIGURES, "start", "end", "weekdays"))
        times: dict[str, dt.time] = {}
        for key in ("start", "end"):
            item = table.get(key)
            try:
                times[key] = dt.time(0) if key == "end" and item == "24:00" else dt.time.fromisoformat(item)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise self.fail(f"{path}.{key}", f'expected a time "HH:MM" (UTC), got {item!r}') from None
        days = table.get("weekdays", list(WEEKDAYS))
        if not isinstance(days, list) or not all(isinstance(d, str) and d.lower()[:3] in WEEKDAYS for d in days):
            raise self.fail(f"{path}.weekdays", f'expected a list of days such as ["mon", "fri"], got {days!r}')
        try:
            return PriceWindow(
                price=self._price(table, path, base, required=False),
                start=times["start"],
                end=times["end"],
                weekdays=frozenset(WEEKDAYS.index(d.lower()[:3]) for d in days),
            )
        except ValueError as exc:
            raise self.fail(path, str(exc)) from None

    def network(self, table: Mapping[str, Any], path: str) -> NetworkSettings | None:
        """The connection keys of ``table`` (``[defaults]`` or a provider's)."""
        given: dict[str, Any] = {}
        for key in _NETWORK_SCHEMA:
            if key in table and table[key] is not None:
                given[key] = getattr(self, f"_{key}")(table[key], f"{path}.{key}")
        given = {key: value for key, value in given.items() if value is not None}
        return NetworkSettings(**given) if given else None

    @_per_key
    def _proxy(self, value: object, path: str) -> str | bool:
        if isinstance(value, bool):
            return value
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"expected a proxy URL or false, got {value!r}")
        scheme, _, rest = self._checked_url(value, path, PROXY_SCHEMES, "proxy URL").partition("://")
        return f"{scheme.lower()}://{rest}"  # the transports match schemes in lower case

    def _path(self, value: object, path: str) -> str:
        name = self.string(value, path)
        assert name is not None
        found = Path(name).expanduser()
        if self.base_dir is not None and not found.is_absolute():
            found = self.base_dir / found
        if not found.exists():
            raise self.fail(path, f"no such file or directory: {str(found)!r}")
        return str(found)

    @_per_key
    def _verify(self, value: object, path: str) -> bool | str:
        return value if isinstance(value, bool) else self._path(value, path)

    @_per_key
    def _cert(self, value: object, path: str) -> ClientCertificate:
        if isinstance(value, str):
            return ClientCertificate(certfile=self._path(value, path))
        table = self.table(value, path, _CERT_KEYS)
        if "cert" not in table:
            raise self.fail(path, "a [cert] table needs cert, the certificate's PEM file")
        return ClientCertificate(
            certfile=self._path(table["cert"], f"{path}.cert"),
            keyfile=self._path(table["key"], f"{path}.key") if "key" in table else None,
            password_env=self.string(table.get("password_env"), f"{path}.password_env"),
        )

    @_per_key
    def _max_connections(self, value: object, path: str) -> int:
        return self.count(value, path)

    @_per_key
    def _keepalive_expiry(self, value: object, path: str) -> float:
        return self._seconds(value, path)

    @_per_key
    def _http2(self, value: object, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"expected true or false, got {value!r}")
        return value


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8-sig")  # (a byte order mark, as Notepad writes, is not TOML's)
    except UnicodeDecodeError as exc:
        byte = f"{exc.object[exc.start]:#04x}"
        raise ConfigError(f"{path}: not UTF-8, as TOML must be (byte {byte} at offset {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc


def _merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    """Later sources win, key by key (the connection keys too)."""
    for key, value in new.items():
        if key == "providers":
            providers = into.setdefault("providers", {})
            for name, table in value.items():
                _merge(providers.setdefault(name, {}), table)
        elif key == "network" and key in into:
            into[key] = value.over(into[key])
        elif key == "prices" and key in into:  # model by model
            into[key] = {**into[key], **value}
        else:
            into[key] = value


def load_settings(config: str | os.PathLike[str] | Mapping[str, Any] | None = None, **overrides: Any) -> Settings:
    """Build `Settings` from a file or dict plus keyword overrides.

    ``config`` is a TOML file path, or a dict shaped like the file. With None, the file
    named by ``$LLMADAPTERS_CONFIG``, else ``./llmadapters.toml`` when it exists.
    ``overrides`` take the keys of ``[defaults]`` (``model``, ``transport``,
    ``timeout``, ``middleware``, ``retry``, ``limits``, ``plugins``) and ``providers`` (a dict of provider tables,
    which may hold ``api_key``); None values are ignored.
    """
    merged: dict[str, Any] = {}
    sources: list[str] = []
    if config is None:
        env = os.environ.get(CONFIG_ENV)
        if env:
            config = env
        elif Path(DEFAULT_CONFIG_FILE).is_file():
            config = DEFAULT_CONFIG_FILE
    if isinstance(config, Mapping):
        _merge(merged, _Reader("config dict", from_file=False).settings(config))
        sources.append("config dict")
    elif config is not None:
        path = Path(config)
        _merge(merged, _Reader(str(path), from_file=True, base_dir=path.parent).settings(_read_file(path)))
        sources.append(str(path))
    given = {k: v for k, v in overrides.items() if v is not None}
    if given:
        unknown = sorted(set(given) - {*_DEFAULT_KEYS, "providers"})
        if unknown:
            raise TypeError(f"unexpected settings: {', '.join(unknown)}")
        defaults = {k: given[k] for k in _DEFAULT_KEYS if k in given}
        data = {"defaults": defaults, "providers": given.get("providers", {})}
        _merge(merged, _Reader("arguments", from_file=False).settings(data))
        sources.append("arguments")
    providers = {name: ProviderSettings(**table) for name, table in merged.pop("providers", {}).items()}
    return Settings(**merged, providers=providers, sources=tuple(sources))
