from __future__ import annotations

from llmadapters_deepseek import DEEPSEEK

import llmadapters as la
from llmadapters.testing.conformance import ProviderConformance
from llmadapters.testing.providers import answer_after_error, headers_sent
from llmadapters.types import ChatRequest


async def test_bearer_key_from_its_variable() -> None:
    sent = await headers_sent("deepseek", {"DEEPSEEK_API_KEY": "sk-deepseek-test"})
    assert sent["authorization"] == "Bearer sk-deepseek-test"


async def test_insufficient_balance_is_final() -> None:
    outcome = await answer_after_error("deepseek", 402, {"error": {"message": "Insufficient Balance"}})
    assert outcome.attempts == 1
    assert isinstance(outcome.error, la.APIStatusError)
    assert outcome.error.status == 402


async def test_overload_and_rate_limits_are_retried() -> None:
    for status, message in ((429, "Rate Limit Reached"), (503, "Server Overloaded"), (500, "Server Error")):
        outcome = await answer_after_error("deepseek", status, {"error": {"message": message}})
        assert (outcome.attempts, outcome.error) == (2, None)


def test_thinking_toggle_and_defaults() -> None:
    request = ChatRequest(provider="deepseek", model="deepseek-chat", messages=[], params={"thinking": False})
    assert DEEPSEEK.prepare(request)["thinking"] == {"type": "disabled"}
    assert (DEEPSEEK.base_url, DEEPSEEK.default_model) == ("https://api.deepseek.com", "deepseek-chat")


class TestConformance(ProviderConformance):
    provider = "deepseek"
    key_header = "authorization"
