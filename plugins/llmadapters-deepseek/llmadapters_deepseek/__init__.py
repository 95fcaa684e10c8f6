"""DeepSeek for llmadapters: ``model="deepseek/deepseek-chat"``, key in ``DEEPSEEK_API_KEY``.

What is DeepSeek's own, beyond an OpenAI-compatible URL (sources in the README):

- 402 Insufficient Balance is never retried; 429 (rate or concurrency limit), 500 and
  503 (overloaded) are, with backoff (DeepSeek sends no Retry-After).
- ``thinking=True|False`` turns V4's thinking mode on or off
  (``{"thinking": {"type": "enabled"|"disabled"}}``).
- ``response_format`` ``json_schema``, which DeepSeek refuses ("This response_format
  type is unavailable now"), goes out as ``json_object`` with the schema in the system
  prompt; `llmadapters.parse_json` checks a reply against it.
- What the core decodes for every provider and DeepSeek relies on: ``: keep-alive``
  comments in streams and blank lines before unary JSON while a request is queued, and
  ``reasoning_content`` in messages and deltas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmadapters import hookimpl
from llmadapters.errors import APIStatusError
from llmadapters.providers.base import ProviderSpec, json_schema_in_prompt, thinking_toggle_payload

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmadapters.errors import LLMAdapterError

__all__ = ["DEEPSEEK", "prepare", "register_providers", "retryable"]


def retryable(exc: LLMAdapterError) -> bool | None:
    """False for an insufficient balance; the general rules for the rest."""
    if isinstance(exc, APIStatusError) and exc.status == 402:
        return False
    return None


prepare = json_schema_in_prompt(thinking_toggle_payload)

DEEPSEEK = ProviderSpec(
    name="deepseek",
    base_url="https://api.deepseek.com",
    api_key_env="DEEPSEEK_API_KEY",
    default_model="deepseek-chat",
    prepare=prepare,
    retryable=retryable,
)


@hookimpl
def register_providers(register: Callable[[ProviderSpec], None]) -> None:
    register(DEEPSEEK)
