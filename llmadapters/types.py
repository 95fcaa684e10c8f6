"""Value types mirroring the OpenAI chat-completions shapes.

Frozen ``attrs`` classes, built from the provider's JSON with ``from_dict``. Every value
keeps ``raw`` (the provider's own JSON) and ``provider`` (the name of the provider that
answered), so nothing a provider sends is lost even when it has no field here. Fields that
the provider did not send are ``None``.

This module imports nothing of llmadapters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard, TypeVar

import attrs

__all__ = [
    "BatchResult",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatRequest",
    "Choice",
    "ChunkChoice",
    "Delta",
    "FunctionCall",
    "Message",
    "ResponseInfo",
    "ToolCall",
    "Usage",
]

JSON = dict[str, Any]


# These run on every reply and chunk: each tests for the types that ``json.loads`` makes
# first (plain ``type() is``), before the slower checks against the abstract classes.


def _opt_int(value: object) -> int | None:
    if type(value) is int:
        return value
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _is_mapping(value: object) -> TypeGuard[Mapping[str, Any]]:
    return type(value) is dict or isinstance(value, Mapping)


def _dicts(value: object) -> list[Mapping[str, Any]]:
    if type(value) is not list and (not isinstance(value, Sequence) or isinstance(value, (str, bytes))):
        return []
    return [item for item in value if _is_mapping(item)]


@attrs.frozen(kw_only=True)
class FunctionCall:
    """The function part of a tool call. In stream deltas both fields arrive in pieces."""

    name: str | None = None
    arguments: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FunctionCall:
        return cls(name=_opt_str(data.get("name")), arguments=_opt_str(data.get("arguments")))


@attrs.frozen(kw_only=True)
class ToolCall:
    """A tool call in a message, or a piece of one in a stream delta (then ``index`` is set)."""

    id: str | None = None
    type: str | None = None
    function: FunctionCall | None = None
    index: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToolCall:
        function = data.get("function")
        return cls(
            id=_opt_str(data.get("id")),
            type=_opt_str(data.get("type")),
            function=FunctionCall.from_dict(function) if _is_mapping(function) else None,
            index=_opt_int(data.get("index")),
        )


def _tool_calls(value: object) -> tuple[ToolCall, ...] | None:
    if value is None:
        return None
    return tuple([ToolCall.from_dict(item) for item in _dicts(value)])


_M = TypeVar("_M", bound="_MessageFields")


@attrs.frozen(kw_only=True)
class _MessageFields:
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: tuple[ToolCall, ...] | None = None
    refusal: str | None = None

    @classmethod
    def from_dict(cls: type[_M], data: Mapping[str, Any]) -> _M:
        # Once per chunk of every stream: the checks of _opt_str written out.
        get = data.get
        role, content, reasoning, refusal = get("role"), get("content"), get("reasoning_content"), get("refusal")
        tool_calls = get("tool_calls")
        return cls(
            role=role if isinstance(role, str) else None,
            content=content if isinstance(content, str) else None,
            reasoning_content=reasoning if isinstance(reasoning, str) else None,
            tool_calls=None if tool_calls is None else _tool_calls(tool_calls),
            refusal=refusal if isinstance(refusal, str) else None,
        )


@attrs.frozen(kw_only=True)
class Message(_MessageFields):
    """An assistant message.

    Attributes:
        role: usually ``"assistant"``.
        content: the text, or None (e.g. when the model only called tools).
        reasoning_content: the model's reasoning, for providers that send it
            (DeepSeek, Zhipu GLM, Qwen, MiMo, vLLM reasoning parsers).
        tool_calls: the tools the model asked to call, or None.
        refusal: OpenAI's refusal text, when sent.
    """


@attrs.frozen(kw_only=True)
class Delta(_MessageFields):
    """The change a stream chunk carries for one choice; the fields are those of `Message`."""


@attrs.frozen(kw_only=True)
class Usage:
    """Token counts; ``None`` where the provider did not report one."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Usage:
        return cls(
            prompt_tokens=_opt_int(data.get("prompt_tokens")),
            completion_tokens=_opt_int(data.get("completion_tokens")),
            total_tokens=_opt_int(data.get("total_tokens")),
        )


def _usage(value: object) -> Usage | None:
    return Usage.from_dict(value) if _is_mapping(value) else None


@attrs.frozen(kw_only=True)
class Choice:
    index: int = 0
    message: Message = attrs.field(factory=Message)
    finish_reason: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Choice:
        message = data.get("message")
        return cls(
            index=_opt_int(data.get("index")) or 0,
            message=Message.from_dict(message) if _is_mapping(message) else Message(),
            finish_reason=_opt_str(data.get("finish_reason")),
        )


