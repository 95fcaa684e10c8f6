"""Bad configuration fails at load with the source, the key path and what is allowed."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

import llmadapters as la
from llmadapters.config import SCHEMA, load_settings
from llmadapters.policies import Timeouts

if TYPE_CHECKING:
    from pathlib import Path

    from llmadapters.testing import FakeServer


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "llmadapters.toml"
    path.write_text(text)
    return path


def test_a_full_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[defaults]
model = "fake/echo"
transport = "openai"
timeout = 30

[providers.deepseek]
transport = "httpx"
timeout = { connect = 2, read = 120 }
headers = { "x-trace" = "on" }

[providers.local]
base_url = "http://127.0.0.1:8000/v1"
api_key_env = "LOCAL_KEY"
model = "qwen"
""",
    )
    settings = load_settings(path)
    assert (settings.model, settings.transport) == ("fake/echo", "openai")
    assert settings.timeouts == Timeouts(connect=30, read=30, write=30, pool=30)
    assert settings.transport_of("deepseek") == "httpx"
    assert settings.transport_of("local") == "openai"
    assert settings.timeouts_of("deepseek") == Timeouts(connect=2, read=120)
    assert settings.provider("deepseek").headers == {"x-trace": "on"}
    assert settings.provider("local").api_key_env == ("LOCAL_KEY",)
    assert settings.sources == (str(path),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[defaults\nmodel = 1", "invalid TOML"),
        ("[defualts]\nmodel = 'fake/echo'", "defualts: unknown key; allowed: defaults, providers"),
        (
            "[defaults]\nmodle = 'x'",
            "defaults.modle: unknown key; allowed: model, transport, timeout, middleware, retry",
        ),
        ("[defaults]\nmodel = 3", "defaults.model: expected a non-empty string, got 3"),
        ("[defaults]\ntimeout = -1", "defaults.timeout: expected a positive number of seconds, got -1"),
        (
            "[defaults]\ntimeout = { conect = 1 }",
            "defaults.timeout.conect: unknown key; allowed: connect, read, write, pool, total, first_token",
        ),
        (
            "[providers.x]\nbase_url = 'ftp://h'",
            "providers.x.base_url: invalid URL 'ftp://h': expected http:// or https://",
        ),
        (
            "[providers.x]\nbase_url = 'http://h:99999/v1'",
            "base_url: invalid URL 'http://h:99999/v1': Port out of range",
        ),
        (
            "[providers.x]\nbase_url = 'http://[::1/v1'",
            "providers.x.base_url: invalid URL 'http://[::1/v1': Invalid IPv6",
        ),
        (
            "[providers.x]\nbase_url = 'http://h/v 1'",
            "providers.x.base_url: invalid URL 'http://h/v 1': spaces or control",
        ),
        ("[providers.x]\napi_key = 'sk-123'", "providers.x.api_key: unknown key (keys never live in config files"),
        ("[providers.x]\nheaders = { a = 1 }", "providers.x.headers.a: expected a string, got 1"),
        ("providers = 3", "providers: expected a table, got int"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(la.ConfigError) as info:
        load_settings(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert "sk-123" not in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(la.ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.toml")


def test_a_file_that_is_not_utf8_is_a_config_error_and_a_byte_order_mark_is_read_past(tmp_path: Path) -> None:
    path = tmp_path / "llmadapters.toml"
    path.write_bytes("[defaults]\nmodel = 'fake/caf\u00e9'\n".encode("latin-1"))
    with pytest.raises(
        la.ConfigError, match=r"llmadapters.toml: not UTF-8, as TOML must be \(byte 0xe9 at offset 28\)"
    ):
        load_settings(path)
    path.write_bytes("[defaults]\nmodel = 'fake/caf\u00e9'\n".encode("utf-8-sig"))
    assert load_settings(path).model == "fake/caf\u00e9"


def test_file_from_env_then_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings().sources == ()
    write(tmp_path, "[defaults]\nmodel = 'fake/from-cwd'")
    assert load_settings().model == "fake/from-cwd"
    other = tmp_path / "other.toml"
    other.write_text("[defaults]\nmodel = 'fake/from-env'")
    monkeypatch.setenv("LLMADAPTERS_CONFIG", str(other))
    assert load_settings().model == "fake/from-env"


def test_arguments_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[defaults]\ntransport = 'openai'\n[providers.local]\nbase_url = 'http://127.0.0.1:1/v1'")
    settings = load_settings(path, transport="httpx", providers={"local": {"model": "m", "api_key": "sk-x"}})
    assert settings.transport == "httpx"
    local = settings.provider("local")
    assert (local.base_url, local.model) == ("http://127.0.0.1:1/v1", "m")
    assert local.api_key is not None
    assert [key.get() for key in local.api_key] == ["sk-x"]
    with pytest.raises(
        la.ConfigError,
        match=r"arguments: providers.local.timeout: expected seconds or a table of connect, read, write, pool, total",
    ):
        load_settings({}, providers={"local": {"timeout": "fast"}})


def test_names_and_key_variables_are_checked_when_the_client_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "[providers.opneai]\nmodel = 'gpt-4o-mini'\n")
    with pytest.raises(la.ConfigError) as info:
        la.AsyncClient(path)
    assert str(info.value) == (
        f"{path}: providers.opneai: unknown provider 'opneai' (did you mean 'openai'?); "
        "available: fake, openai; or give it a base_url"
    )
    monkeypatch.delenv("MY_LOCAL_KEY", raising=False)
    path = write(tmp_path, "[providers.local]\nbase_url = 'http://127.0.0.1:9/v1'\napi_key_env = 'MY_LOCAL_KEY'\n")
    with pytest.raises(
        la.ConfigError, match=r"llmadapters.toml: providers.local.api_key_env: the variable MY_LOCAL_KEY is not set"
    ):
        la.AsyncClient(path)
    monkeypatch.setenv("MY_LOCAL_KEY", "sk-set")
    la.AsyncClient(path)
    path = write(tmp_path, "[defaults]\nmiddleware = ['logging', 'retyr']\n")
    with pytest.raises(
        la.ConfigError, match=r"defaults.middleware: unknown middleware 'retyr' \(did you mean 'retry'\?\)"
    ):
        la.AsyncClient(path)


def test_the_documented_defaults_are_the_real_ones() -> None:
    """The configuration reference is generated from config.SCHEMA; its stated defaults
    must be the attrs classes' defaults."""
    import re

    import attrs

    from llmadapters.config import SCHEMA
    from llmadapters.middleware.ratelimit import Limits
    from llmadapters.middleware.retry import RetryPolicy

    checked = 0
    for table, cls in (("timeout", Timeouts), ("retry", RetryPolicy), ("limits", Limits)):
        defaults = {f.name: f.default for f in attrs.fields(cls)}
        assert set(SCHEMA[table]) == set(defaults), table
        for key, text in SCHEMA[table].items():
            stated = re.search(r"\(default:? ([^)]*)\)", text)
            assert stated is not None, (table, key)
            words = {"no limit": None, "none": None, "true": True, "false": False, '"local"': "local"}
            value = words[stated.group(1)] if stated.group(1) in words else float(stated.group(1))
            expected = defaults[key]
            assert value == expected, (table, key, stated.group(1), expected)
            checked += 1
    assert checked == 21


def test_every_mistake_of_a_file_is_reported_each_with_its_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "llmadapters.toml"
    path.write_text(
        "[defaults]\n"
        "timeout = -1\n"
        'colour = "blue"\n'
        "[providers.local]\n"
        'base_url = "ftp://x"\n'
        "retry = { max_attempts = 0, speed = 3, initial_delay = -1 }\n"
        'http2 = "yes"\n'
        "[defaults.cache]\n"
        "max_size = 0\n"
        'expire = "soon"\n'
        "nondeterministic = 1\n"
    )
    with pytest.raises(la.ConfigError) as caught:
        load_settings(path)
    assert str(caught.value).splitlines() == [
        f"{path}: defaults.colour: unknown key; allowed: {', '.join(SCHEMA['defaults'])}",
        f"{path}: defaults.timeout: expected a positive number of seconds, got -1",
        f"{path}: defaults.cache.max_size: expected a whole number >= 1, got 0",
        f"{path}: defaults.cache.expire: expected a positive number of seconds, got 'soon'",
        f"{path}: defaults.cache.nondeterministic: expected true or false, got 1",
        f"{path}: providers.local.base_url: invalid URL 'ftp://x': expected http:// or https:// URL with a host",
        f"{path}: providers.local.http2: expected true or false, got 'yes'",
        f"{path}: providers.local.retry.speed: unknown key; allowed: {', '.join(SCHEMA['retry'])}",
        f"{path}: providers.local.retry.max_attempts: expected a whole number >= 1, got 0",
        f"{path}: providers.local.retry.initial_delay: expected a positive number of seconds, got -1",
    ]


def test_an_unknown_provider_in_the_default_model_names_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "llmadapters.toml"
    path.write_text('[defaults]\nmodel = "nosuch/x"\ntransport = "htpx"\n')
    with pytest.raises(la.ConfigError) as caught:
        la.AsyncClient(path)
    assert str(caught.value).splitlines() == [
        f"{path}: defaults.transport: unknown transport 'htpx' (did you mean 'httpx'?); available: httpx, openai",
        f"{path}: defaults.model: 'nosuch/x': unknown provider 'nosuch'; available: fake, openai; "
        "for any OpenAI-compatible server, set providers.nosuch.base_url",
    ]
    path.write_text('[defaults]\nmodel = "echo"\n')
    with pytest.raises(
        la.ConfigError, match=r": defaults.model: model 'echo' names no provider: write 'provider/model'"
    ):
        la.AsyncClient(path)


async def test_a_call_to_an_unknown_provider_shows_the_model_as_written() -> None:
    async with la.AsyncClient({}) as client:
        with pytest.raises(la.ConfigError, match=r"^model 'nosuch/some-model': unknown provider 'nosuch'"):
            await client.chat.completions.create(model="nosuch/some-model", messages=[{"role": "user", "content": "x"}])


async def test_auth_can_be_named_last_as_the_readme_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_server: FakeServer
) -> None:
    monkeypatch.setenv("LOCAL_AUTH_KEY", "sk-local-auth-0000")
    text = (
        '[defaults]\nmiddleware = ["logging", "retry", "ratelimit", "timeout", "auth"]\n'
        f'[providers.local]\nbase_url = "{fake_server.base_url}"\napi_key_env = "LOCAL_AUTH_KEY"\n'
    )
    async with la.AsyncClient(write(tmp_path, text)) as client:
        reply = await client.chat.completions.create(model="local/echo", messages=[{"role": "user", "content": "hi"}])
        route = await client.route("local")
    assert reply.choices[0].message.content == "hi"
    assert [type(m).__name__ for m in route.middleware][-1] == "AuthMiddleware"
    assert sum(type(m).__name__ == "AuthMiddleware" for m in route.middleware) == 1
    assert fake_server.seen_headers[-1]["authorization"] == "Bearer sk-local-auth-0000"


@pytest.mark.parametrize(
    ("chain", "message"),
    [
        (["auth", "retry"], "middleware: 'auth' is always the innermost middleware: put it last"),
        (["retry", "nosuch"], "middleware: unknown middleware 'nosuch'"),
    ],
)
def test_a_misplaced_auth_or_unknown_middleware_names_its_key_once(chain: list[str], message: str) -> None:
    with pytest.raises(la.ConfigError, match=message) as info:
        la.AsyncClient({}, middleware=chain)
    assert "middleware.middleware" not in str(info.value)
    with pytest.raises(la.ConfigError, match=f"defaults.{message}"):
        la.AsyncClient({"defaults": {"middleware": chain}})


def test_loading_a_config_imports_no_behaviour() -> None:
    """The policies a config reads are plain values (llmadapters.policies): loading it
    imports no middleware, no transport library and no client."""
    code = (
        "import sys, llmadapters.config\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('llmadapters.middleware', 'llmadapters.client',"
        " 'httpx2', 'openai', 'aiohttp')))\n"
        "print(loaded)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == "[]\n"
