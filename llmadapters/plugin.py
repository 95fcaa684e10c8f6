"""Everything a plugin author imports: for a provider, a transport or a middleware.

A plugin imports from here (and from ``llmadapters`` itself) and nowhere else: the
modules these names live in are internal and may move; these names stay. Each is
documented where it is defined; the "Writing a transport" guide shows a whole
transport built from them, and its reference part is generated from this module.

``__all__`` is the table of what is exported, in groups; ruff refuses an import that
is missing from it, and a name in it that is not imported.
"""

from __future__ import annotations

from .batch import BatchItem, output_record, parse_item
from .config import Settings
from .errors import (
    SENSITIVE_HEADERS,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ConnectError,
    LLMAdapterError,
    MalformedResponseError,
    RateLimitError,
    ServerError,
    StreamError,
    TransportError,
    parse_retry_after,
    status_error,
)
from .hookspecs import hookimpl
from .middleware.auth import KeyRing
from .middleware.base import Call, CallNext, Middleware, Reply
from .middleware.ratelimit import RateLimitMiddleware, estimate_tokens, stated_rate
from .plugins import BatchJob, BatchRunner, MiddlewareFactory, TransportFactory
from .policies import Limits
from .pricing import ModelPrice, Price, PriceWindow
from .providers.base import (
    BatchAPI,
    EmbeddingsAPI,
    ProviderSpec,
    bearer_auth,
    json_schema_in_prompt,
    openai_payload,
    thinking_toggle_payload,
    verdict_by_error_field,
)
from .streaming import ChatCompletionStream, StreamEnd
from .transports._errors import (
    AIOHTTP_ERRORS,
    BUILTIN_ERRORS,
    HTTPX2_ERRORS,
    ErrorMap,
    ErrorRule,
    ErrorTable,
    classify_transport_error,
    timeout_error,
)
from .transports._kernel import (
    DEFAULT_MAX_CONNECTIONS,
    MAX_BODY_BYTES,
    closed_before_sending,
    decode_error_body,
    decode_json_body,
    decode_sse_json,
    drain,
    encode_json,
    json_reply,
    raise_for_status,
    read_body,
    resend_if_closed,
    socket_readable,
    stream_reply,
)
from .transports.base import Endpoint, Timeouts, Transport, redacted_repr
from .transports.network import FEATURES, KEEPALIVE_EXPIRY, NetworkOptions, redact_url, require
from .types import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    CreateEmbeddingResponse,
    EmbeddingRequest,
    Message,
    ResponseInfo,
    Usage,
)

__all__ = [
    # Registering: the marker of hook implementations.
    "hookimpl",
    # Providers: what `register_providers` registers, and helpers for its fields.
    "BatchAPI",
    "EmbeddingsAPI",
    "ProviderSpec",
    "bearer_auth",
    "json_schema_in_prompt",
    "openai_payload",
    "thinking_toggle_payload",
    "verdict_by_error_field",
    # Providers: a model's price, for `ProviderSpec.prices`, peak hours included.
    "ModelPrice",
    "Price",
    "PriceWindow",
    # Middleware: the protocol, and what `register_middleware` registers.
    "Call",
    "CallNext",
    "ChatCompletionStream",
    "Middleware",
    "MiddlewareFactory",
    "Reply",
    "StreamEnd",
    # Middleware: what a factory is handed (`factory(spec, settings)`), and a call's keys.
    "KeyRing",
    "Limits",
    "Settings",
    # Rate-limit backends (`ratelimit-NAME`): the local limiter to fall back on, its estimate and header reading.
    "RateLimitMiddleware",
    "estimate_tokens",
    "stated_rate",
    # Transports: the protocol, what it is handed, and what `register_transports` registers.
    "FEATURES",
    "Endpoint",
    "NetworkOptions",
    "Timeouts",
    "Transport",
    "TransportFactory",
    # Transports: the kernel every transport shares once it has bytes.
    "DEFAULT_MAX_CONNECTIONS",
    "KEEPALIVE_EXPIRY",
    "MAX_BODY_BYTES",
    "closed_before_sending",
    "decode_error_body",
    "decode_json_body",
    "decode_sse_json",
    "drain",
    "encode_json",
    "json_reply",
    "raise_for_status",
    "read_body",
    "resend_if_closed",
    "socket_readable",
    "stream_reply",
    # Transports: native exceptions to ours.
    "AIOHTTP_ERRORS",
    "BUILTIN_ERRORS",
    "HTTPX2_ERRORS",
    "ErrorMap",
    "ErrorRule",
    "ErrorTable",
    "classify_transport_error",
    "timeout_error",
    # Batch runners: what `register_batch_runners` registers, and the records they yield.
    "BatchItem",
    "BatchJob",
    "BatchRunner",
    "output_record",
    "parse_item",
    # Settings and secrets.
    "SENSITIVE_HEADERS",
    "redact_url",
    "redacted_repr",
    "require",
    # Values.
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatRequest",
    "CreateEmbeddingResponse",
    "EmbeddingRequest",
    "Message",
    "ResponseInfo",
    "Usage",
    # Errors.
    "APIStatusError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigError",
    "ConnectError",
    "LLMAdapterError",
    "MalformedResponseError",
    "RateLimitError",
    "ServerError",
    "StreamError",
    "APITimeoutError",
    "TransportError",
    "parse_retry_after",
    "status_error",
]
