"""Qwen on Alibaba Cloud Model Studio (DashScope) for llmadapters, through its
OpenAI-compatible endpoint: ``model="qwen/qwen-plus"`` (Beijing) and
``model="qwen-intl/qwen-plus"`` (Singapore), key in ``DASHSCOPE_API_KEY``.

What is DashScope's own (sources in the README):

- Models that think by default refuse a non-streamed call unless ``enable_thinking`` is
  false ("parameter.enable_thinking must be set to false for non-streaming calls"), so
  a non-streamed call is sent with ``enable_thinking: false`` unless the caller set it;
  ``thinking=True|False`` becomes ``enable_thinking`` (on a streamed call it is passed
  as asked).
- A 429's ``error.code`` says which limit was hit: requests per minute
  (``limit_requests``), tokens per minute (``insufficient_quota``, which here is a rate
  limit, not an empty account) or a burst (``limit_burst_rate``); all are retried. An
  account in arrears (``Arrearage``) is not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmadapters import hookimpl
from llmadapters.plugin import BatchAPI, EmbeddingsAPI, ProviderSpec, openai_payload, verdict_by_error_field

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmadapters import ChatRequest

__all__ = ["BATCH_API", "QWEN", "QWEN_INTL", "prepare", "register_providers", "retryable"]

RETRY_CODES = frozenset({"limit_requests", "insufficient_quota", "limit_burst_rate"})
STOP_CODES = frozenset({"Arrearage"})
retryable = verdict_by_error_field("code", retry=RETRY_CODES, stop=STOP_CODES)


def prepare(request: ChatRequest) -> dict[str, Any]:
    """`openai_payload`, with ``thinking=True|False`` spelt ``enable_thinking``, and
    thinking off on a non-streamed call unless the caller turned it on."""
    payload = openai_payload(request)
    thinking = payload.pop("thinking", None)
    if isinstance(thinking, bool):
        payload.setdefault("enable_thinking", thinking)
    if not request.stream:
        payload.setdefault("enable_thinking", False)
    return payload


# DashScope's OpenAI-compatible Batch API (help.aliyun.com/zh/dashscope/developer-reference/
# openai-batch-interface): 50,000 requests and 100 MB a file, "24h", half the price.
BATCH_API = BatchAPI(max_bytes=100 * 1024 * 1024)


# docs.qwencloud.com/api-reference/text-embedding/openai-embedding (POST
# /compatible-mode/v1/embeddings, both regions): text-embedding-v4 and -v3, at most 10
# inputs a request; "encoding_format: only float is supported".
EMBEDDINGS = EmbeddingsAPI(models=("text-embedding-v4", "text-embedding-v3"), max_inputs=10, base64=False)


def _spec(name: str, base_url: str) -> ProviderSpec:
    return ProviderSpec(
        name=name,
        base_url=base_url,
        api_key_env="DASHSCOPE_API_KEY",
        default_model="qwen-plus",
        prepare=prepare,
        retryable=retryable,
        batch_api=BATCH_API,
        embeddings=EMBEDDINGS,
    )


QWEN = _spec("qwen", "https://dashscope.aliyuncs.com/compatible-mode/v1")
QWEN_INTL = _spec("qwen-intl", "https://dashscope-intl.aliyuncs.com/compatible-mode/v1")


@hookimpl
def register_providers(register: Callable[[ProviderSpec], None]) -> None:
    register(QWEN)
    register(QWEN_INTL)
