"""Conformance suites for plugin authors: subclass one in your package's tests.

    # tests/test_conformance.py of a transport plugin
    from llmadapters.testing.conformance import TransportConformance
    from my_plugin import FEATURES, make_transport

    class TestMyTransport(TransportConformance):
        transport_factory = staticmethod(make_transport)
        supports = FEATURES               # what your plugin registers it with

    # tests/test_conformance.py of a provider plugin
    from llmadapters.testing.conformance import ProviderConformance

    class TestAcme(ProviderConformance):
        provider = "acme"                 # as your plugin registers it
        key_header = "authorization"      # where the key must arrive ("api-key", ...)

pytest collects the inherited ``test_*`` methods. They are plain (sync) tests that run
their own event loop against `FakeServer` (and small servers of their own) on loopback,
so no async pytest plugin is needed. A transport must give the same values and the same
error classes as the built-in ``httpx`` transport for the same bytes, send the same
request, free its connection when a call is cancelled, leave no file descriptor open
once closed, and honour each feature it claims in ``supports``; a provider must be
registered by the installed plugins, take its key from its variable, and send it where
it says.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import pytest

from ..client import AsyncClient
from ..errors import APIStatusError, APITimeoutError, ConfigError, ConnectError, LLMAdapterError, TransportError
from ..plugins import Registry
from ..transports.base import Endpoint
from ..transports.network import NetworkOptions
from .blackhole import ConnectBlackhole
from .fake_server import FakeServer, FakeServerOptions
from .providers import environment

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Collection

    from ..transports.base import ResponseInfo

__all__ = ["FAULTS", "STREAM_FAULTS", "VALUES", "ProviderConformance", "TransportConformance"]

_T = TypeVar("_T")
_MESSAGES = [{"role": "user", "content": "conformance check"}]
_FIXED_CLOCK = FakeServerOptions(clock=lambda: 1_700_000_000.0)
#: Replies (fake-server behaviours) a transport must decode as the reference does.
VALUES = ("echo", "echo+reasoning", "echo+keepalive", "echo+processing", "echo+crlf", "lorem")
#: Faults (fake-server behaviours) a transport must report with the reference's error
#: class, unary and streamed.
FAULTS = ("fail-400", "fail-401", "fail-429", "fail-500", "html-502", "reset", "reset-mid-body", "truncate",
          "malformed", "empty", "error-200", "huge-header", "stall", "redirect", "huge-body", "gzip-bomb")  # fmt: skip
#: Faults of streams only.
STREAM_FAULTS = ("stream-error", "stall-mid-stream")
_FAULT_CASES = [
    *(pytest.param(fault, stream, id=f"{fault}-{'stream' if stream else 'unary'}") for fault in FAULTS
      for stream in (False, True)),
    *(pytest.param(fault, True, id=f"{fault}-stream") for fault in STREAM_FAULTS),
]  # fmt: skip
_MODES = pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
# Headers an HTTP library sets by itself, which may differ from one transport to another
# (and the openai SDK's own x-stainless-* telemetry).
_LIBRARY_HEADERS = frozenset({"user-agent", "accept", "accept-encoding", "connection", "host"})
# A header the fake server answers with (``x-fake-reply-NAME: VALUE`` comes back as
# ``NAME: VALUE``), as providers send their rate limits.
_RATELIMIT = {"x-fake-reply-x-ratelimit-remaining-requests": "42"}
# Seconds a timeout of 0.2 s must have fired within: 50 times the setting, which a loaded
# machine does not reach, while a transport that ignores the per-call value and waits
# for a fixed one of its own (30 s, 60 s, ...) does.
_TIMEOUT_BOUND = 10.0


def _own_headers(headers: dict[str, str]) -> dict[str, str]:
    """The headers the transport was asked to send, and ``content-type``/``-length``."""
    return {k: v for k, v in headers.items() if k not in _LIBRARY_HEADERS and not k.startswith("x-stainless-")}


async def _ask(
    client: AsyncClient,
    model: str,
    stream: bool,
    *,
    catch: bool = True,
    messages: list[dict[str, Any]] = _MESSAGES,
    **options: Any,
) -> object:
    """The reply (a stream's chunks), or the class of the error (with ``catch=False``,
    the error itself)."""
    try:
        if not stream:
            return await client.chat.completions.create(model=model, messages=messages, **options)
        chunks = await client.chat.completions.create(model=model, messages=messages, stream=True, **options)
        return [chunk async for chunk in chunks]
    except LLMAdapterError as exc:
        return type(exc) if catch else exc


async def _error_of(client: AsyncClient, model: str, stream: bool, **options: Any) -> LLMAdapterError | None:
    """The error a call ends with (None: it succeeded)."""
    reply = await _ask(client, model, stream, catch=False, **options)
    return reply if isinstance(reply, LLMAdapterError) else None


async def _http_of(client: AsyncClient, stream: bool) -> ResponseInfo | None:
    """The ``http`` (`ResponseInfo`) of a successful reply, or of a stream read whole."""
    if not stream:
        return (await client.chat.completions.create(model="subject/echo", messages=_MESSAGES)).http
    chunks = await client.chat.completions.create(model="subject/echo", messages=_MESSAGES, stream=True)
    async with chunks:
        async for _ in chunks:
            pass
    return chunks.http


async def _within(seconds: float, what: str, call: Awaitable[_T]) -> _T:
    """What ``call`` returns, or an `AssertionError` saying that ``what`` did not happen
    within ``seconds`` (instead of waiting for as long as the transport does)."""
    try:
        return await asyncio.wait_for(call, seconds)
    except asyncio.TimeoutError:
        raise AssertionError(f"{what}: not within {seconds} s") from None


def _open_fds() -> int | None:
    """File descriptors open in this process, where the platform lists them."""
    for listing in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(listing):
            return len(os.listdir(listing))
    return None


class TransportConformance:
    """Set ``transport_factory``: what your ``register_transports`` hook registers
    (called with a `llmadapters.plugin.NetworkOptions`), and ``supports``: the
    `llmadapters.plugin.FEATURES` it registers. Each claimed feature with a check is
    exercised (``max_connections``, ``keepalive_expiry``, ``pool_timeout``,
    ``write_timeout``, ``proxy``, ``https_proxy``, ``socks_proxy``, ``tls``, ``http2``);
    the check of a feature not claimed is skipped, saying so.

    One test per behaviour of the fake server and mode (unary, stream): the values of
    `VALUES` and the errors of `FAULTS` (and, streamed, `STREAM_FAULTS`) must equal the
    built-in ``httpx`` transport's; so must a gzipped reply's values, the reply's status
    and headers (``reply.http``) and a 429's. A timeout the transport must apply per
    call (connect, and write or pool when claimed) must fire within `_TIMEOUT_BOUND`.

    The TLS, https-proxy and ``http2`` checks make their CA with ``trustme``: without
    it, the check of a claimed feature fails, saying what to install.
    """

    transport_factory: ClassVar[Callable[[Any], Any]]
    supports: ClassVar[Collection[str]] = ()

    def _registry(self) -> Registry:
        registry = Registry.builtin()
        registry.add_transport("subject", type(self).transport_factory, supports=self.supports)
        return registry

    def _client(self, transport: str, base_url: str, **settings: Any) -> AsyncClient:
        provider = {"base_url": base_url, **settings}
        return AsyncClient({}, transport=transport, providers={"subject": provider}, middleware=[],
                           registry=self._registry())  # fmt: skip

    def _both(self, model: str, stream: bool) -> tuple[object, object]:
        async def run() -> tuple[object, object]:
            async with FakeServer(_FIXED_CLOCK) as server:
                outcomes: dict[str, object] = {}
                for transport in ("httpx", "subject"):
                    client = self._client(transport, server.base_url, timeout={"read": 0.5},
                                          headers={"x-fake-stall-s": "2"})  # fmt: skip
                    async with client:
                        outcomes[transport] = await _ask(client, f"subject/{model}", stream)
                return outcomes["httpx"], outcomes["subject"]

        return asyncio.run(run())

    def _claims(self, feature: str) -> None:
        if feature not in self.supports:
            pytest.skip(f"the transport does not claim {feature!r} in supports")

    @_MODES
    @pytest.mark.parametrize("behaviour", VALUES)
    def test_value_equals_the_reference(self, behaviour: str, stream: bool) -> None:
        reference, subject = self._both(behaviour, stream)
        assert not isinstance(reference, type), f"the reference failed: {reference}"
        assert subject == reference

    @pytest.mark.parametrize(("fault", "stream"), _FAULT_CASES)
    def test_fault_raises_the_reference_error(self, fault: str, stream: bool) -> None:
        reference, subject = self._both(fault, stream)
        assert isinstance(reference, type), f"the reference did not fail: {reference}"
        assert subject is reference

    @_MODES
    def test_request_headers_and_body_equal_the_reference(self, stream: bool) -> None:
        async def run() -> list[tuple[dict[str, str], dict[str, Any], str]]:
            async with FakeServer(_FIXED_CLOCK) as server:
                for transport in ("httpx", "subject"):
                    client = self._client(transport, server.base_url, api_key="sk-conformance",
                                          headers={"x-extra": "1"}, query={"api-version": "2024-10-21"})  # fmt: skip
                    async with client:
                        reply = await _ask(client, "subject/echo", stream, temperature=0.5)
                        assert not isinstance(reply, type), reply
                seen = zip(server.seen_headers, server.seen_bodies, server.seen_targets, strict=True)
                return [(_own_headers(headers), body, target) for headers, body, target in seen]

        reference, subject = asyncio.run(run())
        assert subject == reference
        assert reference[0]["content-type"] == "application/json"

    @_MODES
    def test_a_gzipped_reply_equals_the_plain_one(self, stream: bool) -> None:
        """Providers compress their JSON (``content-encoding: gzip``) when the request
        accepts it: the values must be the uncompressed ones (read decoded bytes, not
        the raw ones). Skipped, saying so, for a transport that does not accept gzip."""

        async def run() -> tuple[object, object, str]:
            async with FakeServer(_FIXED_CLOCK) as server:
                async with self._client("subject", server.base_url) as client:
                    plain = await _ask(client, "subject/echo", stream)
                async with self._client("subject", server.base_url, headers={"x-fake-behaviour": "gzip"}) as client:
                    gzipped = await _ask(client, "subject/echo", stream)
                return plain, gzipped, server.seen_headers[-1].get("accept-encoding", "")

        plain, gzipped, accepted = asyncio.run(run())
        assert not isinstance(plain, type), f"the plain reply failed: {plain}"
        assert gzipped == plain
        if "gzip" not in accepted:
            pytest.skip(f"the transport does not accept gzip (accept-encoding: {accepted!r}): nothing was compressed")

    @_MODES
    def test_the_reply_carries_its_status_and_headers(self, stream: bool) -> None:
        """``reply.http`` (a stream's ``http``) holds the status and the response
        headers, looked up in any case: the rate limiter reads ``x-ratelimit-*`` there,
        and a user the ``x-request-id``."""

        async def run() -> list[ResponseInfo | None]:
            async with FakeServer(_FIXED_CLOCK) as server:
                infos = []
                for transport in ("httpx", "subject"):
                    async with self._client(transport, server.base_url, headers=_RATELIMIT) as client:
                        infos.append(await _http_of(client, stream))
                return infos

        reference, subject = asyncio.run(run())
        assert reference is not None
        assert subject is not None, "the reply has no http (ResponseInfo)"
        assert subject.status == 200
        request_id = reference.headers["x-request-id"]
        for name in ("x-request-id", "X-Request-Id", "X-REQUEST-ID"):
            assert subject.headers.get(name) == request_id, f"headers.get({name!r})"
        for name in ("x-ratelimit-remaining-requests", "X-RateLimit-Remaining-Requests"):
            assert subject.headers.get(name) == "42", f"headers.get({name!r})"

    @_MODES
    def test_an_error_status_carries_its_headers(self, stream: bool) -> None:
        """A 429's error holds the status, request id, headers and ``retry_after`` the
        reference's does: the retry middleware reads them."""

        async def run() -> list[LLMAdapterError | None]:
            async with FakeServer(_FIXED_CLOCK) as server:
                errors = []
                for transport in ("httpx", "subject"):
                    headers = {**_RATELIMIT, "x-fake-retry-after": "7"}
                    async with self._client(transport, server.base_url, headers=headers) as client:
                        errors.append(await _error_of(client, "subject/fail-429", stream))
                return errors

        def seen(error: LLMAdapterError | None) -> tuple[object, ...]:
            assert isinstance(error, APIStatusError), repr(error)
            headers = {name: error.headers.get(name) for name in ("retry-after", "x-ratelimit-remaining-requests")}
            return type(error), error.status, error.request_id, headers, getattr(error, "retry_after", None)

        reference, subject = asyncio.run(run())
        assert seen(subject) == seen(reference)
        assert seen(reference)[3] == {"retry-after": "7", "x-ratelimit-remaining-requests": "42"}

    @pytest.mark.parametrize("fault", ["fail-429", "fail-500"])
    def test_a_stream_raises_its_error_status_before_yielding_anything(self, fault: str) -> None:
        """The transport's ``stream`` itself (not through a client): an error status
        raises at the first item, so that nothing was yielded and the call can be
        retried."""

        async def run() -> object:
            async with FakeServer(_FIXED_CLOCK) as server:
                transport = type(self).transport_factory(NetworkOptions())
                endpoint = Endpoint(base_url=server.base_url, provider="subject")
                items = transport.stream(endpoint, {"model": fault, "messages": _MESSAGES, "stream": True})
                try:
                    return await items.__anext__()
                except LLMAdapterError as exc:
                    return exc
                finally:
                    await items.aclose()
                    await transport.aclose()

        first = asyncio.run(run())
        assert isinstance(first, APIStatusError), f"the stream yielded {first!r} before raising for its status"

    def test_connect_refused_is_a_connect_error(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]

        async def run() -> object:
            async with self._client("subject", f"http://127.0.0.1:{port}/v1") as client:
                return await _ask(client, "subject/echo", False)

        assert asyncio.run(run()) is ConnectError

    @_MODES
    def test_a_cancelled_call_frees_its_connection(self, stream: bool) -> None:
        """Cancelled while the server stalls, a call gives its connection back: with
        ``max_connections = 1`` (when claimed) the next call gets it, within
        `_TIMEOUT_BOUND` (and within its pool timeout of 2 s, when ``pool_timeout`` is
        claimed), although the stall lasts longer."""
        one: dict[str, Any] = {"max_connections": 1} if "max_connections" in self.supports else {}
        if "pool_timeout" in self.supports:
            one["timeout"] = {"pool": 2}

        async def run() -> object:
            async with FakeServer(_FIXED_CLOCK) as server:
                client = self._client("subject", server.base_url, headers={"x-fake-stall-s": "60"}, **one)
                async with client:
                    call = asyncio.ensure_future(_ask(client, "subject/stall", stream))
                    await _answering(server, call)
                    call.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await call
                    what = "the call after a cancelled one got a connection"
                    return await _within(_TIMEOUT_BOUND, what, _ask(client, "subject/echo", stream))

        reply = asyncio.run(run())
        assert not isinstance(reply, type), (
            f"the call after a cancelled one failed: {reply} (does the cancelled one hold its connection?)"
        )

    @_MODES
    def test_closing_the_client_closes_its_connections(self, stream: bool) -> None:
        """Once the client is closed (the transport's ``aclose``), the server sees every
        connection closed, within `_TIMEOUT_BOUND`."""

        async def run() -> None:
            async with FakeServer(_FIXED_CLOCK) as server:
                async with self._client("subject", server.base_url) as client:
                    replies = await asyncio.gather(*(_ask(client, "subject/echo", stream) for _ in range(4)))
                    assert not any(isinstance(r, type) for r in replies), replies
                await _within(_TIMEOUT_BOUND, "the server saw the connections closed", _closed(server))

        asyncio.run(run())

    def test_a_stream_stopped_early_frees_its_connection(self) -> None:
        """A stream closed after its first chunk gives its connection back: with
        ``max_connections = 1`` (when claimed) the next call gets it, within
        `_TIMEOUT_BOUND` (and its pool timeout of 2 s, when ``pool_timeout`` is
        claimed)."""
        one: dict[str, Any] = {"max_connections": 1} if "max_connections" in self.supports else {}
        if "pool_timeout" in self.supports:
            one["timeout"] = {"pool": 2}

        async def run() -> object:
            async with FakeServer(_FIXED_CLOCK) as server, self._client("subject", server.base_url, **one) as client:
                chunks = await client.chat.completions.create(
                    model="subject/lorem", messages=_MESSAGES, stream=True, max_tokens=4000
                )
                async for _ in chunks:
                    break
                await chunks.aclose()
                what = "the call after a stream stopped early got a connection"
                return await _within(_TIMEOUT_BOUND, what, _ask(client, "subject/echo", True))

        reply = asyncio.run(run())
        assert not isinstance(reply, type), (
            f"the call after a stream stopped early failed: {reply} (does the stream release its response?)"
        )

    def test_no_file_descriptor_is_left_open(self) -> None:
        async def run() -> None:
            async with FakeServer(_FIXED_CLOCK) as server, self._client("subject", server.base_url) as client:
                replies = await asyncio.gather(*(_ask(client, "subject/echo", i % 2 == 1) for i in range(8)))
                assert not any(isinstance(r, type) for r in replies), replies

        asyncio.run(run())  # imports and first-use caches, before counting
        before = _open_fds()
        if before is None:
            pytest.skip("this platform lists no open file descriptors")
        asyncio.run(run())
        assert _open_fds() == before

    def test_max_connections_bounds_the_connections(self) -> None:
        self._claims("max_connections")

        async def run() -> tuple[int, int]:
            async with FakeServer(FakeServerOptions(ttft=0.05)) as server:
                async with self._client("subject", server.base_url, max_connections=2) as client:
                    replies = await asyncio.gather(*(_ask(client, "subject/echo", False) for _ in range(6)))
                    assert not any(isinstance(r, type) for r in replies), replies
                return server.peak_active, server.connections_opened

        peak, opened = asyncio.run(run())
        assert peak <= 2
        assert opened <= 2

    def test_keepalive_expiry_drops_an_idle_connection(self) -> None:
        self._claims("keepalive_expiry")

        async def run(expiry: float | None) -> int:
            settings = {} if expiry is None else {"keepalive_expiry": expiry}
            async with (
                FakeServer(_FIXED_CLOCK) as server,
                self._client("subject", server.base_url, **settings) as client,
            ):
                for _ in range(2):
                    reply = await _ask(client, "subject/echo", False)
                    assert not isinstance(reply, type), reply
                    if expiry is not None:
                        await asyncio.sleep(5 * expiry)  # idle for longer than the expiry
            return server.connections_opened

        assert asyncio.run(run(None)) == 1  # the second call reuses the connection
        assert asyncio.run(run(0.2)) == 2  # idle past 0.2 s, it was dropped

    def test_pool_timeout_bounds_the_wait_for_a_connection(self) -> None:
        self._claims("pool_timeout")

        async def run() -> object:
            async with FakeServer(_FIXED_CLOCK) as server:
                client = self._client("subject", server.base_url, max_connections=1, timeout={"pool": 0.1},
                                      headers={"x-fake-stall-s": "2"})  # fmt: skip
                async with client:
                    held = asyncio.ensure_future(_ask(client, "subject/stall", False))
                    await _answering(server, held)
                    waited = await _ask(client, "subject/echo", False)
                    held.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await held
                    return waited

        assert asyncio.run(run()) is APITimeoutError

    def test_write_timeout_bounds_an_upload_the_server_does_not_read(self) -> None:
        self._claims("write_timeout")

        async def run() -> LLMAdapterError | None:
            big = [{"role": "user", "content": "x" * (16 * 1024 * 1024)}]
            async with _server_that_never_reads() as base_url:
                client = self._client("subject", base_url, timeout={"write": 0.2, "read": 30})
                async with client:
                    call = _error_of(client, "subject/echo", False, messages=big)
                    return await _within(_TIMEOUT_BOUND, "the write timeout of 0.2 s fired", call)

        error = asyncio.run(run())
        assert isinstance(error, APITimeoutError), repr(error)
        assert str(error).startswith("write timeout"), str(error)

    def test_connect_timeout_bounds_a_connection_that_never_opens(self) -> None:
        """``timeout.connect`` applies per call: a connect that hangs (its SYN dropped by
        a full accept queue of 127.0.0.1) ends in a connect timeout. Skipped, saying
        so, where the system's TCP stack refuses instead of dropping."""
        try:
            blackhole = ConnectBlackhole()
        except RuntimeError as exc:
            pytest.skip(f"no loopback address where a connect hangs on this system: {exc}")

        async def run() -> LLMAdapterError | None:
            client = self._client("subject", f"{blackhole.url}/v1", timeout={"connect": 0.2, "read": 30})
            async with client:
                call = _error_of(client, "subject/echo", False)
                return await _within(_TIMEOUT_BOUND, "the connect timeout of 0.2 s fired", call)

        with blackhole:
            error = asyncio.run(run())
        assert isinstance(error, APITimeoutError), repr(error)
        assert str(error).startswith("connect timeout"), str(error)

    def test_an_http_proxy_carries_the_call(self) -> None:
        self._claims("proxy")
        self._through_a_forwarding_proxy(None)

    def test_an_https_proxy_carries_the_call(self, tmp_path: Any) -> None:
        self._claims("https_proxy")
        self._through_a_forwarding_proxy(_test_ca(tmp_path, "https_proxy"))

    def _through_a_forwarding_proxy(self, tls: tuple[str, ssl.SSLContext] | None) -> None:
        """A call through `_http_proxy`, reached over TLS (``tls``: the CA file the
        client verifies with, and the proxy's server context) or not."""
        verify = {} if tls is None else {"verify": tls[0]}

        async def run() -> tuple[object, list[bytes]]:
            async with FakeServer(_FIXED_CLOCK) as server, _http_proxy(tls and tls[1]) as (proxy_url, seen):
                client = self._client("subject", server.base_url, proxy=proxy_url, **verify)
                async with client:
                    return await _ask(client, "subject/echo", False), seen

        reply, seen = asyncio.run(run())
        assert not isinstance(reply, type), reply
        assert seen, "the proxy saw no request"
        assert seen[0].startswith(b"POST http://127.0.0.1:"), seen

    def test_a_socks5_proxy_carries_the_call(self) -> None:
        self._claims("socks_proxy")

        async def run() -> tuple[object, list[str], str]:
            async with FakeServer(_FIXED_CLOCK) as server, _socks5_proxy() as (proxy_url, seen):
                client = self._client("subject", server.base_url, proxy=proxy_url)
                async with client:
                    return await _ask(client, "subject/echo", False), seen, server.base_url

        reply, seen, base_url = asyncio.run(run())
        assert not isinstance(reply, type), reply
        assert seen == [base_url.split("/")[2]], seen

    def test_tls_verifies_against_the_given_ca(self, tmp_path: Any) -> None:
        self._claims("tls")
        ca_file, server_context = _test_ca(tmp_path, "tls")

        async def run(verify: str | None) -> object:
            async with FakeServer(_FIXED_CLOCK, ssl=server_context) as server:
                settings: dict[str, Any] = {} if verify is None else {"verify": verify}
                async with self._client("subject", server.base_url, **settings) as client:
                    return await _ask(client, "subject/echo", False)

        trusted = asyncio.run(run(ca_file))
        assert not isinstance(trusted, type), trusted
        assert asyncio.run(run(None)) is ConnectError  # the system's CAs do not know this one

    def test_http2_is_asked_for_when_set(self, tmp_path: Any) -> None:
        """With ``http2 = true``, the TLS handshake offers ``h2`` (ALPN); without it, only
        HTTP/1.1. The fake server speaks HTTP/1.1 alone, so the call that agreed on h2
        fails as a `TransportError`: what is checked is what the transport asked for.
        A transport that does not claim ``http2`` is refused the setting instead."""
        if "http2" not in self.supports:
            with pytest.raises(ConfigError, match="cannot honour http2 = true"):
                self._client("subject", "https://127.0.0.1:9/v1", http2=True)
            return
        self._claims("tls")
        ca_file, server_context = _test_ca(tmp_path, "http2")
        server_context.set_alpn_protocols(["h2", "http/1.1"])

        async def run() -> tuple[object, object, list[str | None]]:
            async with FakeServer(_FIXED_CLOCK, ssl=server_context) as server:
                async with self._client("subject", server.base_url, verify=ca_file) as client:
                    plain = await _ask(client, "subject/echo", False)
                async with self._client("subject", server.base_url, verify=ca_file, http2=True) as client:
                    asked = await _ask(client, "subject/echo", False)
                return plain, asked, server.alpn_protocols

        plain, asked, chosen = asyncio.run(run())
        assert not isinstance(plain, type), plain
        assert isinstance(asked, type), asked
        assert issubclass(asked, TransportError), asked
        assert chosen[0] in ("http/1.1", None), chosen  # (no ALPN offered at all is HTTP/1.1 too)
        assert chosen[-1] == "h2", chosen


def _test_ca(directory: Any, feature: str) -> tuple[str, ssl.SSLContext]:
    """A CA of the test's own, written to a file in ``directory``, and a server context
    with its certificate for 127.0.0.1. Without trustme, the check of the claimed
    ``feature`` fails, saying what to install (it is not skipped: a claim stays checked)."""
    try:
        import trustme
    except ImportError:
        pytest.fail(f"the transport claims {feature!r}, whose check makes its CA with trustme: pip install trustme")
    ca = trustme.CA()
    ca_file = str(directory / "ca.pem")
    ca.cert_pem.write_to_path(ca_file)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    return ca_file, server_context


async def _closed(server: FakeServer) -> None:
    """Return once ``server`` has no connection open."""
    while server.open_connections:  # noqa: ASYNC110 - the fake server has no event for it
        await asyncio.sleep(0.01)


async def _answering(server: FakeServer, call: asyncio.Future[object]) -> None:
    """Return once ``server`` is answering a call (or ``call`` ended without one)."""
    while server.active == 0 and not call.done():  # noqa: ASYNC110 - the fake server has no event for it
        await asyncio.sleep(0.01)
    if call.done():
        raise AssertionError(f"the call ended before the server answered: {call.result()!r}")


@contextlib.asynccontextmanager
async def _server_that_never_reads() -> AsyncIterator[str]:
    """A server that accepts a connection and reads nothing: an upload stalls."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def _http_proxy(tls: ssl.SSLContext | None = None) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A forwarding proxy for http:// (a request line with an absolute URL, sent on to
    the loopback host it names), reached over TLS when given ``tls``, and the request
    lines it saw."""
    seen: list[bytes] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        seen.append(line)
        method, url, version = line.split(b" ")
        host_port, _, path = url.split(b"://")[1].partition(b"/")
        host, _, port = host_port.decode().rpartition(":")
        assert host == "127.0.0.1", host  # loopback only
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        up_writer.write(b"%s /%s %s" % (method, path, version))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(accept, "127.0.0.1", 0, ssl=tls)
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.sockets[0].getsockname()[1]}", seen
    finally:
        server.close()
        await server.wait_closed()


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
        from ..errors import StreamError

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


@contextlib.asynccontextmanager
async def _socks5_proxy() -> AsyncIterator[tuple[str, list[str]]]:
    """A SOCKS5 proxy without authentication that connects only to loopback, and the
    ``host:port`` of each CONNECT it was asked for."""
    seen: list[str] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, methods = await reader.readexactly(2)
        await reader.readexactly(methods)
        writer.write(b"\x05\x00")  # no authentication
        _, _, _, kind = await reader.readexactly(4)
        if kind == 1:
            host = socket.inet_ntoa(await reader.readexactly(4))
        else:  # 3: a name, as socks5h:// (and rdns) send it
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        port = int.from_bytes(await reader.readexactly(2), "big")
        seen.append(f"{host}:{port}")
        if host != "127.0.0.1":  # loopback only
            writer.write(b"\x05\x02\x00\x01" + bytes(6))
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(host, port)
        writer.write(b"\x05\x00\x00\x01" + socket.inet_aton(host) + port.to_bytes(2, "big"))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield f"socks5://127.0.0.1:{server.sockets[0].getsockname()[1]}", seen
    finally:
        server.close()
        await server.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()
