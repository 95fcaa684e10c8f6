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

from collections.abc import Mapping
from typing import TYPE_CHECKING

from llmadapters import hookimpl
from llmadapters.errors import APIStatusError
from llmadapters.providers.base import ProviderSpec

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmadapters.errors import LLMAdapterError

__all__ = ["MOONSHOT", "register_providers", "retryable"]

RETRY_TYPES = frozenset({"rate_limit_reached_error", "engine_overloaded_error"})
STOP_TYPES = frozenset({"exceeded_current_quota_error", "content_filter", "invalid_authentication_error"})


def error_type(exc: APIStatusError) -> str | None:
    error = exc.body.get("error") if isinstance(exc.body, Mapping) else None
    kind = error.get("type") if isinstance(error, Mapping) else None
    return kind if isinstance(kind, str) else None


def retryable(exc: LLMAdapterError) -> bool | None:
    if isinstance(exc, APIStatusError):
        kind = error_type(exc)
        if kind in STOP_TYPES:
            return False
        if kind in RETRY_TYPES:
            return True
    return None


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
