"""Zhipu BigModel (GLM) and its international twin Z.AI for llmadapters:
``model="zhipu/glm-4-flash"`` (key in ``ZHIPUAI_API_KEY``) and ``model="zai/glm-4.5"``
(key in ``ZAI_API_KEY``).

What is Zhipu's own (sources in the README):

- One HTTP status, 429, covers both "slow down" and "pay first", so the error body's
  ``code`` decides: 1302 (concurrency), 1303 (frequency), 1305 (platform overloaded),
  1312 (model overloaded) and 1120 are retried; 1113 (account in arrears), 1304 (daily
  quota), 1308/1310 (usage caps until a reset time), 1309 (plan expired), 1311 and 1301
  (content filter) are not.
- ``thinking=True|False`` becomes ``{"thinking": {"type": "enabled"|"disabled"}}``;
  GLM-4.5 and later think unless told ``thinking=False``, and their ``reasoning_content``
  goes back when the returned message is appended.
- An assistant message with neither content nor tool calls (a reply that only thought,
  appended to the conversation) is refused with code 1214 ("content和tool_calls
  字段不能同时为空"): such a message, which said nothing, is not sent.
- BigModel's Batch API (``--via batch-api``): OpenAI's files and batches under
  ``/api/paas/v4``, the endpoint spelt ``/v4/chat/completions``, no completion window,
  50,000 requests and 100 MB a file, at half the price.
- Z.AI's prices (USD per million tokens) for the GLM models it lists; BigModel's (CNY)
  are not encoded: add them in your config.
- Zhipu documents ``response_format`` ``json_object`` only (a ``json_schema`` is taken
  and not followed): ``json_schema`` goes out as ``json_object`` with the schema in the
  system prompt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmadapters import hookimpl
from llmadapters.plugin import (
    BatchAPI,
    EmbeddingsAPI,
    ModelPrice,
    Price,
    ProviderSpec,
    json_schema_in_prompt,
    thinking_toggle_payload,
    verdict_by_error_field,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from llmadapters import ChatRequest

__all__ = ["BIGMODEL_BATCH_API", "ZAI", "ZAI_PRICES", "ZHIPU", "prepare", "register_providers", "retryable"]

RETRY_CODES = frozenset({"1120", "1302", "1303", "1305", "1312"})
STOP_CODES = frozenset({"1113", "1301", "1304", "1308", "1309", "1310", "1311"})
# By the body's business code when it has one; else the general rules.
retryable = verdict_by_error_field("code", retry=RETRY_CODES, stop=STOP_CODES)

_with_schema_in_prompt = json_schema_in_prompt(thinking_toggle_payload)


def _says_nothing(message: Mapping[str, Any]) -> bool:
    return message.get("role") == "assistant" and not message.get("content") and not message.get("tool_calls")


def prepare(request: ChatRequest) -> dict[str, Any]:
    """``thinking`` spelt as Zhipu takes it, a ``json_schema`` sent as ``json_object``
    with the schema in the prompt, and no assistant message that says nothing."""
    payload = _with_schema_in_prompt(request)
    if any(_says_nothing(m) for m in payload["messages"]):
        payload["messages"] = [m for m in payload["messages"] if not _says_nothing(m)]
    return payload


def _usd(input: float, cached_input: float, output: float) -> ModelPrice:
    return ModelPrice(price=Price(input=input, cached_input=cached_input, output=output))


# docs.z.ai/guides/overview/pricing (input / cached input / output).
_GLM_4_5 = _usd(0.6, 0.11, 2.2)
ZAI_PRICES = {
    "glm-5": _usd(1.0, 0.2, 3.2),
    "glm-5-turbo": _usd(1.2, 0.24, 4.0),
    "glm-4.7": _GLM_4_5,
    "glm-4.6": _GLM_4_5,
    "glm-4.5": _GLM_4_5,
    "glm-4.5-air": _usd(0.2, 0.03, 1.1),
    "glm-4.7-flashx": _usd(0.07, 0.01, 0.4),
    "glm-4.7-flash": _usd(0.0, 0.0, 0.0),
    "glm-4.5-flash": _usd(0.0, 0.0, 0.0),
}

# docs.bigmodel.cn: the Batch API guide and its create-batch reference.
BIGMODEL_BATCH_API = BatchAPI(
    endpoint="/v4/chat/completions", completion_window=None, max_lines=50_000, max_bytes=100 * 1024 * 1024
)

# docs.bigmodel.cn, API reference, text embeddings: POST /paas/v4/embeddings; embedding-3
# (dimensions 256-2048) takes at most 64 inputs a request; encoding_format is not documented.
BIGMODEL_EMBEDDINGS = EmbeddingsAPI(models=("embedding-3", "embedding-2"), max_inputs=64, base64=False)

ZHIPU = ProviderSpec(
    name="zhipu",
    base_url="https://open.bigmodel.cn/api/paas/v4",
    api_key_env="ZHIPUAI_API_KEY",
    default_model="glm-4-flash",
    prepare=prepare,
    retryable=retryable,
    batch_api=BIGMODEL_BATCH_API,
    embeddings=BIGMODEL_EMBEDDINGS,
)
ZAI = ProviderSpec(
    name="zai",
    base_url="https://api.z.ai/api/paas/v4",
    api_key_env="ZAI_API_KEY",
    default_model="glm-4.5-flash",
    prepare=prepare,
    retryable=retryable,
    prices=ZAI_PRICES,
)


@hookimpl
def register_providers(register: Callable[[ProviderSpec], None]) -> None:
    register(ZHIPU)
    register(ZAI)
