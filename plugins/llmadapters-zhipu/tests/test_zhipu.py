from __future__ import annotations

import pytest
from llmadapters_zhipu import ZAI, ZHIPU

import llmadapters as la
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


class TestConformance(ProviderConformance):
    provider = "zhipu"
    key_header = "authorization"