@attrs.frozen(kw_only=True)
class ChunkChoice:
    index: int = 0
    delta: Delta = attrs.field(factory=Delta)
    finish_reason: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChunkChoice:
        get = data.get
        index, delta, finish_reason = get("index"), get("delta"), get("finish_reason")
        return cls(
            index=_opt_int(index) or 0,
            delta=Delta.from_dict(delta) if _is_mapping(delta) else Delta(),
            finish_reason=finish_reason if isinstance(finish_reason, str) else None,
        )


@attrs.frozen
class ResponseInfo:
    """The HTTP side of a reply: its status and headers, for middleware to read on the
    way back (the rate limiter reads ``x-ratelimit-*`` here) and for the caller's records.

    Attributes:
        status: the HTTP status.
        headers: the response headers, looked up case-insensitively (the transport's own
            headers object, or a dict with lower-case names).
    """

    status: int
    headers: Mapping[str, str] = attrs.field(repr=False)

    @property
    def request_id(self) -> str | None:
        """The server's ``x-request-id``, when it sent one."""
        return self.headers.get("x-request-id")


@attrs.frozen(kw_only=True)
class ChatCompletion:
    """A whole (non-streamed) reply.

    Attributes:
        provider: name of the provider that answered.
        raw: the provider's JSON, as received.
        http: the HTTP status and headers it came with (None for a reply that did not
            come over HTTP); not part of equality.
    """

    id: str | None = None
    model: str | None = None
    created: int | None = None
    choices: tuple[Choice, ...] = ()
    usage: Usage | None = None
    provider: str | None = None
    raw: JSON = attrs.field(factory=dict, repr=False)
    http: ResponseInfo | None = attrs.field(default=None, repr=False, eq=False)

    @classmethod
    def from_dict(cls, data: JSON, *, provider: str | None = None, http: ResponseInfo | None = None) -> ChatCompletion:
        return cls(
            id=_opt_str(data.get("id")),
            model=_opt_str(data.get("model")),
            created=_opt_int(data.get("created")),
            choices=tuple([Choice.from_dict(c) for c in _dicts(data.get("choices"))]),
            usage=_usage(data.get("usage")),
            provider=provider,
            raw=data,
            http=http,
        )


@attrs.frozen(kw_only=True)
class ChatCompletionChunk:
    """One event of a streamed reply. The last chunk may carry only ``usage`` (no choices)."""

    id: str | None = None
    model: str | None = None
    created: int | None = None
    choices: tuple[ChunkChoice, ...] = ()
    usage: Usage | None = None
    provider: str | None = None
    raw: JSON = attrs.field(factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: JSON, *, provider: str | None = None) -> ChatCompletionChunk:
        get = data.get
        id_, model, created, usage = get("id"), get("model"), get("created"), get("usage")
        return cls(
            id=id_ if isinstance(id_, str) else None,
            model=model if isinstance(model, str) else None,
            created=_opt_int(created),
            choices=tuple([ChunkChoice.from_dict(c) for c in _dicts(get("choices"))]),
            usage=None if usage is None else _usage(usage),
            provider=provider,
            raw=data,
        )


def _messages(value: Sequence[Mapping[str, Any]]) -> tuple[Mapping[str, Any], ...]:
    return tuple(value)


def _params(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return dict(value)


@attrs.frozen(kw_only=True)
class ChatRequest:
    """One chat call, as the caller asked for it, before any provider quirk is applied.

    Attributes:
        provider: the provider's name (``"deepseek"`` for ``model="deepseek/deepseek-chat"``).
        model: the model name as the provider knows it (``"deepseek-chat"``).
        messages: the chat messages, as OpenAI-shaped dicts.
        params: every other body parameter (``temperature``, ``tools``, ...), passed through.
        stream: whether the reply is streamed.
    """

    provider: str
    model: str
    messages: tuple[Mapping[str, Any], ...] = attrs.field(converter=_messages)
    params: Mapping[str, Any] = attrs.field(factory=dict, converter=_params)
    stream: bool = False


@attrs.frozen(kw_only=True)
class BatchResult:
    """The outcome of one request of a batch; exactly one of ``response`` and ``error``.

    Attributes:
        index: the request's position in the input (0-based).
        custom_id: the request's id (from the input, else ``line-<n>``, 1-based).
        response: the reply, when the call succeeded.
        error: why it did not: an ``llmadapters.errors`` exception (``BadRequestError`` for
            an input that is not a valid request).
        attempts: calls made (retries included); 0 for an invalid input.
        latency_s: seconds from the first attempt to the outcome.
    """

    index: int
    custom_id: str
    response: ChatCompletion | None = None
    error: Exception | None = attrs.field(default=None, eq=False)
    attempts: int = 0
    latency_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None
