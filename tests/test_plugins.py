"""The plugin registry, with entry points faked in-process (a real install into a fresh
venv is in test_plugin_packages.py)."""

from __future__ import annotations

import importlib.metadata
import logging
import subprocess
import sys
import types
import warnings
from typing import TYPE_CHECKING, Any

import pytest

import llmadapters as la
from llmadapters.cli import main
from llmadapters.plugins import Registry
from llmadapters.providers.base import ProviderSpec

if TYPE_CHECKING:
    from pathlib import Path

    from llmadapters.testing import FakeServer

MESSAGES = [{"role": "user", "content": "plug me in"}]


class FakeDist:
    def __init__(self, name: str, version: str = "1.2.3") -> None:
        self.metadata = {"Name": name}
        self.version = version


class FakeEntryPoint:
    """What the registry uses of an importlib.metadata.EntryPoint."""

    def __init__(self, name: str, module: object, dist: str) -> None:
        self.name = name
        self.group = "llmadapters"
        self.dist = FakeDist(dist)
        self._module = module

    def load(self) -> object:
        if isinstance(self._module, Exception):
            raise self._module
        return self._module


def plugin(name: str, **hooks: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook, function in hooks.items():
        setattr(module, hook, la.hookimpl(function))
    return module


@pytest.fixture
def entry_points(monkeypatch: pytest.MonkeyPatch) -> list[FakeEntryPoint]:
    installed: list[FakeEntryPoint] = []

    def fake(group: str) -> list[FakeEntryPoint]:
        assert group == "llmadapters"
        return list(installed)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    monkeypatch.delenv("LLMADAPTERS_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    return installed


def acme_plugin(base_url: str = "http://127.0.0.1:9/v1") -> types.ModuleType:
    def register_providers(register: Any) -> None:
        register(ProviderSpec(name="acme", base_url=base_url, key_required=False, default_model="echo"))

    def register_transports(register: Any) -> None:
        from llmadapters.transports.httpx import HttpxTransport

        register("acme-http", lambda options: HttpxTransport(options, connections_per_shard=2))

    def register_middleware(register: Any) -> None:
        def make(spec: Any, settings: Any) -> Any:
            async def tag(call: Any, call_next: Any) -> Any:
                call.endpoint = call.endpoint.with_headers({"x-acme": spec.name})
                return await call_next(call)

            return tag

        register("acme-tag", make)

    return plugin(
        "acme_plugin",
        register_providers=register_providers,
        register_transports=register_transports,
        register_middleware=register_middleware,
    )


async def test_a_plugin_adds_a_provider_a_transport_and_middleware(
    entry_points: list[FakeEntryPoint], fake_server: FakeServer
) -> None:
    entry_points.append(FakeEntryPoint("acme", acme_plugin(fake_server.base_url), "llmadapters-acme"))
    config = {"providers": {"acme": {"transport": "acme-http", "middleware": ["acme-tag"]}}}
    async with la.AsyncClient(config) as client:
        reply = await client.chat.completions.create(model="acme", messages=MESSAGES)
        assert (reply.provider, reply.choices[0].message.content) == ("acme", "plug me in")
    assert fake_server.seen_headers[-1]["x-acme"] == "acme"
    registry = client.registry
    info = next(p for p in registry.plugins if p.name == "acme")
    assert (info.distribution, info.version) == ("llmadapters-acme", "1.2.3")
    assert info.provides == ("provider:acme", "transport:acme-http", "middleware:acme-tag")
    assert registry.source["provider:openai"] == "llmadapters"


def test_a_broken_plugin_is_reported_by_name_and_the_rest_work(entry_points: list[FakeEntryPoint]) -> None:
    entry_points.append(FakeEntryPoint("broken", ImportError("No module named 'requests'"), "llmadapters-broken"))
    entry_points.append(FakeEntryPoint("acme", acme_plugin(), "llmadapters-acme"))
    with pytest.warns(la.PluginWarning) as caught:
        registry = Registry.load()
    assert [str(w.message) for w in caught] == [
        "llmadapters plugin 'broken' from llmadapters-broken 1.2.3 failed to load "
        "(ImportError: No module named 'requests'); it is skipped"
    ]
    assert "acme" in registry.providers
    assert next(p for p in registry.plugins if p.name == "broken").error == "ImportError: No module named 'requests'"


def test_duplicates_and_failing_hooks_are_reported(entry_points: list[FakeEntryPoint]) -> None:
    def steal(register: Any) -> None:
        register(ProviderSpec(name="openai", base_url="http://127.0.0.1:9/v1"))
        register(ProviderSpec(name="extra", base_url="http://127.0.0.1:9/v1"))

    def explode(register: Any) -> None:
        raise RuntimeError("boom")

    entry_points.append(FakeEntryPoint("thief", plugin("thief", register_providers=steal), "llmadapters-thief"))
    entry_points.append(FakeEntryPoint("bomb", plugin("bomb", register_transports=explode), "llmadapters-bomb"))
    with pytest.warns(la.PluginWarning) as caught:
        registry = Registry.load()
    assert sorted(str(w.message) for w in caught) == [
        "llmadapters plugin 'bomb' from llmadapters-bomb 1.2.3 failed in register_transports (RuntimeError: boom)",
        "llmadapters plugin 'thief' from llmadapters-thief 1.2.3 registers provider 'openai', "
        "already registered by 'llmadapters'; ignored",
    ]
    assert registry.providers["openai"].base_url == "https://api.openai.com/v1"
    assert registry.source["provider:extra"] == "thief"


def test_no_plugin_registers_middleware_named_auth_by_either_path(entry_points: list[FakeEntryPoint]) -> None:
    def make(spec: Any, settings: Any) -> Any:
        raise AssertionError("never made")

    def register_middleware(register: Any) -> None:
        register("auth", make)
        register("audit", make)

    entry_points.append(FakeEntryPoint("rogue", plugin("rogue", register_middleware=register_middleware), "rogue-auth"))
    with pytest.warns(la.PluginWarning) as caught:
        registry = Registry.load()
    assert [str(w.message) for w in caught] == [
        "llmadapters plugin 'rogue' from rogue-auth 1.2.3 registers middleware 'auth': the name of the built-in "
        "auth, always innermost, is reserved; ignored"
    ]
    assert "auth" not in registry.middleware
    assert next(p for p in registry.plugins if p.name == "rogue").provides == ("middleware:audit",)
    with pytest.raises(la.PluginError, match=r"^middleware 'auth': the name of the built-in auth, always"):
        registry.add_middleware("auth", make)
    with pytest.raises(la.PluginError, match=r"^middleware 'audit' is registered twice$"):
        registry.add_middleware("audit", make)


def test_a_misspelt_hook_is_refused(entry_points: list[FakeEntryPoint]) -> None:
    def register_provider(register: Any) -> None:  # not a hook of ours
        raise AssertionError("never called")

    entry_points.append(FakeEntryPoint("typo", plugin("typo", register_provider=register_provider), "llmadapters-typo"))
    with pytest.warns(
        la.PluginWarning, match=r"'typo' from llmadapters-typo 1.2.3 failed to load \(PluginValidationError"
    ):
        registry = Registry.load()
    assert [p.name for p in registry.plugins] == ["llmadapters", "typo"]


def test_autoload_switch_and_allow_list(entry_points: list[FakeEntryPoint], monkeypatch: pytest.MonkeyPatch) -> None:
    entry_points.append(FakeEntryPoint("acme", acme_plugin(), "llmadapters-acme"))
    other = plugin("other", register_transports=lambda register: register("other", lambda options: None))
    entry_points.append(FakeEntryPoint("other", other, "llmadapters-other"))
    assert {"acme", "fake", "openai"} <= set(Registry.load().providers)
    assert "acme" not in Registry.load(allow=["other"]).providers
    assert "other" in Registry.load(allow=["other"]).transports
    monkeypatch.setenv("LLMADAPTERS_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert set(Registry.load().providers) == {"fake", "openai"}
    assert "acme" in Registry.load(allow=["acme"]).providers  # named plugins still load
    client = la.AsyncClient({"defaults": {"plugins": ["acme"]}})
    assert "acme" in client.registry.providers


def test_builtin_registry_loads_no_plugin(entry_points: list[FakeEntryPoint]) -> None:
    entry_points.append(FakeEntryPoint("acme", acme_plugin(), "llmadapters-acme"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registry = Registry.builtin()
    assert set(registry.providers) == {"fake", "openai"}
    assert set(registry.transports) == {"httpx", "openai"}
    assert set(registry.middleware) == {"cache", "logging", "ratelimit", "retry", "timeout"}


def test_cli_lists() -> None:
    def run(*args: str) -> str:
        env = {"LLMADAPTERS_DISABLE_PLUGIN_AUTOLOAD": "1", "PATH": "/usr/bin:/bin"}
        return subprocess.run(
            [sys.executable, "-m", "llmadapters.cli", *args], capture_output=True, text=True, check=True, env=env
        ).stdout

    assert run("providers").splitlines() == [
        "PROVIDER  BASE URL                   KEY VARIABLE    FROM",
        "fake      (started on demand)        -               llmadapters 0.1.0",
        "openai    https://api.openai.com/v1  OPENAI_API_KEY  llmadapters 0.1.0",
    ]
    assert run("transports").splitlines() == [
        "TRANSPORT  FROM               CANNOT HONOUR",
        "httpx      llmadapters 0.1.0  -",
        "openai     llmadapters 0.1.0  -",
    ]
    assert "ratelimit   llmadapters 0.1.0" in run("middleware")
    plugins = run("plugins").splitlines()
    assert plugins[0].split() == ["PLUGIN", "DISTRIBUTION", "VERSION", "PROVIDES"]
    assert plugins[1].startswith("llmadapters  llmadapters   0.1.0    provider:openai, provider:fake, transport:httpx")


def test_the_command_run_in_process_leaves_the_logging_and_warnings_as_it_found_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = logging.getLogger("llmadapters")
    handlers, formatwarning = list(logger.handlers), warnings.formatwarning
    for _ in range(3):
        assert main(["transports"]) == 0
    assert "httpx      llmadapters" in capsys.readouterr().out
    # No handler per call, stacked: each warning would print once more per earlier call.
    assert logger.handlers == handlers
    assert warnings.formatwarning is formatwarning


class BrokenTransport:
    async def send(self, endpoint: Any, payload: Any) -> dict[str, Any]:
        raise KeyError("oops")

    async def stream(self, endpoint: Any, payload: Any) -> Any:
        raise KeyError("oops")
        yield {}  # pragma: no cover - makes this an async generator

    async def aclose(self) -> None:
        return None


def _broken_prepare(request: Any) -> dict[str, Any]:
    raise ValueError("cannot prepare")


async def test_plugin_bugs_at_call_time_are_contained_and_named(fake_server: FakeServer) -> None:
    registry = Registry.builtin()
    registry.add_providers(
        [
            ProviderSpec(name="badprep", base_url=fake_server.base_url, key_required=False, prepare=_broken_prepare),
            ProviderSpec(
                name="badverdict", base_url=fake_server.base_url, key_required=False, retryable=lambda e: 1 / 0
            ),
        ]
    )
    registry.add_transport("broken", lambda options: BrokenTransport())
    registry.add_transport("unbuildable", lambda options: 1 / 0)  # type: ignore[arg-type,return-value]
    registry.add_middleware("badmw", lambda spec, settings: 1 / 0)  # type: ignore[arg-type,return-value]
    providers = {
        "bt": {"base_url": fake_server.base_url, "transport": "broken"},
        "ub": {"base_url": fake_server.base_url, "transport": "unbuildable"},
        "mw": {"base_url": fake_server.base_url, "middleware": ["badmw"]},
        "badverdict": {"headers": {"x-fake-fail-times": "1", "x-fake-retry-after": "0"}},
    }
    expected = {
        "badprep/echo": "provider 'badprep' (prepare) raised ValueError: cannot prepare",
        "bt/echo": "transport 'broken' raised KeyError: 'oops'",
        "ub/echo": "transport 'unbuildable' (making it) raised ZeroDivisionError: division by zero",
        "mw/echo": "middleware 'badmw' (making it for provider 'mw') raised ZeroDivisionError: division by zero",
    }
    async with la.AsyncClient({}, providers=providers, registry=registry, middleware=None) as client:
        for model, message in expected.items():
            for stream in (False, True):
                with pytest.raises(la.PluginError) as info:
                    await client.chat.completions.create(model=model, messages=MESSAGES, stream=stream)
                assert str(info.value) == message
        # A verdict that raises falls back to the general rules: the 503 is retried.
        reply = await client.chat.completions.create(model="badverdict/echo+fail-503", messages=MESSAGES)
        assert reply.choices[0].message.content == "plug me in"
        # In a batch, a broken plugin costs its own lines, not the run.
        rows = [{"model": m, "messages": MESSAGES} for m in (*expected, "badverdict/echo")]
        results = [r async for r in client.batch(rows)]
    assert sorted(type(r.error).__name__ for r in results) == ["NoneType"] + ["PluginError"] * 4


def test_an_allow_list_name_nobody_declares_is_reported(entry_points: list[FakeEntryPoint]) -> None:
    entry_points.append(FakeEntryPoint("acme", acme_plugin(), "llmadapters-acme"))
    with pytest.warns(
        la.PluginWarning, match=r"allow-list names 'acne', which no installed package declares \(installed: acme\)"
    ):
        registry = Registry.load(allow=["acne"])
    assert "acme" not in registry.providers


def _installed(site: Path, name: str, module: str, code: str) -> None:
    """A distribution with an ``llmadapters`` entry point, as pip would lay it out."""
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[llmadapters]\n{name} = {module}\n")
    (site / f"{module}.py").write_text(code)


def test_the_command_shows_a_failed_plugin_in_one_line_and_lists_it_as_failed(tmp_path: Path) -> None:
    _installed(tmp_path, "broken", "broken_plugin", "import no_such_module_here\n")
    hook = "import llmadapters\n@llmadapters.hookimpl\ndef register_transports(register):\n    1 / 0\n"
    _installed(tmp_path, "bomb", "bomb_plugin", hook)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-m", "llmadapters.cli", "plugins"], capture_output=True, text=True, env=env, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines() == [
        "llmadapters: warning: llmadapters plugin 'broken' from broken 1.0 failed to load "
        "(ModuleNotFoundError: No module named 'no_such_module_here'); it is skipped",
        "llmadapters: warning: llmadapters plugin 'bomb' from bomb 1.0 failed in register_transports "
        "(ZeroDivisionError: division by zero)",
    ]
    rows = {line.split()[0]: line for line in run.stdout.splitlines()}
    assert rows["broken"].split(None, 3)[3] == "FAILED: ModuleNotFoundError: No module named 'no_such_module_here'"
    assert rows["bomb"].split(None, 3)[3] == "FAILED: register_transports raised ZeroDivisionError: division by zero"
