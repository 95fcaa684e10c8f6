"""DeepSeek for llmadapters: ``model="deepseek/deepseek-chat"``, key in ``DEEPSEEK_API_KEY``.

What is DeepSeek's own, beyond an OpenAI-compatible URL (sources in the README):

- 402 Insufficient Balance is never retried; 429 (rate or concurrency limit), 500 and
  503 (overloaded) are, with backoff (DeepSeek sends no Retry-After).
- ``thinking=True|False`` turns V4's thinking mode on or off
  (``{"thinking": {"type": "enabled"|"disabled"}}``).
- ``response_format`` ``json_schema``, which DeepSeek refuses ("This response_format
  type is unavailable now"), goes out as ``json_object`` with the schema in the system
  prompt; `llmadapters.parse_json` checks a reply against it.
- Prices (USD per million tokens, from the pricing page): ``deepseek-flash`` (and the
  legacy ``deepseek-v4-flash``, billed as Flash) and ``deepseek-v4-pro``, at twice the
  off-peak price in DeepSeek's peak hours, Monday to Friday 09:00-12:00 and 14:00-18:00
  Beijing time (01:00-04:00 and 06:00-10:00 UTC).
- What the core decodes for every provider and DeepSeek relies on: ``: keep-alive``
  comments in streams and blank lines before unary JSON while a request is queued, and
  ``reasoning_content`` in messages and deltas.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from llmadapters import APIStatusError, hookimpl
from llmadapters.plugin import (
    ModelPrice,
    Price,
    PriceWindow,
    ProviderSpec,
    json_schema_in_prompt,
    thinking_toggle_payload,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmadapters import LLMAdapterError

__all__ = ["DEEPSEEK", "PEAK_HOURS", "PRICES", "prepare", "register_providers", "retryable"]

# Peak hours in UTC, Monday to Friday (Beijing time is UTC+8, so each stays on one UTC
# day). Chinese public holidays are off-peak all day too: not encoded, so a holiday's
# calls are priced at the peak, an upper bound.
PEAK_HOURS = ((dt.time(1), dt.time(4)), (dt.time(6), dt.time(10)))
_WEEKDAYS = frozenset(range(5))


def _peak_and_off_peak(off_peak: Price) -> ModelPrice:
    peak = off_peak.scaled(2)
    windows = tuple(PriceWindow(price=peak, start=start, end=end, weekdays=_WEEKDAYS) for start, end in PEAK_HOURS)
    return ModelPrice(price=off_peak, windows=windows)


_FLASH = _peak_and_off_peak(Price(input=0.15, cached_input=0.003, output=0.60))
PRICES = {
    "deepseek-flash": _FLASH,
    "deepseek-v4-flash": _FLASH,
    "deepseek-v4-pro": _peak_and_off_peak(Price(input=0.66, cached_input=0.022, output=1.98)),
}


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
    prices=PRICES,
    models_path="/models",  # api-docs.deepseek.com/api/list-models; no embeddings endpoint is documented
)


@hookimpl
def register_providers(register: Callable[[ProviderSpec], None]) -> None:
    register(DEEPSEEK)
