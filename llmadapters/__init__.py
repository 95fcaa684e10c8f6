"""llmadapters: call OpenAI-compatible chat APIs at high concurrency through one pluggable layer.

Public names are loaded on first access (PEP 562), so ``import llmadapters`` costs a few
milliseconds and imports no HTTP library; a transport's library is imported when a route
first needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The one table of the public names: each and the module that defines it. ``__all__`` is
# made from it; the imports below are for type checkers alone, and a test holds them to
# this table.
_MODULE_OF = {
    "accumulate": "accumulation",
    "APIStatusError": "errors",
    "APITimeoutError": "errors",
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
    "Client": "sync",
    "ConfigError": "errors",
    "ConnectError": "errors",
    "Cost": "types",
    "CreateEmbeddingResponse": "types",
    "Delta": "types",
    "Embedding": "types",
    "EmbeddingRequest": "types",
    "FunctionCall": "types",
    "hookimpl": "hookspecs",
    "LLMAdapterError": "errors",
    "MalformedResponseError": "errors",
    "Message": "types",
    "Model": "types",
    "parse_json": "structured",
    "PluginError": "errors",
    "PluginWarning": "errors",
    "RateLimitError": "errors",
    "ResponseInfo": "types",
    "ServerError": "errors",
    "StreamEnd": "streaming",
    "StreamError": "errors",
    "StructuredOutputError": "errors",
    "SyncChatCompletionStream": "sync",
    "ToolCall": "types",
    "TransportError": "errors",
    "Usage": "types",
}
__all__ = sorted(_MODULE_OF)
# Names that still work, with a DeprecationWarning, for one more release.
_DEPRECATED = {"TimeoutError": "errors"}

if TYPE_CHECKING:
    from .accumulation import accumulate as accumulate
    from .client import AsyncClient as AsyncClient
    from .errors import APIStatusError as APIStatusError
    from .errors import APITimeoutError as APITimeoutError
    from .errors import AuthenticationError as AuthenticationError
    from .errors import BadRequestError as BadRequestError
    from .errors import ConfigError as ConfigError
    from .errors import ConnectError as ConnectError
    from .errors import LLMAdapterError as LLMAdapterError
    from .errors import MalformedResponseError as MalformedResponseError
    from .errors import PluginError as PluginError
    from .errors import PluginWarning as PluginWarning
    from .errors import RateLimitError as RateLimitError
    from .errors import ServerError as ServerError
    from .errors import StreamError as StreamError
    from .errors import StructuredOutputError as StructuredOutputError
    from .errors import TransportError as TransportError
    from .hookspecs import hookimpl as hookimpl
    from .streaming import ChatCompletionStream as ChatCompletionStream
    from .streaming import StreamEnd as StreamEnd
    from .structured import parse_json as parse_json
    from .sync import Client as Client
    from .sync import SyncChatCompletionStream as SyncChatCompletionStream
    from .types import BatchResult as BatchResult
    from .types import ChatCompletion as ChatCompletion
    from .types import ChatCompletionChunk as ChatCompletionChunk
    from .types import ChatRequest as ChatRequest
    from .types import Choice as Choice
    from .types import ChunkChoice as ChunkChoice
    from .types import Cost as Cost
    from .types import CreateEmbeddingResponse as CreateEmbeddingResponse
    from .types import Delta as Delta
    from .types import Embedding as Embedding
    from .types import EmbeddingRequest as EmbeddingRequest
    from .types import FunctionCall as FunctionCall
    from .types import Message as Message
    from .types import Model as Model
    from .types import ResponseInfo as ResponseInfo
    from .types import ToolCall as ToolCall
    from .types import Usage as Usage


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        if name in _DEPRECATED:  # the module warns
            return getattr(importlib.import_module(f".{_DEPRECATED[name]}", __name__), name)
        raise AttributeError(f"module 'llmadapters' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
