"""Conformance suites for plugin authors: subclass one in your package's tests.

    # tests/test_conformance.py of a transport plugin
    from llmadapters.testing.conformance import TransportConformance
    from my_plugin import make_transport

    class TestMyTransport(TransportConformance):
        transport_factory = staticmethod(make_transport)

    # tests/test_conformance.py of a provider plugin
    from llmadapters.testing.conformance import ProviderConformance

    class TestAcme(ProviderConformance):
        provider = "acme"                 # as your plugin registers it
        key_header = "authorization"      # where the key must arrive ("api-key", ...)

pytest collects the inherited ``test_*`` methods. They are plain (sync) tests that run
their own event loop against `FakeServer` on loopback, so no async pytest plugin is
needed. A transport must give the same values and the same error classes as the
built-in ``httpx`` transport for the same bytes; a provider must be registered by the
installed plugins, take its key from its variable, and send it where it says.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from ..client import AsyncClient
from ..errors import LLMAdapterError
from ..plugins import Registry
from .fake_server import FakeServer, FakeServerOptions
from .providers import environment

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["ProviderConformance", "TransportConformance"]

_MESSAGES = [{"role": "user", "content": "conformance check"}]
_FIXED_CLOCK = FakeServerOptions(clock=lambda: 1_700_000_000.0)
# Replies a transport must decode as the reference does.
_VALUES = ("echo", "echo+reasoning", "echo+keepalive", "echo+processing", "echo+crlf", "lorem")
# Faults a transport must report with the reference's error class.
_FAULTS = ("fail-400", "fail-401", "fail-429", "fail-500", "html-502", "reset", "reset-mid-body", "truncate",
           "malformed", "empty", "stream-error", "error-200", "huge-header", "stall")  # fmt: skip


async def _ask(client: AsyncClient, model: str, stream: bool) -> object:
    """The reply (a stream's chunks), or the class of the error."""
    try:
        if not stream:
            return await client.chat.completions.create(model=model, messages=_MESSAGES)
        chunks = await client.chat.completions.create(model=model, messages=_MESSAGES, stream=True)
        return [chunk async for chunk in chunks]
    except LLMAdapterError as exc:
        return type(exc)


class TransportConformance:
    """Set ``transport_factory``: what your ``register_transports`` hook registers
    (called with a `llmadapters.transports.network.NetworkOptions`)."""

    transport_factory: ClassVar[Callable[[Any], Any]]

    def _both(self, models: tuple[str, ...], stream: bool) -> tuple[list[object], list[object]]:
        async def run() -> tuple[list[object], list[object]]:
            async with FakeServer(_FIXED_CLOCK) as server:
                registry = Registry.builtin()
                registry.add_transport("subject", type(self).transport_factory)
                outcomes: dict[str, list[object]] = {}
                for transport in ("httpx", "subject"):
                    settings = {
                        "base_url": server.base_url,
                        "timeout": {"read": 0.5},
                        "headers": {"x-fake-stall-s": "2"},
                    }
                    client = AsyncClient({}, transport=transport, providers={"subject": settings}, middleware=[],
                                         registry=registry)  # fmt: skip
                    async with client:
                        outcomes[transport] = [await _ask(client, f"subject/{m}", stream) for m in models]
                return outcomes["httpx"], outcomes["subject"]

        return asyncio.run(run())

    def test_values_equal_the_reference(self) -> None:
        for stream in (False, True):
            reference, subject = self._both(_VALUES, stream)
            assert subject == reference, f"stream={stream}"

    def test_errors_equal_the_reference(self) -> None:
        for stream in (False, True):
            reference, subject = self._both(_FAULTS, stream)
            mismatched = [(m, r, s) for m, r, s in zip(_FAULTS, reference, subject, strict=True) if r != s]
            assert not mismatched, f"stream={stream}: (fault, reference, yours): {mismatched}"

    def test_connect_refused_is_a_connect_error(self) -> None:
        from ..errors import ConnectError

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]

        async def run() -> object:
            registry = Registry.builtin()
            registry.add_transport("subject", type(self).transport_factory)
            settings = {"base_url": f"http://127.0.0.1:{port}/v1"}
            async with AsyncClient({}, transport="subject", providers={"subject": settings}, middleware=[],
                                   registry=registry) as client:  # fmt: skip
                return await _ask(client, "subject/echo", False)

        assert asyncio.run(run()) is ConnectError


class ProviderConformance:
    """Set ``provider`` (its registered name) and ``key_header`` (the header, in lower
    case, that carries the key: ``authorization`` for ``Bearer <key>``)."""

    provider: ClassVar[str]
    key_header: ClassVar[str] = "authorization"

    def _spec(self) -> Any:
        registry = Registry.load(autoload=True)
        assert self.provider in registry.providers, f"no installed plugin registers provider {self.provider!r}"
        return registry.providers[self.provider]

    def test_is_registered_with_an_https_base_url(self) -> None:
        spec = self._spec()
        assert spec.base_url is None or spec.base_url.startswith("https://"), spec.base_url

    def test_key_from_its_variable_reaches_the_server(self) -> None:
        spec = self._spec()
        key = "sk-conformance-0123456789"
        env = {spec.api_key_env: key} if spec.api_key_env else {}

        async def run() -> dict[str, str]:
            async with FakeServer() as server:
                settings: dict[str, Any] = {"base_url": server.base_url}
                if not env:
                    settings["api_key"] = key
                async with AsyncClient({}, providers={self.provider: settings}, middleware=[],
                                       registry=Registry.load(autoload=True)) as client:  # fmt: skip
                    reply = await _ask(client, f"{self.provider}/echo", False)
                    assert not isinstance(reply, type), reply
                    return server.seen_headers[-1]

        with environment(env):
            sent = asyncio.run(run())
        assert key in sent.get(self.key_header, ""), f"the key did not arrive in {self.key_header!r}"

    def test_its_verdicts_do_not_crash_on_odd_errors(self) -> None:
        """``retryable`` gives True, False or None (not 0, 1 or another stand-in) for
        errors it was not written for; skipped, saying so, for a provider without one."""
        from ..errors import APIStatusError, ConnectError, StreamError

        spec = self._spec()
        if spec.retryable is None:
            pytest.skip(f"provider {self.provider!r} has no retryable(): the general retry rules decide every error")
        odd = [
            APIStatusError("x", status=429, body=None),
            APIStatusError("x", status=429, body="<html>"),
            APIStatusError("x", status=500, body={"error": None}),
            APIStatusError("x", status=402, body={"error": {"code": 7, "type": ["list"]}}),
            ConnectError("x"),
            StreamError("x", body={"error": "text"}),
        ]
        for exc in odd:
            verdict = spec.retryable(exc)
            assert verdict is True or verdict is False or verdict is None, (
                f"{exc!r}: retryable() returned {verdict!r}, not True, False or None"
            )
