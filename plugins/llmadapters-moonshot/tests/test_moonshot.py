from __future__ import annotations

import pytest
from llmadapters_moonshot import MOONSHOT

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


class TestConformance(ProviderConformance):
    provider = "moonshot"
    key_header = "authorization"
