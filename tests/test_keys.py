"""Several API keys for one provider: each with budgets of its own, refused keys retired
with a warning that names the variable (never the value), 429s cooling only their key."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import pytest
from simulated import Limits, SimulatedKeys, SimulatedProvider, registry_with, run_virtual

import llmadapters as la
from llmadapters.batch import BatchSummary
from llmadapters.testing import FakeServer, FakeServerOptions

if TYPE_CHECKING:
    from collections.abc import Mapping

LINE = {"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 100}
MESSAGES = [{"role": "user", "content": "hi"}]
KEYS = {"SIM_KEY_A": "sk-sim-aaaaaaaaaaaaaaaa-1111", "SIM_KEY_B": "sk-sim-bbbbbbbbbbbbbbbb-2222"}


async def _batch(transport: SimulatedKeys, n: int, **limits: Any) -> dict[str, Any]:
    provider: dict[str, Any] = {"base_url": "http://127.0.0.1:9/v1", "transport": "sim", "api_key_env": list(KEYS)}
    if limits:
        provider["limits"] = limits
    summary = BatchSummary()
    async with la.AsyncClient({"providers": {"sim": provider}}, registry=registry_with(transport)) as client:
        loop = asyncio.get_running_loop()
        start = loop.time()
        lines = ({**LINE, "model": "sim/m", "custom_id": f"c{i}"} for i in range(n))
        async for result in client.batch(lines, concurrency=64):
            summary.add(result)
        return {"wall": loop.time() - start, "errors": summary.errors, "limits": client.limits()["sim"]}


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)


def test_each_key_finds_and_holds_its_own_concurrency_cap() -> None:
    a = SimulatedProvider(Limits(cap=lambda t: 8, latency=1.0), seed=1)
    b = SimulatedProvider(Limits(cap=lambda t: 4, latency=1.0), seed=2)
    run = run_virtual(_batch(SimulatedKeys({KEYS["SIM_KEY_A"]: a, KEYS["SIM_KEY_B"]: b}), 1800))
    assert run["errors"] == 0
    learned = {name: stats["concurrency"] for name, stats in run["limits"]["keys"].items()}
    assert learned["SIM_KEY_A"] in (8, 9), learned
    assert learned["SIM_KEY_B"] in (4, 5), learned
    assert (a.peak, b.peak) == (8, 4)
    # Together the keys carry 12 calls a second: the work is ideally 150 s.
    assert 1800 / 12 / run["wall"] >= 0.9, run
    assert (a.rate_limited + b.rate_limited) / 1800 <= 0.03


def test_a_429_cools_only_its_key() -> None:
    """Key A refuses everything with Retry-After: 30; key B answers. No line waits for A."""
    a = SimulatedProvider(Limits(cap=lambda t: 0, retry_after=30.0, latency=1.0))
    b = SimulatedProvider(Limits(cap=lambda t: 16, latency=1.0))
    run = run_virtual(_batch(SimulatedKeys({KEYS["SIM_KEY_A"]: a, KEYS["SIM_KEY_B"]: b}), 800))
    assert run["errors"] == 0
    assert b.calls - b.rate_limited == 800
    assert 800 / 16 / run["wall"] >= 0.8, run  # B's cap bounds the run, not A's 30 s waits
    assert a.calls <= 80  # A is tried now and then, not given a share of the calls


@pytest.mark.parametrize(
    ("status", "body", "why"),
    [
        (401, {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}, "401 invalid_api_key"),
        (402, {"error": {"message": "Insufficient Balance", "type": "unknown_error"}}, "402 unknown_error"),
        (429, {"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}, "429"),
        (429, {"error": {"code": "1113", "message": "您的账户已欠费"}}, "429 1113"),
    ],
)
def test_a_refused_key_is_retired_and_its_calls_go_to_the_others(
    status: int, body: Mapping[str, Any], why: str, caplog: pytest.LogCaptureFixture
) -> None:
    b = SimulatedProvider(Limits(cap=lambda t: 16, latency=1.0))
    transport = SimulatedKeys({KEYS["SIM_KEY_A"]: (status, body), KEYS["SIM_KEY_B"]: b})
    with caplog.at_level(logging.WARNING, logger="llmadapters"):
        run = run_virtual(_batch(transport, 200))
    assert run["errors"] == 0
    assert b.calls - b.rate_limited == 200
    assert transport.refused == 1  # retired at its first refusal
    assert run["limits"]["retired_keys"]["SIM_KEY_A"].startswith(why)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("SIM_KEY_A" in w and "no longer used" in w for w in warnings), warnings
    assert not any(value in w for w in warnings for value in KEYS.values())


def test_a_429_that_is_only_a_rate_limit_retires_no_key() -> None:
    body = {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}
    a = SimulatedProvider(Limits(sporadic=0.2, retry_after=1.0, latency=1.0, error_body=body), seed=3)
    b = SimulatedProvider(Limits(latency=1.0), seed=4)
    run = run_virtual(_batch(SimulatedKeys({KEYS["SIM_KEY_A"]: a, KEYS["SIM_KEY_B"]: b}), 400))
    assert run["errors"] == 0
    assert "retired_keys" not in run["limits"]
    assert a.calls - a.rate_limited >= 20  # still in use


async def test_over_http_a_wrong_key_is_retired_and_the_right_one_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    good = "sk-good-kkkkkkkkkkkkkkkk-9999"
    monkeypatch.setenv("LOCAL_KEY_OLD", "sk-old-oooooooooooooooo-0000")
    monkeypatch.setenv("LOCAL_KEY_NEW", good)
    async with FakeServer(FakeServerOptions(api_key=good)) as server:
        providers = {"local": {"base_url": server.base_url, "api_key_env": ["LOCAL_KEY_OLD", "LOCAL_KEY_NEW"]}}
        async with la.AsyncClient({}, providers=providers) as client:
            for _ in range(4):
                reply = await client.chat.completions.create(model="local/echo", messages=MESSAGES)
                assert reply.choices[0].message.content == "hi"
            stream = await client.chat.completions.create(model="local/echo", messages=MESSAGES, stream=True)
            assert "".join([c.choices[0].delta.content or "" async for c in stream]) == "hi"
            assert client.limits()["local"]["retired_keys"] == {"LOCAL_KEY_OLD": "401 invalid_api_key"}
        sent = [h["authorization"] for h in server.seen_headers]
    assert sent.count("Bearer sk-old-oooooooooooooooo-0000") == 1
    assert sent.count(f"Bearer {good}") == 5
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "LOCAL_KEY_OLD" in text
    assert "sk-old" not in text


async def test_when_every_key_is_refused_the_error_names_each_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_KEY_1", "sk-one-1111111111111111-aaaa")
    monkeypatch.setenv("LOCAL_KEY_2", "sk-two-2222222222222222-bbbb")
    async with FakeServer(FakeServerOptions(api_key="sk-another")) as server:
        providers = {"local": {"base_url": server.base_url, "api_key_env": ["LOCAL_KEY_1", "LOCAL_KEY_2"]}}
        async with la.AsyncClient({}, providers=providers) as client:
            with pytest.raises(la.AuthenticationError) as first:
                await client.chat.completions.create(model="local/echo", messages=MESSAGES)
            served = server.requests_served
            with pytest.raises(la.AuthenticationError, match="no API key left") as later:
                await client.chat.completions.create(model="local/echo", messages=MESSAGES)
            assert server.requests_served == served  # nothing more is sent with a refused key
    message = str(later.value)
    assert "LOCAL_KEY_1: 401" in message
    assert "LOCAL_KEY_2: 401" in message
    for error in (first.value, later.value):
        assert "sk-one" not in str(error) + repr(error)
        assert "sk-two" not in str(error) + repr(error)


async def test_keys_given_in_code_are_named_by_their_place(fake_server: FakeServer) -> None:
    keys = ["sk-first-xxxxxxxxxxxx", "sk-second-yyyyyyyy"]
    providers = {"local": {"base_url": fake_server.base_url, "api_key": keys}}
    async with la.AsyncClient({}, providers=providers) as client:
        for _ in range(4):
            await client.chat.completions.create(model="local/echo", messages=MESSAGES)
        route = await client.route("local")
    assert route.keys is not None
    assert route.keys.names == ["api_key[0]", "api_key[1]"]
    sent = {h.get("authorization") for h in fake_server.seen_headers}
    assert {"Bearer sk-first-xxxxxxxxxxxx", "Bearer sk-second-yyyyyyyy"} <= sent  # taken in turn


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["A_KEY", "A_KEY"], "a variable is named twice"),
        ([], "a non-empty list"),
        ([3], "expected a list of names"),
    ],
)
def test_a_bad_list_of_key_variables_is_refused(value: object, message: str) -> None:
    with pytest.raises(la.ConfigError, match=rf"providers\.local\.api_key_env: .*{message}"):
        la.AsyncClient({"providers": {"local": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": value}}})


def test_an_unset_variable_of_the_list_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNSET_KEY_2", raising=False)
    monkeypatch.delenv("UNSET_KEY_3", raising=False)
    config = {"base_url": "http://127.0.0.1:9/v1", "api_key_env": ["SIM_KEY_A", "UNSET_KEY_2", "UNSET_KEY_3"]}
    with pytest.raises(la.ConfigError, match="the variables UNSET_KEY_2, UNSET_KEY_3 are not set"):
        la.AsyncClient({"providers": {"local": config}})


def test_summary_shows_each_keys_limits_and_the_retired_ones() -> None:
    from llmadapters.batch_cli import _limits_text

    stats = {
        "keys": {"K1": {"concurrency": 8, "rate_limited": 2, "waited_s": 0.5}, "K2": {"concurrency": 4}},
        "retired_keys": {"K3": "402"},
    }
    assert _limits_text(stats) == (
        "K1 concurrency=8 429s=2 waited 0.5s, K2 concurrency=4 429s=0 waited 0s (retired: K3 402)"
    )


async def test_a_configured_concurrency_holds_per_key(fake_server: FakeServer) -> None:
    """max_concurrency = 1 with two keys: one call in flight per key, and connections
    enough for both (the pool is sized for every key's limit)."""
    local = {"base_url": fake_server.base_url, "api_key_env": list(KEYS), "limits": {"max_concurrency": 1}}
    providers = {"local": local}
    async with la.AsyncClient({}, providers=providers) as client:
        stream = await client.chat.completions.create(model="local/echo", messages=MESSAGES, stream=True)
        reply = await asyncio.wait_for(client.chat.completions.create(model="local/echo", messages=MESSAGES), 10)
        assert reply.choices[0].message.content == "hi"
        with pytest.raises(TimeoutError):  # both keys' only slots are taken now
            await asyncio.wait_for(_two_more(client), 1)
        assert "".join([c.choices[0].delta.content or "" async for c in stream]) == "hi"
        assert client.limits()["local"]["keys"].keys() == set(KEYS)


async def _two_more(client: la.AsyncClient) -> None:
    stream = await client.chat.completions.create(model="local/echo", messages=MESSAGES, stream=True)
    async with stream:
        await client.chat.completions.create(model="local/echo", messages=MESSAGES)


async def test_a_provider_that_retries_a_spent_looking_code_keeps_its_key(
    fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DashScope answers its tokens-per-minute limit with 429 insufficient_quota, which
    the qwen plugin says to retry: the key is not retired, the call goes again."""
    from llmadapters.plugins import Registry

    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-dashscope-0000000000000000")
    body = '{"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}'
    headers = {"x-fake-error-status": "429", "x-fake-error-body": body, "x-fake-fail-times": "1"}
    headers["x-fake-retry-after"] = "0"
    providers = {"qwen": {"base_url": fake_server.base_url, "headers": headers}}
    async with la.AsyncClient({}, providers=providers, registry=Registry.load(autoload=True)) as client:
        reply = await client.chat.completions.create(model="qwen/echo", messages=MESSAGES)
        assert reply.choices[0].message.content == "hi"
        assert "retired_keys" not in client.limits().get("qwen", {})
    assert len(fake_server.seen_headers) == 2
