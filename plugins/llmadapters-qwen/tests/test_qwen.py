from __future__ import annotations

from typing import Any

import pytest
from llmadapters_qwen import QWEN, QWEN_INTL

import llmadapters as la
from llmadapters.plugins import Registry
from llmadapters.testing import FakeServer
from llmadapters.testing.conformance import ProviderConformance
from llmadapters.testing.providers import answer_after_error, headers_sent

MESSAGES = [{"role": "user", "content": "hi"}]


async def test_bearer_key_from_its_variable() -> None:
    assert (await headers_sent("qwen", {"DASHSCOPE_API_KEY": "sk-dash"}))["authorization"] == "Bearer sk-dash"
    assert (await headers_sent("qwen-intl", {"DASHSCOPE_API_KEY": "sk-intl"}))["authorization"] == "Bearer sk-intl"


def test_the_two_regions() -> None:
    assert QWEN.base_url == "https://dashscope.aliyuncs.com/compatible-mode/v1"
    assert QWEN_INTL.base_url == "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"


@pytest.mark.parametrize(
    ("code", "attempts"),
    [("limit_requests", 2), ("limit_burst_rate", 2), (None, 2)],
)
async def test_every_429_is_retried(code: str | None, attempts: int) -> None:
    outcome = await answer_after_error("qwen", 429, {"error": {"code": code, "message": "...", "type": "x"}})
    assert (outcome.attempts, outcome.error) == (attempts, None)


async def test_arrears_are_final() -> None:
    outcome = await answer_after_error("qwen", 400, {"error": {"code": "Arrearage", "message": "Access denied"}})
    assert outcome.attempts == 1
    assert isinstance(outcome.error, la.BadRequestError)


async def _call(server: FakeServer, stream: bool, **params: Any) -> la.ChatCompletion:
    providers = {"qwen": {"base_url": server.base_url, "api_key": "sk-test"}}
    async with la.AsyncClient({}, providers=providers, middleware=[], registry=Registry.load(autoload=True)) as client:
        if not stream:
            return await client.chat.completions.create(model="qwen/qwen3-thinking", messages=MESSAGES, **params)
        reply = await client.chat.completions.create(
            model="qwen/qwen3-thinking", messages=MESSAGES, stream=True, **params
        )
        return await reply.get_final_completion()


async def test_thinking_goes_only_on_streamed_calls() -> None:
    async with FakeServer() as server:
        profile = {"extra_headers": {"x-fake-behaviour": "qwen-thinking"}}
        unary = await _call(server, False, **profile)
        assert server.seen_bodies[-1]["enable_thinking"] is False
        assert unary.choices[0].message.reasoning_content is None
        streamed = await _call(server, True, **profile)
        assert "enable_thinking" not in server.seen_bodies[-1]
        assert streamed.choices[0].message.reasoning_content == "Thinking about: hi"
        await _call(server, True, thinking=False)
        assert server.seen_bodies[-1]["enable_thinking"] is False
        # Without the plugin's fix, the profile answers as DashScope does.
        with pytest.raises(la.BadRequestError, match="enable_thinking must be set to false for non-streaming"):
            await _call(server, False, thinking=True, **profile)


class TestConformance(ProviderConformance):
    provider = "qwen"
    key_header = "authorization"


async def test_embeddings_ask_for_floats_only_and_default_to_text_embedding_v4() -> None:
    async with FakeServer() as server:
        providers = {"qwen": {"base_url": server.base_url, "api_key": "sk-test"}}
        registry = Registry.load(autoload=True)
        async with la.AsyncClient({}, providers=providers, middleware=[], registry=registry) as client:
            assert client.embedding_request(model="qwen", input="x").model == "text-embedding-v4"
            reply = await client.embeddings.create(model="qwen/embed", input=["a", "b"], dimensions=8)
    assert server.seen_targets[-1] == "/v1/embeddings"
    assert "encoding_format" not in server.seen_bodies[-1]  # "only float is supported"
    assert [len(item.embedding) for item in reply.data] == [8, 8]
    assert QWEN.embeddings is not None
    assert QWEN.embeddings.max_inputs == 10
    assert QWEN_INTL.embeddings == QWEN.embeddings
