"""The plugin hooks of llmadapters, and the markers to implement them.

A plugin is a module (or object) with functions marked ``@llmadapters.hookimpl``, named
in its package's entry points::

    # pyproject.toml
    [project.entry-points.llmadapters]
    deepseek = "llmadapters_deepseek"

Each hook receives a ``register`` callable, called once per thing the plugin provides.
The built-in providers, transports and middleware register through these same hooks.
Hooks run once, when a client's registry is built, never per call. What a plugin
registers and the helpers it uses come from `llmadapters.plugin`, the one namespace
of plugin authors (and from ``llmadapters`` itself); the other modules are internal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable

    from .plugins import BatchRunner, MiddlewareFactory
    from .providers.base import ProviderSpec

__all__ = ["PROJECT", "hookimpl", "hookspec"]

PROJECT = "llmadapters"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_providers(register: Callable[[ProviderSpec], None]) -> None:
    """Register providers: where they live and which dialect they speak.

    ``register(spec)`` takes a `llmadapters.plugin.ProviderSpec`; its ``name``
    is what goes before the ``/`` in ``model="name/model"``.

    Use in a plugin::

        from llmadapters import hookimpl
        from llmadapters.plugin import ProviderSpec

        @hookimpl
        def register_providers(register):
            register(ProviderSpec(name="acme", base_url="https://api.acme.ai/v1", api_key_env="ACME_API_KEY"))
    """


@hookspec
def register_transports(register: Callable[..., None]) -> None:
    """Register transports: how the bytes move.

    ``register(name, factory, supports=())``: ``factory(options)`` returns a new object
    with the `llmadapters.plugin.Transport` methods (``send``, ``stream``, ``aclose``);
    one is made per route, with the route's `llmadapters.plugin.NetworkOptions` (proxy,
    TLS context, connection limits). ``supports`` names the features of
    `llmadapters.plugin.FEATURES` it honours (``"proxy"``, ``"tls"``, ``"http2"``, ...):
    a client refuses, when it is made, a setting that needs one it does not list.
    Import your HTTP library inside the factory, so that installing the plugin costs
    nothing to programs that do not use it.

    Use in a plugin::

        @hookimpl
        def register_transports(register):
            def make(options):
                from .transport import AcmeTransport
                return AcmeTransport(proxy=options.proxy, ssl=options.ssl)
            register("acme", make, supports=["proxy", "tls"])
    """


@hookspec
def register_middleware(register: Callable[[str, MiddlewareFactory], None]) -> None:
    """Register middleware that configurations can name.

    ``register(name, factory)``: ``factory(spec, settings)`` returns the middleware of
    one route, an async callable ``(call, call_next) -> reply``; ``spec`` is the
    route's provider and ``settings`` the client's `llmadapters.plugin.Settings`
    (``settings.limits_of(spec.name)`` and the other ``*_of`` methods give the
    provider's own). ``auth`` is the built-in's name, always innermost: registering it
    warns and is ignored.

    Use in a plugin::

        @hookimpl
        def register_middleware(register):
            def make(spec, settings):
                async def tag(call, call_next):
                    call.headers["x-team"] = "search"
                    return await call_next(call)
                return tag
            register("tag", make)
    """


@hookspec
def register_batch_runners(register: Callable[[str, BatchRunner], None]) -> None:
    """Register batch runners: where ``llmadapters batch IN -o OUT --on NAME`` runs.

    ``register(name, runner)``: ``runner(job)`` answers the requests of a
    `llmadapters.plugin.BatchJob` (the input already read, checked and filtered by
    ``--resume`` and ``--shard``) somewhere else than this process, and yields each one's
    output record, as `llmadapters.plugin.output_record` makes it, in any order, once
    each. The command writes them and sums them up as it does the local engine's. Import
    the runner's engine inside ``runner``, so that installing the plugin costs nothing to
    programs that do not use it.

    Use in a plugin::

        @hookimpl
        def register_batch_runners(register):
            def run(job):
                from .cluster import answer_everywhere
                yield from answer_everywhere(job)
            register("cluster", run)
    """
