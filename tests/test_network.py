"""Network settings per provider: the config keys, their refusal where a transport
cannot honour them, and each one honoured by every transport against local servers
(the fake server, and the proxies and stall servers of tests/netservers.py)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import TYPE_CHECKING, Any

import pytest

import llmadapters as la
from llmadapters.config import load_settings
from llmadapters.testing import FakeServer
from llmadapters.transports.network import ClientCertificate, proxy_for, redact_url
from tests.conftest import test_registry

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from netservers import ConnectBlackhole, HttpsProxy, LoopbackCA, NoReadServer, SocksProxy, TinyProxy

MESSAGES = [{"role": "user", "content": "hi"}]


async def ask(client: la.AsyncClient, model: str = "local/echo", *, stream: bool = False) -> str:
    if not stream:
        reply = await client.chat.completions.create(model=model, messages=MESSAGES)
        return reply.choices[0].message.content or ""
    chunks = await client.chat.completions.create(model=model, messages=MESSAGES, stream=True)
    return "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])


# -- configuration -----------------------------------------------------------------


def test_network_keys_merge_key_by_key_from_defaults_to_provider(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("")
    config = tmp_path / "llmadapters.toml"
    config.write_text(
        """
        [defaults]
        proxy = "http://user:pw@127.0.0.1:3128"
        verify = "ca.pem"
        max_connections = 10
        query = { "api-version" = "1" }
        headers = { x-team = "a" }

        [providers.local]
        base_url = "http://127.0.0.1:9/v1"
        proxy = false
        http2 = true
        query = { extra = "2" }
        cert = { cert = "ca.pem", password_env = "KEY_PASSWORD" }
        """
    )
    settings = load_settings(config, keepalive_expiry=3)
    local = settings.network_of("local")
    assert local.proxy is False
    assert local.verify == str(tmp_path / "ca.pem")  # relative to the config file
    assert local.max_connections == 10
    assert local.keepalive_expiry == 3.0
    assert local.http2 is True
    assert local.cert == ClientCertificate(certfile=str(tmp_path / "ca.pem"), password_env="KEY_PASSWORD")
    assert settings.network_of("other").proxy == "http://user:pw@127.0.0.1:3128"
    assert settings.query_of("local") == {"api-version": "1", "extra": "2"}
    assert settings.headers_of("local") == {"x-team": "a"}
    assert "pw" not in repr(settings)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            {"proxy": "ftp://127.0.0.1:21"},
            "defaults.proxy: invalid proxy URL 'ftp://127.0.0.1:21': expected http:// or https:// or socks5://",
        ),
        ({"proxy": "http://user:secret@127.0.0.1:99999"}, "invalid proxy URL 'http://****@127.0.0.1:99999'"),
        ({"proxy": 3128}, "defaults.proxy: expected a proxy URL or false, got 3128"),
        ({"verify": "no/such/ca.pem"}, "defaults.verify: no such file or directory"),
        ({"cert": {"key": "k.pem"}}, "defaults.cert: a [cert] table needs cert"),
        ({"cert": {"cert": "c.pem", "pasword_env": "X"}}, "defaults.cert.pasword_env: unknown key"),
        ({"max_connections": 0}, "defaults.max_connections: expected a whole number >= 1, got 0"),
        ({"keepalive_expiry": -1}, "defaults.keepalive_expiry: expected a positive number of seconds"),
        ({"http2": "yes"}, "defaults.http2: expected true or false, got 'yes'"),
        ({"query": {"api-version": 1}}, "defaults.query.api-version: expected a string, got 1"),
    ],
)
def test_bad_network_settings_fail_at_load(table: dict[str, Any], message: str) -> None:
    with pytest.raises(la.ConfigError) as info:
        load_settings({"defaults": table})
    assert message in str(info.value)
    assert "secret" not in str(info.value)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"http2": True}, "providers.local.http2: transport 'aiohttp' cannot honour http2 = true; "),
        ({"http2": True, "proxy": False}, "transports that can: httpx, openai, openai-httpx"),
    ],
)
def test_a_setting_the_transport_cannot_honour_is_refused_when_the_client_is_made(
    settings: dict[str, Any], message: str
) -> None:
    providers = {"local": {"base_url": "http://127.0.0.1:9/v1", "transport": "aiohttp", **settings}}
    with pytest.raises(la.ConfigError) as info:
        la.AsyncClient({}, providers=providers, registry=test_registry())
    assert message in str(info.value)


def test_a_transport_that_declares_no_features_refuses_every_network_setting() -> None:
    registry = test_registry()
    registry.add_transport("plain", lambda options: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(la.ConfigError, match=r"defaults.proxy: transport 'plain' cannot honour an http:// proxy"):
        la.AsyncClient({}, transport="plain", proxy="http://127.0.0.1:3128", registry=registry)
    with pytest.raises(la.ConfigError, match=r"defaults.verify: transport 'plain' cannot honour verify = false"):
        la.AsyncClient({}, transport="plain", verify=False, registry=registry)
    with pytest.raises(la.PluginError, match="supports unknown features"):
        registry.add_transport("typo", lambda options: None, supports=["proxys"])  # type: ignore[arg-type,return-value]


def test_proxy_resolution_follows_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://corp:3128")
    monkeypatch.setenv("http_proxy", "plain-host:8080")
    monkeypatch.setenv("NO_PROXY", "internal.example,127.0.0.2")
    assert proxy_for("https://api.example/v1", None) == ("http://corp:3128", "https_proxy")
    assert proxy_for("http://api.example/v1", None) == ("http://plain-host:8080", "http_proxy")
    assert proxy_for("https://internal.example/v1", None) == (None, None)
    assert proxy_for("http://127.0.0.2:8000/v1", None) == (None, None)
    assert proxy_for("https://api.example/v1", False) == (None, None)
    assert proxy_for("https://api.example/v1", "socks5://127.0.0.1:1080") == ("socks5://127.0.0.1:1080", None)
    assert redact_url("http://user:pass@corp:3128") == "http://****@corp:3128"
    assert redact_url("http://user:p@ss@[::1/v1") == "http://****@[::1/v1"
    assert redact_url("http://user:pa/ss@corp:3128") == "http://****@corp:3128"
    assert redact_url("socks5://127.0.0.1:1080") == "socks5://127.0.0.1:1080"


async def test_an_unsupported_proxy_from_the_environment_fails_the_call_clearly(
    monkeypatch: pytest.MonkeyPatch, fake_server: FakeServer
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "socks4://user:secret@127.0.0.1:1080")
    async with la.AsyncClient({}, providers={"local": {"base_url": fake_server.base_url}}, middleware=[]) as client:
        with pytest.raises(la.ConfigError) as info:
            await ask(client)
    assert "http_proxy holds an unsupported proxy URL 'socks4://****@127.0.0.1:1080'" in str(info.value)
    assert fake_server.requests_served == 0


async def test_an_env_proxy_the_transport_cannot_use_is_refused(
    monkeypatch: pytest.MonkeyPatch, fake_server: FakeServer
) -> None:
    monkeypatch.setenv("http_proxy", "https://127.0.0.1:1")
    registry = test_registry()
    registry.add_transport("plain", lambda options: None)  # type: ignore[arg-type,return-value]
    providers = {"local": {"base_url": fake_server.base_url}}
    async with la.AsyncClient({}, transport="plain", providers=providers, registry=registry) as client:
        with pytest.raises(la.ConfigError, match=r"\(proxy from http_proxy\)\.proxy: transport 'plain' cannot"):
            await ask(client)


# -- query, connection limits, keep-alive --------------------------------------------


async def test_query_parameters_reach_the_server(
    transport: str, make_client: Callable[..., la.AsyncClient], fake_server: FakeServer
) -> None:
    client = make_client(transport, query={"api-version": "2024-10-21", "x": "a b"})
    assert await ask(client) == "hi"
    assert await ask(client, stream=True) == "hi"
    assert list(fake_server.seen_targets) == ["/v1/chat/completions?api-version=2024-10-21&x=a+b"] * 2


@pytest.mark.parametrize("source", ["max_connections", "limits.max_concurrency"])
async def test_max_connections_caps_the_connections_in_use(
    transport: str, source: str, make_client: Callable[..., la.AsyncClient], fake_server: FakeServer
) -> None:
    setting = {"max_connections": 3} if source == "max_connections" else {"limits": {"max_concurrency": 3}}
    # No ratelimit middleware: only the transport's connection limit holds the calls back.
    client = make_client(transport, headers={"x-fake-ttft-ms": "50"}, **setting)
    replies = await asyncio.gather(*(ask(client) for _ in range(12)))
    assert replies == ["hi"] * 12
    assert fake_server.peak_active == 3
    assert fake_server.connections_opened == 3


async def test_keepalive_expiry_closes_idle_connections(
    transport: str, make_client: Callable[..., la.AsyncClient], fake_server: FakeServer
) -> None:
    short = make_client(transport, keepalive_expiry=0.2)
    await ask(short)
    await asyncio.sleep(0.5)
    await ask(short)
    assert fake_server.connections_opened == 2
    default = make_client(transport)
    await ask(default)
    await asyncio.sleep(0.5)
    await ask(default)
    assert fake_server.connections_opened == 3  # the default (5 s) kept it


# -- timeouts, each at its own bound -------------------------------------------------


async def _failure(client: la.AsyncClient, model: str = "local/echo", **params: Any) -> tuple[Exception, float]:
    """The error of one call, and how long it took to come."""
    started = time.monotonic()
    with pytest.raises(la.LLMAdapterError) as info:
        await client.chat.completions.create(model=model, messages=MESSAGES, **params)
    return info.value, time.monotonic() - started


async def test_the_read_timeout_bounds_a_stalled_reply(
    transport: str, make_client: Callable[..., la.AsyncClient]
) -> None:
    client = make_client(transport, timeout={"read": 0.4}, headers={"x-fake-stall-s": "5"})
    error, took = await _failure(client, "local/stall")
    # Its words say which bound ended the call (the stall would have ended it later, no timeout).
    assert isinstance(error, la.APITimeoutError)
    assert str(error).startswith("read timeout on ")
    assert took > 0.35


async def test_the_pool_timeout_bounds_the_wait_for_a_connection(
    transport: str, make_client: Callable[..., la.AsyncClient]
) -> None:
    client = make_client(
        transport, max_connections=1, timeout={"pool": 0.3, "read": 5}, headers={"x-fake-stall-s": "2"}
    )
    holder = asyncio.create_task(ask(client, "local/stall"))
    await asyncio.sleep(0.2)  # the only connection is taken
    error, took = await _failure(client)
    assert isinstance(error, la.APITimeoutError)
    assert str(error).startswith("pool timeout on ")
    assert took > 0.25
    holder.cancel()
    await asyncio.gather(holder, return_exceptions=True)


async def test_the_total_timeout_bounds_a_stream_that_trickles_under_the_read_timeout(
    transport: str, make_client: Callable[..., la.AsyncClient]
) -> None:
    # 100 tokens at 20/s: a chunk every 50 ms, far under the read timeout; 5 s in all.
    client = make_client(
        transport, middleware=["timeout"], timeout={"total": 0.5, "read": 5}, headers={"x-fake-tps": "20"}
    )

    async def read_all() -> None:
        chunks = await client.chat.completions.create(
            model="local/text", messages=MESSAGES, stream=True, max_tokens=100
        )
        async for _ in chunks:
            pass

    started = time.monotonic()
    with pytest.raises(la.APITimeoutError, match=r"^total timeout on "):
        await read_all()
    assert time.monotonic() - started > 0.45


async def test_the_connect_timeout_bounds_a_connection_that_never_opens(
    transport: str, make_client: Callable[..., la.AsyncClient], connect_blackhole: ConnectBlackhole
) -> None:
    client = make_client(transport, base_url=connect_blackhole.url, timeout={"connect": 0.4, "read": 30})
    error, took = await _failure(client)
    assert isinstance(error, la.APITimeoutError)
    assert str(error).startswith("connect timeout on ")
    assert took > 0.35


async def test_the_write_timeout_bounds_an_upload_the_server_does_not_read(
    transport: str, make_client: Callable[..., la.AsyncClient], no_read_server: NoReadServer
) -> None:
    client = make_client(transport, base_url=no_read_server.url, timeout={"write": 0.4, "read": 30})
    big = [{"role": "user", "content": "x" * 16_000_000}]
    started = time.monotonic()
    with pytest.raises(la.APITimeoutError, match=r"^write timeout on "):
        await client.chat.completions.create(model="local/echo", messages=big)
    assert time.monotonic() - started > 0.35


async def test_a_large_body_is_sent_whole_under_a_write_timeout(
    transport: str, make_client: Callable[..., la.AsyncClient]
) -> None:
    client = make_client(transport, timeout={"write": 5})
    text = "".join(f"{i:07d} " for i in range(40_000))  # 320 KB: several chunks
    reply = await client.chat.completions.create(model="local/echo", messages=[{"role": "user", "content": text}])
    assert reply.choices[0].message.content == text


# -- proxies -------------------------------------------------------------------------


@pytest.fixture
async def two_providers(fake_server: FakeServer, transport: str) -> AsyncIterator[Callable[..., la.AsyncClient]]:
    """Clients with providers ``via`` and ``direct``, both on the fake server, each with
    its own settings."""
    clients: list[la.AsyncClient] = []

    def make(via: dict[str, Any], direct: dict[str, Any], **defaults: Any) -> la.AsyncClient:
        providers = {
            "via": {"base_url": fake_server.base_url, **via},
            "direct": {"base_url": fake_server.base_url, **direct},
        }
        client = la.AsyncClient(
            {}, transport=transport, providers=providers, middleware=[], registry=test_registry(), **defaults
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def _port(server: FakeServer) -> str:
    return server.base_url.split(":")[2].split("/")[0]


async def test_a_provider_uses_its_proxy_and_another_with_proxy_false_does_not(
    two_providers: Callable[..., la.AsyncClient],
    fake_server: FakeServer,
    tinyproxy: TinyProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The environment names the proxy too: proxy = false must ignore it.
    monkeypatch.setenv("HTTP_PROXY", tinyproxy.url)
    client = two_providers(via={"proxy": tinyproxy.url}, direct={"proxy": False})
    target = f"127.0.0.1:{_port(fake_server)}"
    mark = tinyproxy.mark()
    assert await ask(client, "via/echo") == "hi"
    assert await ask(client, "via/echo", stream=True) == "hi"
    assert tinyproxy.targets_since(mark) == [target, target]
    mark = tinyproxy.mark()
    assert await ask(client, "direct/echo") == "hi"
    assert await ask(client, "direct/echo", stream=True) == "hi"
    assert tinyproxy.requests_since(mark) == []
    assert fake_server.requests_served == 4


async def test_proxies_come_from_the_environment_by_default_except_for_no_proxy_hosts(
    two_providers: Callable[..., la.AsyncClient],
    fake_server: FakeServer,
    tinyproxy: TinyProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("http_proxy", tinyproxy.url)
    client = two_providers(via={}, direct={})
    mark = tinyproxy.mark()
    assert await ask(client, "via/echo") == "hi"
    assert tinyproxy.targets_since(mark) == [f"127.0.0.1:{_port(fake_server)}"]
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    fresh = two_providers(via={}, direct={})
    mark = tinyproxy.mark()
    assert await ask(fresh, "via/echo") == "hi"
    assert tinyproxy.requests_since(mark) == []


async def test_proxy_credentials_never_show(
    two_providers: Callable[..., la.AsyncClient],
    tinyproxy: TinyProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = tinyproxy.url.replace(tinyproxy.password, "wrong-proxy-pass")
    client = two_providers(via={"proxy": wrong}, direct={"proxy": tinyproxy.url})
    client._middleware = None  # the configured chain: logging included
    shown: list[str] = [repr(client.settings), str(client.settings.providers)]
    with caplog.at_level(logging.DEBUG, logger="llmadapters"):
        for stream in (False, True):
            with pytest.raises(la.LLMAdapterError) as info:
                await ask(client, "via/echo", stream=stream)
            error: BaseException | None = info.value
            while error is not None:  # the whole chain, native exceptions included
                shown += [str(error), repr(error), repr(vars(error)) if hasattr(error, "__dict__") else ""]
                error = error.__cause__ or error.__context__
        assert await ask(client, "direct/echo") == "hi"
    shown += [record.getMessage() for record in caplog.records] + [repr(r.__dict__) for r in caplog.records]
    shown += [repr(route) for route in client._routes.values()]
    text = "\n".join(shown)
    assert "wrong-proxy-pass" not in text
    assert tinyproxy.password not in text
    assert "****@127.0.0.1" in text


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
async def test_a_socks5_proxy(
    transport: str,
    scheme: str,
    two_providers: Callable[..., la.AsyncClient],
    fake_server: FakeServer,
    socks_proxy: SocksProxy,
) -> None:
    url = socks_proxy.url.replace("socks5://", f"{scheme}://")
    client = two_providers(via={"proxy": url}, direct={"proxy": False})
    mark = socks_proxy.mark()
    assert await ask(client, "via/echo") == "hi"
    assert await ask(client, "via/echo", stream=True) == "hi"
    assert socks_proxy.targets_since(mark)[-1] == f"127.0.0.1:{_port(fake_server)}"
    mark = socks_proxy.mark()
    assert await ask(client, "direct/echo") == "hi"
    assert socks_proxy.targets_since(mark) == []


# -- TLS -----------------------------------------------------------------------------


@pytest.fixture
async def https_server(test_ca: LoopbackCA) -> AsyncIterator[FakeServer]:
    async with FakeServer(ssl=test_ca.server_ssl_context()) as server:
        yield server


async def test_tls_verifies_with_the_configured_ca_and_fails_clearly_without_it(
    transport: str,
    two_providers: Callable[..., la.AsyncClient],
    https_server: FakeServer,
    test_ca: LoopbackCA,
) -> None:
    assert https_server.base_url.startswith("https://")
    client = two_providers(
        via={"base_url": https_server.base_url, "verify": str(test_ca.ca_pem)},
        direct={"base_url": https_server.base_url},
    )
    assert await ask(client, "via/echo") == "hi"
    assert await ask(client, "via/echo", stream=True) == "hi"
    with pytest.raises(la.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        await ask(client, "direct/echo")
    unverified = two_providers(via={"base_url": https_server.base_url, "verify": False}, direct={})
    assert await ask(unverified, "via/echo") == "hi"


async def test_tls_through_a_connect_tunnel(
    transport: str,
    two_providers: Callable[..., la.AsyncClient],
    https_server: FakeServer,
    test_ca: LoopbackCA,
    tinyproxy: TinyProxy,
) -> None:
    client = two_providers(
        via={"base_url": https_server.base_url, "verify": str(test_ca.ca_pem), "proxy": tinyproxy.url},
        direct={"base_url": https_server.base_url, "proxy": tinyproxy.url},
    )
    mark = tinyproxy.mark()
    assert await ask(client, "via/echo") == "hi"
    assert await ask(client, "via/echo", stream=True) == "hi"
    port = _port(https_server)
    assert any(line.startswith(f"CONNECT 127.0.0.1:{port}") for line in tinyproxy.requests_since(mark))
    with pytest.raises(la.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        await ask(client, "direct/echo")


async def test_a_client_certificate(
    transport: str, two_providers: Callable[..., la.AsyncClient], test_ca: LoopbackCA
) -> None:
    async with FakeServer(ssl=test_ca.server_ssl_context(require_client_cert=True)) as server:
        verify = str(test_ca.ca_pem)
        cert = {"cert": str(test_ca.client_cert_only_pem), "key": str(test_ca.client_key_pem)}
        client = two_providers(
            via={"base_url": server.base_url, "verify": verify, "cert": cert},
            direct={"base_url": server.base_url, "verify": verify},
        )
        assert await ask(client, "via/echo") == "hi"
        with pytest.raises(la.TransportError):
            await ask(client, "direct/echo")
        assert server.requests_served == 1


async def test_an_https_proxy(
    transport: str,
    two_providers: Callable[..., la.AsyncClient],
    fake_server: FakeServer,
    https_proxy: HttpsProxy,
    test_ca: LoopbackCA,
) -> None:
    client = two_providers(via={"proxy": https_proxy.url, "verify": str(test_ca.ca_pem)}, direct={})
    mark = https_proxy.mark()
    assert await ask(client, "via/echo") == "hi"
    assert https_proxy.targets_since(mark) == [f"127.0.0.1:{_port(fake_server)}"]


@pytest.mark.parametrize("transport", ["httpx", "openai", "openai-httpx"])
async def test_http2_is_negotiated_when_asked(
    transport: str, two_providers: Callable[..., la.AsyncClient], test_ca: LoopbackCA
) -> None:
    context = test_ca.server_ssl_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    async with FakeServer(ssl=context) as server:  # it speaks HTTP/1.1 only, but ALPN tells what was asked
        verify = str(test_ca.ca_pem)
        client = two_providers(
            via={"base_url": server.base_url, "verify": verify, "http2": True},
            direct={"base_url": server.base_url, "verify": verify},
        )
        assert await ask(client, "direct/echo") == "hi"
        with pytest.raises(la.TransportError):
            await ask(client, "via/echo")
        direct, via = server.alpn_protocols  # aiohttp, under the openai transport, offers no ALPN
        assert direct in ("http/1.1", None)
        assert via == "h2"


def test_tls_errors_of_the_settings_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    from llmadapters.transports.network import ssl_context

    with pytest.raises(la.ConfigError, match="verify: cannot load the CA certificates"):
        ssl_context(str(bad), None)
    with pytest.raises(la.ConfigError, match="cert: cannot load the client certificate"):
        ssl_context(True, ClientCertificate(certfile=str(bad)))
    assert isinstance(ssl_context(False, None), ssl.SSLContext)
    unset = ClientCertificate(certfile=str(bad), password_env="NO_SUCH_KEY_PASSWORD")
    with pytest.raises(la.ConfigError, match=r"cert\.password_env: the variable NO_SUCH_KEY_PASSWORD is not"):
        ssl_context(True, unset)


def test_proxy_schemes_are_kept_in_lower_case(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings({"defaults": {"proxy": "SOCKS5://u:p@127.0.0.1:1080"}})
    assert settings.network.proxy == "socks5://u:p@127.0.0.1:1080"
    monkeypatch.setenv("HTTPS_PROXY", "HTTPS://127.0.0.1:3129")
    assert proxy_for("https://api.example/v1", None) == ("https://127.0.0.1:3129", "https_proxy")
