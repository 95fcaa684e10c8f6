"""Everything a plugin author imports: for a provider, a transport or a middleware.

A plugin imports from here (and from ``llmadapters`` itself) and nowhere else: the
modules these names live in are internal and may move; these names stay. Each is
documented where it is defined; the "Writing a transport" guide shows a whole
transport built from them, and its reference part is generated from this module.

``__all__`` is the table of what is exported, in groups; ruff refuses an import that
is missing from it, and a name in it that is not imported.
"""

from __future__ import annotations

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
from .middleware.base import Call, CallNext, Middleware, Reply
from .plugins import MiddlewareFactory, TransportFactory
from .providers.base import (
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
    "EmbeddingsAPI",
    "ProviderSpec",
    "bearer_auth",
    "json_schema_in_prompt",
    "openai_payload",
    "thinking_toggle_payload",
    "verdict_by_error_field",
    # Middleware: the protocol, and what `register_middleware` registers.
    "Call",
    "CallNext",
    "ChatCompletionStream",
    "Middleware",
    "MiddlewareFactory",
    "Reply",
    "StreamEnd",
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
