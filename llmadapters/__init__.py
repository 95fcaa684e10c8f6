"""llmadapters: call OpenAI-compatible chat APIs at high concurrency through one pluggable layer.

Public names are loaded on first access (PEP 562), so ``import llmadapters`` costs a few
milliseconds and imports no HTTP library; a transport's library is imported when a route
first needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .accumulation import accumulate
    from .client import AsyncClient, ChatCompletionStream, Client, SyncChatCompletionStream
    from .errors import (
        APIStatusError,
        AuthenticationError,
        BadRequestError,
        ConfigError,
        ConnectError,
        LLMAdapterError,
        MalformedResponseError,
        PluginError,
        PluginWarning,
        RateLimitError,
        ServerError,
        StreamError,
        StructuredOutputError,
        TimeoutError,
        TransportError,
    )
    from .hookspecs import hookimpl
    from .structured import parse_json
    from .types import (
        BatchResult,
        ChatCompletion,
        ChatCompletionChunk,
        ChatRequest,
        Choice,
        ChunkChoice,
        CreateEmbeddingResponse,
        Delta,
        Embedding,
        EmbeddingRequest,
        FunctionCall,
        Message,
        Model,
        ResponseInfo,
        ToolCall,
        Usage,
    )

__all__ = [
    "APIStatusError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "BatchResult",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionStream",
    "ChatRequest",
    "Choice",
    "ChunkChoice",
    "Client",
    "ConfigError",
    "ConnectError",
    "CreateEmbeddingResponse",
    "Delta",
    "Embedding",
    "EmbeddingRequest",
    "FunctionCall",
    "LLMAdapterError",
    "MalformedResponseError",
    "Message",
    "Model",
    "PluginError",
    "PluginWarning",
    "RateLimitError",
    "ResponseInfo",
    "ServerError",
    "StreamError",
    "StructuredOutputError",
    "SyncChatCompletionStream",
    "TimeoutError",
    "ToolCall",
    "TransportError",
    "Usage",
    "accumulate",
    "hookimpl",
    "parse_json",
]

_MODULE_OF = {
    "APIStatusError": "errors",
    "AsyncClient": "client",
    "AuthenticationError": "errors",
    "BadRequestError": "errors",
    "BatchResult": "types",
    "ChatCompletion": "types",
    "ChatCompletionChunk": "types",
    "ChatCompletionStream": "streaming",
    "ChatRequest": "types",
    "Choice": "types",
    "ChunkChoice": "types",
    "Client": "client",
    "ConfigError": "errors",
    "ConnectError": "errors",
    "CreateEmbeddingResponse": "types",
    "Delta": "types",
    "Embedding": "types",
    "EmbeddingRequest": "types",
    "FunctionCall": "types",
    "LLMAdapterError": "errors",
    "MalformedResponseError": "errors",
    "Message": "types",
    "Model": "types",
    "PluginError": "errors",
    "PluginWarning": "errors",
    "RateLimitError": "errors",
    "ResponseInfo": "types",
    "ServerError": "errors",
    "StreamError": "errors",
    "StructuredOutputError": "errors",
    "SyncChatCompletionStream": "client",
    "TimeoutError": "errors",
    "ToolCall": "types",
    "hookimpl": "hookspecs",
    "TransportError": "errors",
    "Usage": "types",
    "accumulate": "accumulation",
    "parse_json": "structured",
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'llmadapters' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
