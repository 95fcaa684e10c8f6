from __future__ import annotations

from typing import Any

import pytest
from llmadapters_zhipu import ZAI, ZHIPU

import llmadapters as la
from llmadapters.plugins import Registry
from llmadapters.testing import FakeServer
from llmadapters.testing.conformance import ProviderConformance
from llmadapters.testing.providers import answer_after_error, headers_sent
from llmadapters.types import ChatRequest


async def test_bearer_key_from_its_variable() -> None:
    assert (await headers_sent("zhipu", {"ZHIPUAI_API_KEY": "id.secret"}))["authorization"] == "Bearer id.secret"
    assert (await headers_sent("zai", {"ZAI_API_KEY": "id.zai"}))["authorization"] == "Bearer id.zai"


@pytest.mark.parametrize(
    ("code", "attempts"),
    [("1302", 2), ("1305", 2), ("1312", 2), ("1113", 1), ("1308", 1), ("1304", 1)],
)
async def test_the_business_code_decides_whether_a_429_is_retried(code: str, attempts: int) -> None:
    outcome = await answer_after_error("zhipu", 429, {"error": {"code": code, "message": "..."}})
    assert outcome.attempts == attempts
    assert (outcome.error is None) == (attempts == 2)
    if outcome.error is not None:
        assert isinstance(outcome.error, la.RateLimitError)
        assert outcome.error.code == code


async def test_content_filter_is_final() -> None:
    outcome = await answer_after_error("zhipu", 400, {"error": {"code": "1301", "message": "unsafe content"}})
    assert outcome.attempts == 1


def test_thinking_toggle_and_endpoints() -> None:
    request = ChatRequest(provider="zhipu", model="glm-4.5", messages=[], params={"thinking": True})
    assert ZHIPU.prepare(request)["thinking"] == {"type": "enabled"}
    assert ZHIPU.base_url == "https://open.bigmodel.cn/api/paas/v4"
    assert ZAI.base_url == "https://api.z.ai/api/paas/v4"


GLM = {"x-fake-behaviour": "echo,zhipu-thinking"}  # GLM-4.5 and later, as Zhipu serves them


async def _call(server: FakeServer, provider: str, messages: list[Any], **params: Any) -> la.ChatCompletion:
    """A call through the plugin (``zhipu``) or through a plain OpenAI-compatible
    provider (any other name), both to ``server``."""
    providers = {provider: {"base_url": server.base_url, "api_key": "sk-test"}}
    async with la.AsyncClient({}, providers=providers, middleware=[], registry=Registry.load(autoload=True)) as client:
        return await client.chat.completions.create(
            model=f"{provider}/glm-4.6", messages=messages, extra_headers=GLM, **params
        )


async def test_an_assistant_message_that_says_nothing_is_not_sent() -> None:
    async with FakeServer() as server:
        question: dict[str, Any] = {"role": "user", "content": ""}
        thought = (await _call(server, "zhipu", [question])).choices[0].message
        assert (thought.content, thought.tool_calls) == (None, None)  # it only thought
        assert thought.reasoning_content
        messages = [question, thought, {"role": "user", "content": "again"}]
        # Without the plugin, as Zhipu answers.
        with pytest.raises(la.BadRequestError, match="content和tool_calls") as refused:
            await _call(server, "plain", messages)
        assert refused.value.code == "1214"
        again = await _call(server, "zhipu", messages)
        assert again.choices[0].message.content == "again"
        assert [m["role"] for m in server.seen_bodies[-1]["messages"]] == ["user", "user"]


async def test_glm_thinks_unless_told_not_to() -> None:
    async with FakeServer() as server:
        messages = [{"role": "user", "content": "hi"}]
        assert (await _call(server, "zhipu", messages)).choices[0].message.reasoning_content == "Thinking about: hi"
        assert (await _call(server, "plain", messages, thinking=False)).choices[0].message.reasoning_content
        off = await _call(server, "zhipu", messages, thinking=False)
        assert off.choices[0].message.reasoning_content is None
        assert server.seen_bodies[-1]["thinking"] == {"type": "disabled"}


class TestConformance(ProviderConformance):
    provider = "zhipu"
    key_header = "authorization"


async def test_embeddings_on_bigmodel_only_as_floats_and_default_to_embedding_3() -> None:
    async with FakeServer() as server:
        providers = {name: {"base_url": server.base_url, "api_key": "sk-test"} for name in ("zhipu", "zai")}
        registry = Registry.load(autoload=True)
        async with la.AsyncClient({}, providers=providers, middleware=[], registry=registry) as client:
            assert client.embedding_request(model="zhipu", input="x").model == "embedding-3"
            reply = await client.embeddings.create(model="zhipu/embed", input="a text", dimensions=4)
            with pytest.raises(la.ConfigError, match="provider 'zai' has no embeddings endpoint"):
                await client.embeddings.create(model="zai/embedding-3", input="a text")
    assert server.requests_served == 1
    assert "encoding_format" not in server.seen_bodies[-1]
    assert len(reply.data[0].embedding) == 4
    assert ZHIPU.embeddings is not None
    assert ZHIPU.embeddings.max_inputs == 64
    assert ZAI.embeddings is None
