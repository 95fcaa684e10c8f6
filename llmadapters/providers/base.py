"""Providers as data: where a provider lives and which dialect it speaks."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ..structured import schema_of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection

    from ..errors import LLMAdapterError
    from ..pricing import ModelPrice, TokenCounter
    from ..types import ChatRequest, EmbeddingRequest

__all__ = [
    "OPENAI_BATCH_API",
    "BatchAPI",
    "EmbeddingsAPI",
    "Launched",
    "ProviderSpec",
    "bearer_auth",
    "embeddings_payload",
    "json_schema_in_prompt",
    "openai_payload",
    "thinking_toggle_payload",
    "verdict_by_error_field",
]

Payload = dict[str, Any]


def bearer_auth(key: str) -> dict[str, str]:
    """``Authorization: Bearer <key>``, the OpenAI style most providers accept."""
    return {"Authorization": f"Bearer {key}"}


def openai_payload(request: ChatRequest) -> Payload:
    """The chat-completions body for ``request``, with no provider quirk applied."""
    payload: Payload = {"model": request.model, "messages": list(request.messages), **request.params}
    if request.stream:
        payload["stream"] = True
    return payload


def embeddings_payload(request: EmbeddingRequest, api: EmbeddingsAPI) -> Payload:
    """The embeddings body for ``request``: ``encoding_format`` as the caller asked, or
    ``"base64"`` when the caller did not and the provider takes it (as the openai SDK
    sends; the vectors are decoded for the caller), else none (floats)."""
    payload: Payload = {"model": request.model, "input": request.input, **request.params}
    encoding = request.encoding_format or ("base64" if api.base64 else None)
    if encoding is not None:
        payload["encoding_format"] = encoding
    return payload


def thinking_toggle_payload(request: ChatRequest) -> Payload:
    """`openai_payload`, with ``thinking=True|False`` spelt as the
    ``{"thinking": {"type": "enabled"|"disabled"}}`` that DeepSeek (V4), Zhipu GLM and
    Xiaomi MiMo take; a dict is passed as it is."""
    payload = openai_payload(request)
    thinking = payload.get("thinking")
    if isinstance(thinking, bool):
        payload["thinking"] = {"type": "enabled" if thinking else "disabled"}
    return payload


def json_schema_in_prompt(prepare: Callable[[ChatRequest], Payload]) -> Callable[[ChatRequest], Payload]:
    """``prepare``, for a provider that takes ``response_format`` ``{"type":
    "json_object"}`` but not ``{"type": "json_schema", ...}``: such a request goes out
    as ``json_object``, with the schema in the system prompt (added to the first system
    message, or as a new one), which also names JSON, as JSON mode asks. The provider
    does not enforce the schema: `llmadapters.parse_json` checks a reply against it.

    Use in a plugin: ``ProviderSpec(..., prepare=json_schema_in_prompt(openai_payload))``.
    """

    def prepare_with_schema_in_prompt(request: ChatRequest) -> Payload:
        payload = prepare(request)
        response_format = payload.get("response_format")
        if not (isinstance(response_format, Mapping) and response_format.get("type") == "json_schema"):
            return payload
        schema = json.dumps(schema_of(response_format), ensure_ascii=False)
        text = f"Answer in json only: one JSON object that matches this JSON Schema.\n{schema}"
        messages = list(payload["messages"])
        first = messages[0] if messages else None
        if isinstance(first, Mapping) and first.get("role") == "system" and isinstance(first.get("content"), str):
            messages[0] = {**first, "content": f"{first['content']}\n\n{text}"}
        else:
            messages.insert(0, {"role": "system", "content": text})
        return {**payload, "messages": messages, "response_format": {"type": "json_object"}}

    return prepare_with_schema_in_prompt


def verdict_by_error_field(
    field: str, *, retry: Collection[str] = (), stop: Collection[str] = ()
) -> Callable[[LLMAdapterError], bool | None]:
    """A ``ProviderSpec.retryable`` for providers whose error bodies say what went wrong
    in ``{"error": {field: ...}}`` (Zhipu's ``code``, Moonshot's ``type``): True for the
    values in ``retry``, False for those in ``stop``, else None (the general rules)."""

    def verdict(exc: LLMAdapterError) -> bool | None:
        error = getattr(exc, "body", None)
        error = error.get("error") if isinstance(error, Mapping) else None
        value = error.get(field) if isinstance(error, Mapping) else None
        value = None if value is None else str(value)
        if value in stop:
            return False
        if value in retry:
            return True
        return None

    return verdict


@attrs.frozen(kw_only=True)
class Launched:
    """A server a provider started on demand: its base URL, and how to stop it."""

    base_url: str
    aclose: Callable[[], Awaitable[None]]


@attrs.frozen(kw_only=True)
class BatchAPI:
    """A provider's OpenAI-style Batch API: upload a JSONL file to ``files`` (``purpose``
    ``batch``), create a batch of it at ``batches``, poll it, download its output and
    error files (``llmadapters batch --via batch-api``).

    Attributes:
        endpoint: the batch's ``endpoint`` and each line's ``url``.
        completion_window: sent when creating a batch; None where the API takes none.
        max_lines: requests per file at most.
        max_bytes: bytes per file at most.
        price_factor: the price of a batched call, as a share of the online price.
        one_model_per_file: the API refuses a file that mixes models.
    """

    endpoint: str = "/v1/chat/completions"
    completion_window: str | None = "24h"
    max_lines: int = 50_000
    max_bytes: int = 200 * 1024 * 1024
    price_factor: float = 0.5
    one_model_per_file: bool = False


@attrs.frozen(kw_only=True)
class EmbeddingsAPI:
    """A provider's OpenAI-compatible ``POST /embeddings``.

    Attributes:
        models: the embedding models its docs list; the first is the default when the
            caller names only the provider. Other names are sent as they are (the
            provider answers for them).
        max_inputs: inputs per request at most, per its docs (None: not documented);
            ``llmadapters batch`` splits a line's input into requests of this size
            when ``--embed-chunk`` is not given.
        max_tokens: tokens per request at most, summed over its inputs, per its docs
            (None: not documented); ``llmadapters batch`` splits a line's input so that
            each request's estimate stays within four fifths of it (an estimate, with
            room to spare).
        base64: whether it takes ``encoding_format="base64"``; when not, a call that
            asks for no encoding sends none, and the provider's floats come back.
    """

    models: tuple[str, ...] = ()
    max_inputs: int | None = None
    max_tokens: int | None = None
    base64: bool = True


# https://platform.openai.com/docs/guides/batch: 50,000 requests and 200 MB per file,
# "24h" the only window, 50% of the price.
OPENAI_BATCH_API = BatchAPI()


@attrs.frozen(kw_only=True)
class ProviderSpec:
    """Everything llmadapters needs to know to call one provider.

    Attributes:
        name: what goes before the ``/`` in ``model="name/model"``.
        base_url: the API root, e.g. ``https://api.deepseek.com/v1``; None when the
            provider is launched on demand (see ``launch``) or must be configured.
        api_key_env: the environment variable holding the key, or None when the
            provider needs no key.
        key_required: False for local servers that accept any or no key.
        default_model: used when the caller names only the provider.
        headers: extra headers sent with every request.
        auth: turns the key into headers (Bearer by default; e.g. ``api-key: <key>``).
        prepare: turns the request into the wire payload; quirks (renamed or dropped
            parameters) go here, often by composing this module's helpers
            (`thinking_toggle_payload`, `json_schema_in_prompt`).
        normalize: fixes a reply's JSON (a unary body or one stream event) before it
            becomes a value.
        launch: starts a local server when no base_url is configured (the ``fake``
            provider does); called once per client.
        retryable: the provider's verdict on an error: False for "never retry" (an
            insufficient balance, an exhausted quota), True for "retry", None to leave
            it to the general rules of the retry middleware.
        prices: the models' prices, by model name (a config adds or overrides them);
            a model not listed has no known cost. Cite their source and date in the
            plugin's README.
        count_tokens: the provider's own tokenizer, when it runs offline, for estimates
            made before anything is sent; None for the documented estimate of about
            four characters a token.
        batch_api: the provider's Batch API, when it has an OpenAI-compatible one.
        embeddings: the provider's embeddings endpoint, when it has an
            OpenAI-compatible one; None refuses ``client.embeddings.create`` at once.
        models_path: the path that lists its models (``GET``, OpenAI's ``/models``
            shape), for ``client.models.list``; None when its docs name none.
    """

    name: str
    base_url: str | None = None
    api_key_env: str | None = None
    key_required: bool = True
    default_model: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    auth: Callable[[str], Mapping[str, str]] = bearer_auth
    prepare: Callable[[ChatRequest], Payload] = openai_payload
    normalize: Callable[[Payload], Payload] | None = None
    launch: Callable[[], Awaitable[Launched]] | None = None
    retryable: Callable[[LLMAdapterError], bool | None] | None = None
    prices: Mapping[str, ModelPrice] = attrs.field(factory=dict)
    count_tokens: TokenCounter | None = None
    batch_api: BatchAPI | None = None
    embeddings: EmbeddingsAPI | None = None
    models_path: str | None = None
