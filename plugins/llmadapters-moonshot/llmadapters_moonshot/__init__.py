"""Moonshot (Kimi) for llmadapters: ``model="moonshot/kimi-k2.5"``, key in
``MOONSHOT_API_KEY``; the China endpoint by default (for the international one, set
``[providers.moonshot] base_url = "https://api.moonshot.ai/v1"``).

What is Moonshot's own (sources in the README): its errors carry a ``type`` and no code,
and one status, 429, covers both "slow down" (``rate_limit_reached_error``,
``engine_overloaded_error``: retried) and "out of money" (``exceeded_current_quota_error``:
not retried). A 403, which its help pages also use for an insufficient balance, is never
retried (the general rule).

Kimi's newer models (K2.5, K2.6, K3, the coding models) sample at a fixed temperature (1
when thinking, 0.6 with thinking off) and answer any other value with a 400 ("invalid
temperature: only 1 is allowed for this model"): their ``temperature`` is not sent, so
that a call written for any provider runs. ``thinking=True|False`` becomes
``{"thinking": {"type": "enabled"|"disabled"}}``.

A stream's usage comes inside the last chunk's choice (``choices[0].usage``), not beside
the choices: ``normalize`` puts it where the OpenAI format has it, so that the stream's
final completion, the cost and the limiter see it.

Its Batch API (``--via batch-api``) is OpenAI's, with the chat endpoint only, one model
per file, files of 100 MB at most, at 60% of the price (a 40% saving).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmadapters import hookimpl
from llmadapters.plugin import BatchAPI, ProviderSpec, thinking_toggle_payload, verdict_by_error_field

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmadapters import ChatRequest

__all__ = [
    "BATCH_API",
    "FIXED_TEMPERATURE_MODELS",
    "MOONSHOT",
    "normalize",
    "prepare",
    "register_providers",
    "retryable",
]

RETRY_TYPES = frozenset({"rate_limit_reached_error", "engine_overloaded_error"})
STOP_TYPES = frozenset({"exceeded_current_quota_error", "content_filter", "invalid_authentication_error"})
retryable = verdict_by_error_field("type", retry=RETRY_TYPES, stop=STOP_TYPES)

# Model names (prefixes) whose temperature is fixed; sources in the README.
FIXED_TEMPERATURE_MODELS = ("kimi-k2.5", "kimi-k2.6", "kimi-k3", "k3", "kimi-for-coding")


def prepare(request: ChatRequest) -> dict[str, Any]:
    """`thinking_toggle_payload`, without the ``temperature`` of a model whose
    temperature is fixed."""
    payload = thinking_toggle_payload(request)
    if request.model.startswith(FIXED_TEMPERATURE_MODELS):
        payload.pop("temperature", None)
    return payload


def normalize(data: dict[str, Any]) -> dict[str, Any]:
    """A stream chunk whose first choice carries the usage, with the usage beside the
    choices (where the OpenAI format puts it); any other reply as it came."""
    if data.get("usage") is None:
        choices = data.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict) and choices[0].get("usage"):
            return {**data, "usage": choices[0]["usage"]}
    return data


# platform.kimi.com/docs/guide/use-batch-api; the files limit from .../docs/api/files-upload.
# The docs give no line limit per file: 50,000, OpenAI's, keeps a file of short lines whole.
BATCH_API = BatchAPI(max_bytes=100 * 1024 * 1024, price_factor=0.6, one_model_per_file=True)

MOONSHOT = ProviderSpec(
    name="moonshot",
    base_url="https://api.moonshot.cn/v1",
    api_key_env="MOONSHOT_API_KEY",
    default_model="kimi-k2.5",
    prepare=prepare,
    normalize=normalize,
    retryable=retryable,
    batch_api=BATCH_API,
    models_path="/models",  # platform.kimi.com/docs/api/list-models ("List Models", GET /v1/models)
)


@hookimpl
def register_providers(register: Callable[[ProviderSpec], None]) -> None:
    register(MOONSHOT)
