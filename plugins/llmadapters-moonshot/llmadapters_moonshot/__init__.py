"""Moonshot (Kimi) for llmadapters: ``model="moonshot/kimi-k2.5"``, key in
``MOONSHOT_API_KEY``; the China endpoint by default (for the international one, set
``[providers.moonshot] base_url = "https://api.moonshot.ai/v1"``).

What is Moonshot's own (sources in the README): its errors carry a ``type`` and no code,
and one status, 429, covers both "slow down" (``rate_limit_reached_error``,
``engine_overloaded_error``: retried) and "out of money" (``exceeded_current_quota_error``:
not retried). A 403, which its help pages also use for an insufficient balance, is never
retried (the general rule).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmadapters import hookimpl
from llmadapters.providers.base import ProviderSpec, verdict_by_error_field

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["MOONSHOT", "register_providers", "retryable"]

RETRY_TYPES = frozenset({"rate_limit_reached_error", "engine_overloaded_error"})
STOP_TYPES = frozenset({"exceeded_current_quota_error", "content_filter", "invalid_authentication_error"})
retryable = verdict_by_error_field("type", retry=RETRY_TYPES, stop=STOP_TYPES)


MOONSHOT = ProviderSpec(
    name="moonshot",
    base_url="https://api.moonshot.cn/v1",
    api_key_env="MOONSHOT_API_KEY",
    default_model="kimi-k2.5",
    retryable=retryable,
)


@hookimpl
def register_providers(register: Callable[[ProviderSpec], None]) -> None:
    register(MOONSHOT)
