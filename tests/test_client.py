"""The client surface: model names, settings, keys, sync facade, stream lifecycle."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

import llmadapters as la
from llmadapters.testing import FakeServer, FakeServerOptions
from llmadapters.testing import fake_server as fake_server_module

if TYPE_CHECKING:
    from pathlib import Path

MESSAGES = [{"role": "user", "content": "ping"}]
MakeClient = Callable[..., la.AsyncClient]


async def test_fake_provider_starts_on_demand_and_stops_with_the_client() -> None:
    async with la.AsyncClient({}) as client:
        reply = await client.chat.completions.create(model="fake", messages=MESSAGES)
        assert (reply.provider, reply.model, reply.choices[0].message.content) == ("fake", "echo", "ping")
        base_url = (await client.route("fake")).endpoint.base_url
        assert base_url.startswith("http://127.0.0.1:")
    with pytest.raises(la.ConnectError):
        async with la.AsyncClient({}, providers={"gone": {"base_url": base_url}}) as other:
            await other.chat.completions.create(model="gone/echo", messages=MESSAGES)


async def test_model_splits_on_the_first_slash_only(make_client: MakeClient) -> None:
    client = make_client()
    reply = await client.chat.completions.create(model="local/Qwen/Qwen2.5-7B", messages=MESSAGES)
    assert (reply.provider, reply.model) == ("local", "Qwen/Qwen2.5-7B")
    explicit = await client.chat.completions.create(provider="local", model="org/echo", messages=MESSAGES)
    assert explicit.model == "org/echo"


async def test_default_model_and_provider_default(fake_server: FakeServer) -> None:
    providers = {"local": {"base_url": fake_server.base_url, "model": "echo"}}
    async with la.AsyncClient({}, model="local/lorem", providers=providers) as client:
        assert (await client.chat.completions.create(messages=MESSAGES)).model == "lorem"
        assert (await client.chat.completions.create(model="local", messages=MESSAGES)).model == "echo"
        # A bare model name goes to the default model's provider.
        assert (await client.chat.completions.create(model="echo", messages=MESSAGES)).provider == "local"
    async with la.AsyncClient({}) as client:
        with pytest.raises(ValueError, match="names no provider"):
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        with pytest.raises(TypeError, match="messages must be a list"):
            await client.chat.completions.create(model="fake/echo", messages="hi")  # type: ignore[arg-type]


async def test_transport_per_client_and_per_provider(fake_server: FakeServer) -> None:
    providers = {
        "a": {"base_url": fake_server.base_url},
        "b": {"base_url": fake_server.base_url, "transport": "openai"},
    }
    async with la.AsyncClient({}, transport="httpx", providers=providers) as client:
        for name in ("a", "b"):
            await client.chat.completions.create(model=f"{name}/echo", messages=MESSAGES)
        assert (await client.route("a")).transport_name == "httpx"
        assert (await client.route("b")).transport_name == "openai"


async def test_unknown_provider_and_transport_are_config_errors() -> None:
    with pytest.raises(
        la.ConfigError, match=r"defaults.transport: unknown transport 'carrier-pigeon'; available: httpx, openai"
    ):
        la.AsyncClient({}, transport="carrier-pigeon")
    with pytest.raises(la.ConfigError, match=r"providers.x.transport: unknown transport 'nope'"):
        la.AsyncClient({}, providers={"x": {"base_url": "http://127.0.0.1:1/v1", "transport": "nope"}})
    async with la.AsyncClient({}) as client:
        with pytest.raises(la.ConfigError, match=r"unknown provider 'deepseek'; available: fake, openai; for any Open"):
            await client.chat.completions.create(model="deepseek/deepseek-chat", messages=MESSAGES)
        with pytest.raises(
            la.ConfigError, match=r"unknown provider 'fak' \(did you mean 'fake'\?\); available: fake, openai"
        ):
            await client.chat.completions.create(model="fak/echo", messages=MESSAGES)
    with pytest.raises(
        la.ConfigError, match=r"defaults.transport: unknown transport 'htpx' \(did you mean 'httpx'\?\)"
    ):
        la.AsyncClient({}, transport="htpx")


@pytest.mark.parametrize("transport", ["httpx", "openai"])
async def test_key_from_env_is_sent_and_never_shown(monkeypatch: pytest.MonkeyPatch, transport: str) -> None:
    key = "sk-test-SECRET-0123456789"
    monkeypatch.setenv("LOCAL_TEST_KEY", key)
    async with FakeServer(FakeServerOptions(api_key=key)) as server:
        providers = {"local": {"base_url": server.base_url, "api_key_env": "LOCAL_TEST_KEY"}}
        async with la.AsyncClient({}, transport=transport, providers=providers) as client:
            reply = await client.chat.completions.create(model="local/echo", messages=MESSAGES)
            assert reply.choices[0].message.content == "ping"
            route = await client.route("local")
            shown = [repr(client), repr(route), repr(route.endpoint), str(route.endpoint), repr(client.settings)]
            assert all(key not in text for text in shown)
        assert server.seen_headers[-1]["authorization"] == f"Bearer {key}"

        # A wrong key: the 401's message and repr must not carry what was sent.
        monkeypatch.setenv("LOCAL_TEST_KEY", "sk-wrong-SECRET-987")
        async with la.AsyncClient({}, transport=transport, providers=providers) as client:
            with pytest.raises(la.AuthenticationError) as info:
                await client.chat.completions.create(model="local/echo", messages=MESSAGES)
        assert "sk-wrong" not in str(info.value) + repr(info.value)


@pytest.mark.parametrize("transport", ["httpx", "openai"])
async def test_no_key_sends_no_authorization(fake_server: FakeServer, make_client: MakeClient, transport: str) -> None:
    await make_client(transport).chat.completions.create(model="local/echo", messages=MESSAGES)
    assert "authorization" not in fake_server.seen_headers[-1]


async def test_key_given_in_code_is_kept_secret(fake_server: FakeServer) -> None:
    providers = {"local": {"base_url": fake_server.base_url, "api_key": "sk-in-code-SECRET"}}
    async with la.AsyncClient({}, providers=providers) as client:
        await client.chat.completions.create(model="local/echo", messages=MESSAGES)
        assert "sk-in-code" not in repr(client.settings) + str(client.settings.providers["local"].api_key)
    assert fake_server.seen_headers[-1]["authorization"] == "Bearer sk-in-code-SECRET"


async def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    async with la.AsyncClient({}) as client:
        with pytest.raises(la.AuthenticationError, match="no API key for provider 'openai': set OPENAI_API_KEY"):
            await client.chat.completions.create(model="openai/gpt-4o-mini", messages=MESSAGES)


async def test_closing_a_stream_early_frees_its_connection(make_client: MakeClient, transport: str) -> None:
    client = make_client(transport)
    for _ in range(20):  # more than a shard's pool: leaked connections would exhaust it
        stream = await client.chat.completions.create(
            model="local/lorem", messages=MESSAGES, stream=True, max_tokens=50
        )
        async with stream:
            first = await stream.__anext__()
            assert first.choices[0].delta.role == "assistant"
    reply = await client.chat.completions.create(model="local/echo", messages=MESSAGES)
    assert reply.choices[0].message.content == "ping"


def test_sync_client(llmadapters_fake_server: FakeServer) -> None:
    with la.Client({}, providers={"local": {"base_url": llmadapters_fake_server.base_url}}) as client:
        reply = client.chat.completions.create(model="local/echo", messages=MESSAGES)
        assert reply.choices[0].message.content == "ping"
        with client.chat.completions.create(
            model="local/echo", messages=[{"role": "user", "content": "a b c"}], stream=True
        ) as stream:
            assert "".join(c.choices[0].delta.content or "" for c in stream) == "a b c"
        with pytest.raises(la.RateLimitError):
            client.chat.completions.create(model="local/fail-429", messages=MESSAGES)


async def test_sync_client_inside_a_running_event_loop() -> None:
    # As in Jupyter: the calling thread runs a loop; the sync client must not deadlock.
    with la.Client({}) as client:
        reply = client.chat.completions.create(model="fake/echo", messages=MESSAGES)
    assert reply.choices[0].message.content == "ping"
    await asyncio.sleep(0)


def test_import_is_light() -> None:
    code = (
        "import sys, llmadapters as la; la.AsyncClient; la.Client; la.RateLimitError; la.ChatCompletion\n"
        "heavy = sorted(m for m in ('openai', 'httpx2', 'httpx', 'aiohttp', 'h11') if m in sys.modules)\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_exported_members() -> None:
    assert la.__all__ == sorted(la.__all__)
    for name in la.__all__:
        value = getattr(la, name)
        assert value is la.hookimpl if name == "hookimpl" else value.__name__ == name
    with pytest.raises(AttributeError):
        la.NoSuchThing  # noqa: B018


def chat_cli(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "llmadapters.cli", "chat", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, input=stdin, timeout=60)


def test_cli_chat_streams_the_fake_reply(tmp_path: Path) -> None:
    run = chat_cli("hello cli", "--usage", cwd=tmp_path)
    assert (run.returncode, run.stdout) == (0, "hello cli\n")
    assert "tokens: 6 in, 2 out" in run.stderr


def test_cli_reports_errors_without_a_traceback(tmp_path: Path) -> None:
    run = chat_cli("x", "-m", "fake/fail-500", cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr == "llmadapters: error: HTTP 500 from fake: The server had an error (injected)\n"


async def test_key_read_from_a_file_with_a_newline_works(
    fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCAL_TEST_KEY", "sk-from-dotenv\n")
    providers = {"local": {"base_url": fake_server.base_url, "api_key_env": "LOCAL_TEST_KEY"}}
    async with la.AsyncClient({}, providers=providers) as client:
        await client.chat.completions.create(model="local/echo", messages=MESSAGES)
    assert fake_server.seen_headers[-1]["authorization"] == "Bearer sk-from-dotenv"


@pytest.mark.parametrize("key", ["sk-SECRET\x07bell", "sk-SECRETé", "sk-SECRET\nmiddle"])
async def test_a_key_http_cannot_carry_is_refused_without_showing_it(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.setenv("LOCAL_TEST_KEY", key)
    providers = {"local": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "LOCAL_TEST_KEY"}}
    async with la.AsyncClient({}, providers=providers) as client:
        expected = "the API key in LOCAL_TEST_KEY of provider 'local': header 'Authorization'"
        with pytest.raises(la.ConfigError, match=expected) as info:
            await client.chat.completions.create(model="local/echo", messages=MESSAGES)
    assert "SECRET" not in str(info.value) + repr(info.value)


async def test_a_closed_client_refuses_calls() -> None:
    client = la.AsyncClient({})
    await client.chat.completions.create(model="fake/echo", messages=MESSAGES)
    await client.aclose()
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await client.chat.completions.create(model="fake/echo", messages=MESSAGES)


def test_sync_client_close_is_idempotent_and_final() -> None:
    import threading

    before = {t for t in threading.enumerate() if t.name == "llmadapters-client"}
    client = la.Client({})
    assert client.chat.completions.create(model="fake/echo", messages=MESSAGES).choices[0].message.content == "ping"
    client.close()
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.chat.completions.create(model="fake/echo", messages=MESSAGES)
    assert {t for t in threading.enumerate() if t.name == "llmadapters-client"} == before


def test_an_unclosed_sync_client_stops_its_thread_when_collected() -> None:
    import gc
    import threading

    def threads() -> int:
        return sum(t.name == "llmadapters-client" for t in threading.enumerate())

    before = threads()
    client = la.Client({})
    client.chat.completions.create(model="fake/echo", messages=MESSAGES)
    assert threads() == before + 1
    del client
    gc.collect()
    assert threads() == before


async def test_fake_server_answers_bad_test_input_with_400(make_client: MakeClient) -> None:
    client = make_client(headers={"x-fake-ttft-ms": "soon"})
    with pytest.raises(la.BadRequestError, match="header x-fake-ttft-ms must be a non-negative number"):
        await client.chat.completions.create(model="local/echo", messages=MESSAGES)
    client = make_client()
    with pytest.raises(la.BadRequestError, match=r"tools\[0\].function.name must be a string"):
        await client.chat.completions.create(model="local/echo", messages=MESSAGES, tools=[{"function": "x"}])


def test_cli_chat_reads_stdin_without_a_prompt(tmp_path: Path) -> None:
    run = chat_cli("-m", "fake/echo", cwd=tmp_path, stdin="piped prompt")
    assert (run.returncode, run.stdout) == (0, "piped prompt\n")


def test_unknown_keyword_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="unexpected keyword arguments: transprot"):
        la.AsyncClient({}, transprot="httpx")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword arguments: modle"):
        la.Client({}, modle="fake/echo")  # type: ignore[call-arg]


def test_the_sync_client_reports_the_limits_it_learned() -> None:
    with la.Client({}) as client:
        assert client.limits() == {}  # no route yet
        client.chat.completions.create(model="fake/echo", messages=[{"role": "user", "content": "hi"}])
        learned = client.limits()["fake"]
    assert learned["concurrency"] == 32  # where a lane starts, with nothing learned yet
    assert (learned["rpm"], learned["tpm"], learned["rate_limited"]) == (None, None, 0)


async def test_fake_server_counts_answers_for_a_bounded_number_of_prompts(
    fake_server: FakeServer, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fake_server_module, "_MAX_TRACKED_PROMPTS", 5)
    client = make_client()
    prompts = [f"prompt {i}" for i in range(8)] + ["prompt 7", "long " * 100]
    for prompt in prompts:
        await client.chat.completions.create(model="local/echo", messages=[{"role": "user", "content": prompt}])
    digest = hashlib.sha256(("long " * 100).encode()).hexdigest()
    assert fake_server.answered == {"prompt 4": 1, "prompt 5": 1, "prompt 6": 1, "prompt 7": 2, f"sha256:{digest}": 1}


def test_the_command_help_shows_no_restructuredtext_markup() -> None:
    from llmadapters.cli import LISTINGS

    for command in ["", "batch", "chat", "fake-server", *LISTINGS]:
        args = [command, "--help"] if command else ["--help"]
        run = subprocess.run([sys.executable, "-m", "llmadapters.cli", *args], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert "``" not in run.stdout, command
        assert "`" not in run.stdout.replace("'", ""), command


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "unary"])
def test_cli_chat_shows_the_reasoning_on_stderr_unless_told_not_to(tmp_path: Path, stream: bool) -> None:
    flags = () if stream else ("--no-stream",)
    run = chat_cli("why so", "-m", "fake/echo+reasoning", *flags, cwd=tmp_path)
    assert (run.returncode, run.stdout, run.stderr) == (0, "why so\n", "Thinking about: why so\n")
    hidden = chat_cli("why so", "-m", "fake/echo+reasoning", "--no-reasoning", *flags, cwd=tmp_path)
    assert (hidden.returncode, hidden.stdout, hidden.stderr) == (0, "why so\n", "")
