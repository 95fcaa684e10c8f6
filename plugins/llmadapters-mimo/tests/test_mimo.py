from __future__ import annotations

from llmadapters_mimo import MIMO

import llmadapters as la
from llmadapters.testing.conformance import ProviderConformance
from llmadapters.testing.providers import answer_after_error, headers_sent


async def test_api_key_header_from_its_variable() -> None:
    sent = await headers_sent("mimo", {"MIMO_API_KEY": "sk-mimo-test"})
    assert sent["api-key"] == "sk-mimo-test"
    assert "authorization" not in sent


async def test_a_real_insufficient_balance_is_final() -> None:
    outcome = await answer_after_error("mimo", 402, {"error": {"message": "Insufficient Balance"}})
    assert outcome.attempts == 1
    assert isinstance(outcome.error, la.APIStatusError)


async def test_the_burst_402_is_retried() -> None:
    body = {"type": "server_error", "message": "Upstream request failed: Insufficient account funds"}
    outcome = await answer_after_error("mimo", 402, body)
    assert (outcome.attempts, outcome.error) == (2, None)


async def test_content_filter_421_is_final_and_429_is_retried() -> None:
    assert (await answer_after_error("mimo", 421, {"error": {"message": "Content Filter"}})).attempts == 1
    body = {"error": {"code": "429", "message": "Too many requests", "type": "limitation"}}
    assert (await answer_after_error("mimo", 429, body)).attempts == 2


def test_endpoint() -> None:
    assert (MIMO.base_url, MIMO.default_model) == ("https://api.xiaomimimo.com/v1", "mimo-v2-flash")


class TestConformance(ProviderConformance):
    provider = "mimo"
    key_header = "api-key"
