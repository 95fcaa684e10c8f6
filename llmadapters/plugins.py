"""The registry: which providers, transports, middleware and batch runners exist, by name, and which
plugin brought each.

A `Registry` owns its ``pluggy.PluginManager``. `Registry.load` registers the built-ins,
then the modules named in the ``llmadapters`` entry-point group of installed
distributions, and asks each for what it provides through the hooks of
`llmadapters.hookspecs`. A plugin that fails to import, whose hook raises, or that
registers a name already taken is reported with a `PluginWarning` naming its
distribution; the others carry on.

``LLMADAPTERS_DISABLE_PLUGIN_AUTOLOAD=1`` loads no entry point except those named in an
allow-list (``[defaults] plugins = [...]``, which otherwise limits autoloading to them).
"""

from __future__ import annotations

import importlib.metadata
import os
import warnings
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs
import pluggy

from . import hookspecs
from .errors import PluginError, PluginWarning
from .middleware import builtin as builtin_middleware
from .providers import builtin as builtin_providers
from .transports import builtin as builtin_transports
from .transports.network import FEATURES

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Iterator

    from .batch import BatchItem
    from .config import Settings
    from .middleware.base import Middleware
    from .providers.base import ProviderSpec
    from .transports.base import Transport
    from .transports.network import NetworkOptions

__all__ = [
    "DISABLE_AUTOLOAD_ENV",
    "BatchJob",
    "BatchRunner",
    "MiddlewareFactory",
    "PluginInfo",
    "Registry",
    "TransportFactory",
]

# Makes one route's transport, for the route's connection settings.
TransportFactory: TypeAlias = "Callable[[NetworkOptions], Transport]"
# Makes one route's instance of a middleware, from the provider and the settings.
MiddlewareFactory: TypeAlias = "Callable[[ProviderSpec, Settings], Middleware]"
# Answers a batch job elsewhere (``llmadapters batch --on NAME``), yielding output records.
BatchRunner: TypeAlias = "Callable[[BatchJob], Iterable[dict[str, Any]]]"

DISABLE_AUTOLOAD_ENV = "LLMADAPTERS_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN = "llmadapters"
# A config names it (last) for the auth every route with a key gets; no plugin may take it.
_AUTH = "auth"
_AUTH_RESERVED = "the name of the built-in auth, always innermost, is reserved"
_BUILTIN_MODULES = (builtin_providers, builtin_transports, builtin_middleware)


@attrs.frozen(kw_only=True)
class PluginInfo:
    """One loaded (or failed) plugin.

    Attributes:
        name: the entry point's name (``llmadapters`` for the built-ins).
        distribution, version: the installed package that declared it.
        provides: what it registered, as ``kind:name`` (``provider:deepseek``).
        error: why it failed to load, or what of it failed (a hook that raised), or None.
    """

    name: str
    distribution: str | None = None
    version: str | None = None
    provides: tuple[str, ...] = ()
    error: str | None = None


@attrs.frozen(kw_only=True)
class BatchJob:
    """What ``llmadapters batch --on NAME`` hands its runner (see
    `llmadapters.hookspecs.register_batch_runners`).

    Attributes:
        items: the requests to answer, read lazily; invalid lines are items too, whose
            output records are errors, as the local engine writes them.
        config: the ``--config`` file, or None for the default lookup.
        limits: the ``--rpm``/``--tpm`` overrides of every provider's limits, or None.
        model: the ``provider/model`` of requests that name none.
        concurrency: calls in flight per provider in each process that makes calls.
        line_deadline: how long a request answered 429 is sent again.
        address: ``--address``, where the runner's cluster is (None: its default).
    """

    items: Iterator[BatchItem]
    config: str | None = None
    limits: dict[str, float] | None = None
    model: str | None = None
    concurrency: int = 64
    line_deadline: float = 3600.0
    address: str | None = None


