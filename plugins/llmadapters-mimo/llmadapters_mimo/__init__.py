"""Xiaomi MiMo for llmadapters: ``model="mimo/mimo-v2-flash"``, key in ``MIMO_API_KEY``.

What is MiMo's own (sources in the README):

- The key goes in an ``api-key`` header (MiMo also takes ``Authorization: Bearer``).
- 402 means "insufficient balance" (not retried), except the one that the Token Plan
  endpoint sends under bursts while quota remains, ``{"type": "server_error", "message":
  "Upstream request failed: ..."}`` (XiaomiMiMo/MiMo#99), which is retried as the
  overload it is. 421 (content filter) is not retried.
- ``thinking=True|False`` becomes ``{"thinking": {"type": "enabled"|"disabled"}}``.
- MiMo documents ``response_format`` ``json_object`` only: ``json_schema`` goes out as
  ``json_object`` with the schema in the system prompt.
- Token Plan keys (``tp-...``) need the plan's own base URL, e.g.
  ``[providers.mimo] base_url = "https://token-plan-cn.xiaomimimo.com/v1"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from llmadapters import APIStatusError, hookimpl
from llmadapters.plugin import ProviderSpec, json_schema_in_prompt, thinking_toggle_payload

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmadapters import LLMAdapterError

__all__ = ["MIMO", "api_key_header", "prepare", "register_providers", "retryable"]


def api_key_header(key: str) -> dict[str, str]:
    return {"api-key": key}


def retryable(exc: LLMAdapterError) -> bool | None:
    if isinstance(exc, APIStatusError) and exc.status == 402:
        body = exc.body if isinstance(exc.body, Mapping) else {}
        return str(body.get("message", "")).startswith("Upstream request failed")
    if isinstance(exc, APIStatusError) and exc.status == 421:
        return False
    return None


prepare = json_schema_in_prompt(thinking_toggle_payload)

MIMO = ProviderSpec(
    name="mimo",
    base_url="https://api.xiaomimimo.com/v1",
    api_key_env="MIMO_API_KEY",
    default_model="mimo-v2-flash",
    auth=api_key_header,
    prepare=prepare,
    retryable=retryable,
)


@hookimpl
def register_providers(register: Callable[[ProviderSpec], None]) -> None:
    register(MIMO)
