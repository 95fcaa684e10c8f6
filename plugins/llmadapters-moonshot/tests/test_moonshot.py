from __future__ import annotations

from typing import Any

import pytest
from llmadapters_moonshot import MOONSHOT

import llmadapters as la
from llmadapters.plugins import Registry
from llmadapters.testing import FakeServer
from llmadapters.testing.conformance import ProviderConformance
from llmadapters.testing.providers import answer_after_error, headers_sent


async def test_bearer_key_from_its_variable() -> None:
    sent = await headers_sent("moonshot", {"MOONSHOT_API_KEY": "sk-moonshot-test"})
    assert sent["authorization"] == "Bearer sk-moonshot-test"


@pytest.mark.parametrize(
    ("status", "kind", "attempts"),
    [
        (429, "rate_limit_reached_error", 2),
        (429, "engine_overloaded_error", 2),
        (429, "exceeded_current_quota_error", 1),
        (403, "permission_denied_error", 1),
    ],
)
async def test_the_error_type_decides(status: int, kind: str, attempts: int) -> None:
    outcome = await answer_after_error("moonshot", status, {"error": {"type": kind, "message": "..."}})
    assert outcome.attempts == attempts


def test_endpoint() -> None:
    assert MOONSHOT.base_url == "https://api.moonshot.cn/v1"


KIMI_K2 = {"x-fake-behaviour": "echo,moonshot-thinking"}  # a K2.5/K2.6 model, as Moonshot serves it


async def _call(server: FakeServer, provider: str, model: str, **params: Any) -> la.ChatCompletion:
    """A call through the plugin (``moonshot``) or through a plain OpenAI-compatible
    provider (any other name), both to ``server``."""
    providers = {provider: {"base_url": server.base_url, "api_key": "sk-test"}}
    async with la.AsyncClient({}, providers=providers, middleware=[], registry=Registry.load(autoload=True)) as client:
        messages = [{"role": "user", "content": "hi"}]
        return await client.chat.completions.create(model=f"{provider}/{model}", messages=messages, **params)


async def test_a_fixed_temperature_is_not_sent() -> None:
    async with FakeServer() as server:
        # Without the plugin, as Moonshot answers.
        with pytest.raises(la.BadRequestError, match="invalid temperature: only 1 is allowed for this model"):
            await _call(server, "plain", "kimi-k2.6", temperature=0.3, extra_headers=KIMI_K2)
        with pytest.raises(la.BadRequestError, match=r"only 0\.6 is allowed"):
            await _call(
                server, "plain", "kimi-k2.6", temperature=1, thinking={"type": "disabled"}, extra_headers=KIMI_K2
            )
        reply = await _call(server, "moonshot", "kimi-k2.6", temperature=0.3, extra_headers=KIMI_K2)
        assert "temperature" not in server.seen_bodies[-1]
        assert reply.choices[0].message.reasoning_content == "Thinking about: hi"  # on by default
        off = await _call(server, "moonshot", "kimi-k2.5", temperature=1, thinking=False, extra_headers=KIMI_K2)
        assert off.choices[0].message.reasoning_content is None
        assert server.seen_bodies[-1]["thinking"] == {"type": "disabled"}
        assert "temperature" not in server.seen_bodies[-1]
        await _call(server, "moonshot", "moonshot-v1-8k", temperature=0.3)
        assert server.seen_bodies[-1]["temperature"] == 0.3  # a model that takes any


class TestConformance(ProviderConformance):
    provider = "moonshot"
    key_header = "authorization"


async def test_a_stream_s_usage_inside_its_last_choice_is_the_stream_s_usage() -> None:
    """Moonshot puts a stream's usage in ``choices[0].usage`` of its last chunk
    (higress-group/higress#1568, northes/go-moonshot#17)."""
    usage: dict[str, Any] = {}
    async with FakeServer() as server:
        for provider in ("plain", "moonshot"):
            providers = {provider: {"base_url": server.base_url, "api_key": "sk-test"}}
            registry = Registry.load(autoload=True)
            async with la.AsyncClient({}, providers=providers, middleware=[], registry=registry) as client:
                stream = await client.chat.completions.create(
                    model=f"{provider}/moonshot-v1-8k",
                    messages=[{"role": "user", "content": "hi"}],
                    stream=True,
                    extra_headers={"x-fake-behaviour": "echo,usage-in-choice"},
                )
                usage[provider] = (await stream.get_final_completion()).usage
    assert usage["plain"] is None  # as the OpenAI format reads it
    assert usage["moonshot"] is not None
    assert usage["moonshot"].total_tokens == usage["moonshot"].prompt_tokens + usage["moonshot"].completion_tokens > 0