class Registry:
    """Providers, transport factories, middleware factories and batch runners by name.

    `Registry.load` fills it from the built-ins and installed plugins; `Registry.builtin`
    from the built-ins alone. ``add_*`` register more in code and raise `PluginError` on
    a name already taken.
    """

    def __init__(self) -> None:
        self.providers: dict[str, ProviderSpec] = {}
        self.transports: dict[str, TransportFactory] = {}
        # What each transport honours of `llmadapters.transports.network.FEATURES`.
        self.transport_features: dict[str, frozenset[str]] = {}
        self.middleware: dict[str, MiddlewareFactory] = {}
        self.batch_runners: dict[str, BatchRunner] = {}
        self.plugins: list[PluginInfo] = []
        self.source: dict[str, str] = {}  # "kind:name" -> the plugin that registered it
        self._manager = pluggy.PluginManager(hookspecs.PROJECT)
        self._manager.add_hookspecs(hookspecs)

    @classmethod
    def builtin(cls) -> Registry:
        """The built-in providers, transports and middleware, and no plugin."""
        return cls.load(autoload=False)

    @classmethod
    def load(cls, *, allow: Collection[str] | None = None, autoload: bool | None = None) -> Registry:
        """The built-ins, then the installed plugins.

        Args:
            allow: entry-point names to load; None for all of them.
            autoload: load entry points not in ``allow``; by default unless
                ``$LLMADAPTERS_DISABLE_PLUGIN_AUTOLOAD`` is set.
        """
        if autoload is None:
            autoload = os.environ.get(DISABLE_AUTOLOAD_ENV, "") in ("", "0")
        registry = cls()
        distribution = importlib.metadata.distribution(BUILTIN)
        builtin = PluginInfo(name=BUILTIN, distribution=distribution.metadata["Name"], version=distribution.version)
        for module in _BUILTIN_MODULES:
            registry._manager.register(module, name=f"{BUILTIN}:{module.__name__}")
        plugins: list[tuple[PluginInfo, tuple[object, ...]]] = [(builtin, _BUILTIN_MODULES)]
        found = set()
        for entry_point in importlib.metadata.entry_points(group=hookspecs.PROJECT):
            found.add(entry_point.name)
            wanted = entry_point.name in allow if allow is not None else autoload
            if wanted and not registry._manager.has_plugin(entry_point.name):
                plugins.append(registry._load(entry_point))
        for name in sorted(set(allow or ()) - found):
            known = ", ".join(sorted(found)) or "none"
            message = f"the plugin allow-list names {name!r}, which no installed package declares (installed: {known})"
            warnings.warn(message, PluginWarning, stacklevel=2)
        for info, modules in plugins:
            registry._collect(info, modules)
        return registry

    def _load(self, entry_point: importlib.metadata.EntryPoint) -> tuple[PluginInfo, tuple[object, ...]]:
        dist = entry_point.dist
        info = PluginInfo(
            name=entry_point.name,
            distribution=dist.metadata["Name"] if dist else None,
            version=dist.version if dist else None,
        )
        try:
            module = entry_point.load()
            self._manager.register(module, name=entry_point.name)
            self._manager.check_pending()  # a hookimpl with a misspelt hook name
        except Exception as exc:
            if self._manager.has_plugin(entry_point.name):
                self._manager.unregister(name=entry_point.name)
            self._problem(info, f"failed to load ({type(exc).__name__}: {exc}); it is skipped")
            return attrs.evolve(info, error=f"{type(exc).__name__}: {exc}"), ()
        return info, (module,)

    def _problem(self, info: PluginInfo, what: str) -> None:
        where = f" from {info.distribution} {info.version}" if info.distribution else ""
        warnings.warn(f"llmadapters plugin {info.name!r}{where} {what}", PluginWarning, stacklevel=4)

    def _collect(self, info: PluginInfo, modules: tuple[object, ...]) -> None:
        """Call the plugin's own hook implementations with ``register`` callbacks that
        note which plugin registered what."""
        provides: list[str] = []
        failed: list[str] = []

        def add(kind: str, name: str, table: dict[str, Any], value: object) -> bool:
            key = f"{kind}:{name}"
            if name in table:
                self._problem(info, f"registers {kind} {name!r}, already registered by {self.source[key]!r}; ignored")
                return False
            table[name] = value
            self.source[key] = info.name
            provides.append(key)
            return True

        def add_transport(name: str, factory: TransportFactory, supports: Collection[str] = ()) -> None:
            features = _checked_features(name, supports)
            if add("transport", name, self.transports, factory):
                self.transport_features[name] = features

        def add_middleware(name: str, factory: MiddlewareFactory) -> None:
            if name == _AUTH:
                self._problem(info, f"registers middleware {name!r}: {_AUTH_RESERVED}; ignored")
            else:
                add("middleware", name, self.middleware, factory)

        registers: dict[str, Callable[..., object]] = {
            "register_providers": lambda spec: add("provider", spec.name, self.providers, _checked_provider(spec)),
            "register_transports": add_transport,
            "register_middleware": add_middleware,
            "register_batch_runners": lambda name, runner: add("batch_runner", name, self.batch_runners, runner),
        }
        for hook, register in registers.items():
            for impl in getattr(self._manager.hook, hook).get_hookimpls():
                if impl.plugin not in modules:
                    continue
                try:
                    impl.function(register=register)
                except Exception as exc:
                    failed.append(f"{hook} raised {type(exc).__name__}: {exc}")
                    self._problem(info, f"failed in {hook} ({type(exc).__name__}: {exc})")
        error = "; ".join(filter(None, [info.error, *failed])) or None
        self.plugins.append(attrs.evolve(info, provides=tuple(provides), error=error))

    def add_providers(self, specs: Collection[ProviderSpec]) -> None:
        for spec in specs:
            if spec.name in self.providers:
                raise PluginError(f"provider {spec.name!r} is registered twice")
            self.providers[spec.name] = _checked_provider(spec)

    def add_transport(self, name: str, factory: TransportFactory, supports: Collection[str] = ()) -> None:
        """Register a transport; ``supports`` names the `FEATURES
        <llmadapters.transports.network.FEATURES>` it honours."""
        if name in self.transports:
            raise PluginError(f"transport {name!r} is registered twice")
        self.transport_features[name] = _checked_features(name, supports)
        self.transports[name] = factory

    def add_middleware(self, name: str, factory: MiddlewareFactory) -> None:
        """Register a middleware factory under ``name`` (not ``auth``, the built-in's)."""
        if name == _AUTH:
            raise PluginError(f"middleware {name!r}: {_AUTH_RESERVED}; choose another name")
        if name in self.middleware:
            raise PluginError(f"middleware {name!r} is registered twice")
        self.middleware[name] = factory


def _checked_features(transport: str, supports: Collection[str]) -> frozenset[str]:
    unknown = sorted(set(supports) - set(FEATURES))
    if unknown or isinstance(supports, str):
        raise PluginError(
            f"transport {transport!r} supports unknown features {unknown or supports!r}; known: {', '.join(FEATURES)}"
        )
    return frozenset(supports)


def _checked_provider(spec: ProviderSpec) -> ProviderSpec:
    if "/" in spec.name or not spec.name:
        raise PluginError(f"provider name {spec.name!r} must be non-empty and contain no '/'")
    return spec
