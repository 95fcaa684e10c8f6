"""Value types mirroring the OpenAI chat-completions shapes.

Frozen ``attrs`` classes, built from the provider's JSON with ``from_dict`` and turned
back into it with ``to_dict``. Every value keeps ``raw`` (the provider's own JSON, down
to each message and tool call), and a reply its ``provider`` (the name of the provider
that answered), so nothing a provider sends is lost even when it has no field here:
``to_dict`` gives it all back. Fields that the provider did not send are ``None``.

`wire_messages` turns what a caller passes as ``messages`` (dicts, or the values here,
such as the `Message` of a reply) into the JSON a request carries.

This module imports nothing of llmadapters.
"""

from __future__ import annotations

import array
import base64
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeGuard, TypeVar

import attrs

__all__ = [
    "BatchResult",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatRequest",
    "Choice",
    "ChunkChoice",
    "Cost",
    "CreateEmbeddingResponse",
    "Delta",
    "Embedding",
    "EmbeddingRequest",
    "FunctionCall",
    "Message",
    "Model",
    "Request",
    "ResponseInfo",
    "ToolCall",
    "Usage",
    "wire_messages",
]

JSON = dict[str, Any]
_T = TypeVar("_T")


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


def _dicts(value: object) -> Sequence[Mapping[str, Any]]:
    if type(value) is list:  # what json.loads makes: a list of dicts, taken as it is
        for item in value:
            if type(item) is not dict:
                break
        else:
            return value
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        return []
    return [item for item in value if _is_mapping(item)]


def _each(value: object, parse: Callable[[Mapping[str, Any]], _T]) -> tuple[_T, ...]:
    """``parse`` of each object in the list ``value`` (`_dicts`): at once for the usual
    list of one dict (a reply's or a chunk's choices)."""
    if type(value) is list and len(value) == 1 and type(value[0]) is dict:
        return (parse(value[0]),)
    return tuple([parse(item) for item in _dicts(value)])


# Fields that are not part of the provider's JSON.
_NOT_WIRE = frozenset({"raw", "provider", "http", "cost"})


def _wire(value: object) -> object:
    if isinstance(value, tuple):
        return [_wire(item) for item in value]
    if isinstance(value, _Wire):
        return value.to_dict()
    return value


class _Wire:
    """``to_dict`` for the value types: the provider's JSON (``raw``), with the fields
    that are set (not None) written over it."""

    __slots__ = ()
    raw: JSON

    def to_dict(self) -> JSON:
        """The value as OpenAI-shaped JSON: what the provider sent (fields of its own
        included), with this value's fields over it; a field that is None leaves the
        provider's value (or its absence) as it was. ``messages.append(reply_message)``
        sends this, so a conversation carries back everything the provider sent."""
        data = dict(self.raw)
        for field in attrs.fields(type(self)):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            if value is not None and field.name not in _NOT_WIRE:
                data[field.name] = _wire(value)
        return data

    def model_dump(self) -> JSON:
        """`to_dict`, under the name of the openai SDK's (pydantic) models."""
        return self.to_dict()

    def model_dump_json(self, *, indent: int | None = None) -> str:
        """`to_dict` as JSON text, as the openai SDK's models write it."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)


def _raw(data: Mapping[str, Any]) -> JSON:
    return data if type(data) is dict else dict(data)


def _new_builder(cls: type[_T]) -> Callable[..., _T]:
    """A constructor of the attrs class ``cls`` for ``from_dict``, which builds a value
    per reply and per stream chunk. attrs' frozen ``__init__`` sets each field with a
    call of ``object.__setattr__``; this builder fills a plain class with the same slots
    (`_slots_of`), whose stores the interpreter makes inline, and then makes the value
    a ``cls``, at less than half the cost. It takes every field by keyword (no defaults,
    no factories) and makes the value that ``cls(**fields)`` makes (the reply types have
    no converters, validators or post-init). Generated, as attrs generates ``__init__``."""
    names = [field.name for field in attrs.fields(cls)]  # type: ignore[arg-type]
    scope: dict[str, Any] = {"_new": object.__new__, "_slots": _slots_of(cls), "_cls": cls}
    lines = [f"def build(*, {', '.join(names)}):", "    value = _new(_slots)"]
    lines += [f"    value.{name} = {name}" for name in names]
    lines += ["    value.__class__ = _cls", "    return value"]
    exec("\n".join(lines), scope)  # our own field names only, as attrs does
    build: Callable[..., _T] = scope["build"]
    return build


def _slots_of(cls: type[Any]) -> type[Any]:
    """A class with the slots of ``cls`` (those of the class in its MRO that declares
    them) on the same base, without attrs' frozen ``__setattr__``: Python lets an
    instance of it become a ``cls``, since the two lay out their slots alike. Python
    cannot match a ``__weakref__`` slot or a ``__dict__`` that way: the reply types have
    neither (``weakref_slot=False``), nor may a subclass of one."""
    if cls.__weakrefoffset__ or cls.__dictoffset__:
        raise TypeError(f"{cls.__name__} has a __weakref__ or a __dict__: declare it attrs.frozen(weakref_slot=False)")
    owner = next(klass for klass in cls.__mro__ if vars(klass).get("__slots__"))
    return type(f"_{owner.__name__}Slots", owner.__bases__, {"__slots__": tuple(vars(owner)["__slots__"])})


class _Builders(dict):  # type: ignore[type-arg]
    """One builder per class, made on first use; looked up as a dict's item, at half
    the cost of a ``functools.cache`` call."""

    def __missing__(self, cls: type[Any]) -> Callable[..., Any]:
        build = self[cls] = _new_builder(cls)
        return build


if TYPE_CHECKING:
    _builder = _new_builder
else:
    _builder = _Builders().__getitem__


@attrs.frozen(kw_only=True, weakref_slot=False)
class FunctionCall(_Wire):
    """The function part of a tool call. In stream deltas both fields arrive in pieces."""

    name: str | None = None
    arguments: str | None = None
    raw: JSON = attrs.field(factory=dict, repr=False, eq=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FunctionCall:
        return _builder(cls)(name=_opt_str(data.get("name")), arguments=_opt_str(data.get("arguments")), raw=_raw(data))


@attrs.frozen(kw_only=True, weakref_slot=False)
class ToolCall(_Wire):
    """A tool call in a message, or a piece of one in a stream delta (then ``index`` is set)."""

    id: str | None = None
    type: str | None = None
    function: FunctionCall | None = None
    index: int | None = None
    raw: JSON = attrs.field(factory=dict, repr=False, eq=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToolCall:
        function = data.get("function")
        return _builder(cls)(
            id=_opt_str(data.get("id")),
            type=_opt_str(data.get("type")),
            function=FunctionCall.from_dict(function) if _is_mapping(function) else None,
            index=_opt_int(data.get("index")),
            raw=_raw(data),
        )


def _tool_calls(value: object) -> tuple[ToolCall, ...] | None:
    if value is None:
        return None
    return _each(value, ToolCall.from_dict)


_M = TypeVar("_M", bound="_MessageFields")


@attrs.frozen(kw_only=True, weakref_slot=False)
class _MessageFields(_Wire):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: tuple[ToolCall, ...] | None = None
    refusal: str | None = None
    raw: JSON = attrs.field(factory=dict, repr=False, eq=False)

    @classmethod
    def from_dict(cls: type[_M], data: Mapping[str, Any]) -> _M:
        # Once per chunk of every stream: the checks of _opt_str written out, and first
        # the delta of most chunks, a piece of text alone.
        get = data.get
        content = get("content")
        if type(content) is str and len(data) == 1 and type(data) is dict:
            return _builder(cls)(
                role=None, content=content, reasoning_content=None, tool_calls=None, refusal=None, raw=data
            )
        role, reasoning, refusal = get("role"), get("reasoning_content"), get("refusal")
        tool_calls = get("tool_calls")
        return _builder(cls)(
            role=role if isinstance(role, str) else None,
            content=content if isinstance(content, str) else None,
            reasoning_content=reasoning if isinstance(reasoning, str) else None,
            tool_calls=None if tool_calls is None else _tool_calls(tool_calls),
            refusal=refusal if isinstance(refusal, str) else None,
            raw=data if type(data) is dict else dict(data),
        )


@attrs.frozen(kw_only=True, weakref_slot=False)
class Message(_MessageFields):
    """An assistant message; ``messages`` takes it as it is, so that a conversation goes
    on with ``messages.append(reply.choices[0].message)``, and `to_dict` gives its JSON.

    Attributes:
        role: usually ``"assistant"``.
        content: the text, or None (e.g. when the model only called tools).
        reasoning_content: the model's reasoning, for providers that send it
            (DeepSeek, Zhipu GLM, Qwen, MiMo, vLLM reasoning parsers).
        tool_calls: the tools the model asked to call, or None.
        refusal: OpenAI's refusal text, when sent.
        raw: the message's JSON as the provider sent it (not part of equality).
    """


@attrs.frozen(kw_only=True, weakref_slot=False)
class Delta(_MessageFields):
    """The change a stream chunk carries for one choice; the fields are those of `Message`."""


# The parsers of nested values, bound once: each reply or chunk calls them.
_message = Message.from_dict
_delta = Delta.from_dict


@attrs.frozen(kw_only=True, weakref_slot=False)
class Usage(_Wire):
    """Token counts; ``None`` where the provider did not report one. ``raw`` keeps the
    rest (``prompt_tokens_details``, DeepSeek's ``prompt_cache_hit_tokens``, ...)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    raw: JSON = attrs.field(factory=dict, repr=False, eq=False)

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens served from the provider's cache: OpenAI's (and most others')
        ``prompt_tokens_details.cached_tokens``, or DeepSeek's ``prompt_cache_hit_tokens``;
        0 when the provider reported none."""
        details = self.raw.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if _is_mapping(details) else None
        if cached is None:
            cached = self.raw.get("prompt_cache_hit_tokens")
        return _opt_int(cached) or 0

    @property
    def reasoning_tokens(self) -> int:
        """Completion tokens the model spent reasoning
        (``completion_tokens_details.reasoning_tokens``); 0 when not reported."""
        details = self.raw.get("completion_tokens_details")
        return (_opt_int(details.get("reasoning_tokens")) if _is_mapping(details) else None) or 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Usage:
        return _builder(cls)(
            prompt_tokens=_opt_int(data.get("prompt_tokens")),
            completion_tokens=_opt_int(data.get("completion_tokens")),
            total_tokens=_opt_int(data.get("total_tokens")),
            raw=_raw(data),
        )


@attrs.frozen
class Cost:
    """What a call cost: ``amount`` in ``currency`` (an ISO 4217 code, e.g. ``"USD"``).

    A reply's ``cost`` is None when the price of its model is not known: never a guess
    and never zero (see `llmadapters.pricing`).
    """

    amount: float
    currency: str = "USD"

    def __str__(self) -> str:
        return f"{self.amount:.6g} {self.currency}"


def _usage(value: object) -> Usage | None:
    return Usage.from_dict(value) if _is_mapping(value) else None


@attrs.frozen(kw_only=True, weakref_slot=False)
class Choice(_Wire):
    index: int = 0
    message: Message = attrs.field(factory=Message)
    finish_reason: str | None = None
    raw: JSON = attrs.field(factory=dict, repr=False, eq=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Choice:
        message = data.get("message")
        return _builder(cls)(
            index=_opt_int(data.get("index")) or 0,
            message=_message(message) if _is_mapping(message) else Message(),
            finish_reason=_opt_str(data.get("finish_reason")),
            raw=_raw(data),
        )


_choice = Choice.from_dict


@attrs.frozen(kw_only=True, weakref_slot=False)
class ChunkChoice(_Wire):
    index: int = 0
    delta: Delta = attrs.field(factory=Delta)
    finish_reason: str | None = None
    raw: JSON = attrs.field(factory=dict, repr=False, eq=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChunkChoice:
        get = data.get
        index, delta, finish_reason = get("index"), get("delta"), get("finish_reason")
        return _builder(cls)(
            index=_opt_int(index) or 0,
            delta=_delta(delta) if _is_mapping(delta) else Delta(),
            finish_reason=finish_reason if isinstance(finish_reason, str) else None,
            raw=data if type(data) is dict else dict(data),
        )


_chunk_choice = ChunkChoice.from_dict


@attrs.frozen
class ResponseInfo:
    """The HTTP side of a reply: its status and headers, for middleware to read on the
    way back (the rate limiter reads ``x-ratelimit-*`` here) and for the caller's records.

    Attributes:
        status: the HTTP status.
        headers: the response headers, looked up case-insensitively (the transport's own
            headers object, or a dict with lower-case names).
        cached: whether the reply came from the response cache (the ``cache``
            middleware), with the status and headers it first came with.
        attempts: the attempts the call took, this one included (the retry middleware
            counts them; 1 without it).
    """

    status: int
    headers: Mapping[str, str] = attrs.field(repr=False)
    cached: bool = attrs.field(default=False, kw_only=True)
    attempts: int = attrs.field(default=1, kw_only=True)

    @property
    def request_id(self) -> str | None:
        """The server's ``x-request-id``, when it sent one."""
        return self.headers.get("x-request-id")


@attrs.frozen(kw_only=True, weakref_slot=False)
class ChatCompletion(_Wire):
    """A whole (non-streamed) reply.

    Attributes:
        provider: name of the provider that answered.
        cost: what it cost, from its usage, cache hits and the price of its model in
            force when it was sent; None when that price is not known. Not part of
            equality (the same bytes cost more at a peak hour).
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
    cost: Cost | None = attrs.field(default=None, eq=False)

    @classmethod
    def from_dict(cls, data: JSON, *, provider: str | None = None, http: ResponseInfo | None = None) -> ChatCompletion:
        return _builder(cls)(
            id=_opt_str(data.get("id")),
            model=_opt_str(data.get("model")),
            created=_opt_int(data.get("created")),
            choices=_each(data.get("choices"), _choice),
            usage=_usage(data.get("usage")),
            provider=provider,
            raw=data,
            http=http,
            cost=None,
        )


@attrs.frozen(kw_only=True, weakref_slot=False)
class ChatCompletionChunk(_Wire):
    """One event of a streamed reply. The last chunk may carry only ``usage`` (no choices).
    The chunk that carries ``usage`` also carries the stream's ``cost`` (see
    `ChatCompletion`)."""

    id: str | None = None
    model: str | None = None
    created: int | None = None
    choices: tuple[ChunkChoice, ...] = ()
    usage: Usage | None = None
    provider: str | None = None
    raw: JSON = attrs.field(factory=dict, repr=False)
    cost: Cost | None = attrs.field(default=None, eq=False)

    @classmethod
    def from_dict(cls, data: JSON, *, provider: str | None = None) -> ChatCompletionChunk:
        get = data.get
        id_, model, created, usage = get("id"), get("model"), get("created"), get("usage")
        return _builder(cls)(
            id=id_ if isinstance(id_, str) else None,
            model=model if isinstance(model, str) else None,
            created=_opt_int(created),
            choices=_each(get("choices"), _chunk_choice),
            usage=None if usage is None else _usage(usage),
            provider=provider,
            raw=data,
            cost=None,
        )


_JSON_SCALARS = (str, int, float, bool, type(None))


# Deeper than any request's JSON (tool schemas nest a few dozen levels); deeper input is
# refused by name here, before Python's recursion limit stops it anywhere.
_MAX_DEPTH = 200


def _json(value: object, where: str, depth: int = 0) -> object:
    """``value`` as JSON can carry it (tuples as lists, the values here as their
    ``to_dict``), or a `TypeError` naming ``where`` it is."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if depth >= _MAX_DEPTH:
        raise TypeError(f"{where}: nested more than {_MAX_DEPTH} levels deep")
    if _is_mapping(value):
        converted: JSON = {}
        for key, item in value.items():
            if not isinstance(key, _JSON_SCALARS):  # JSON writes the scalars as strings
                raise TypeError(f"{where}: the key {key!r} cannot be a JSON object's key")
            converted[key] = _json(item, f"{where}[{key!r}]", depth + 1)
        return converted
    if isinstance(value, (list, tuple)):
        return [_json(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, _JSON_SCALARS):  # subclasses: str enums, IntEnum, ...
        return value
    to_dict = getattr(value, "to_dict", None)  # ours, and the openai SDK's models
    if callable(to_dict):
        data = to_dict()
        if _is_mapping(data):
            return _json(data, where, depth + 1)
    raise TypeError(f"{where}: an object of type {kind.__name__} cannot be sent as JSON")


def _plain(message: object) -> bool:
    """A dict of strings, the common message: nothing to convert."""
    if type(message) is not dict:
        return False
    for value in message.values():  # noqa: SIM110 - a loop, not all() of a generator: twice as fast
        if type(value) is not str:
            return False
    return True


def wire_messages(messages: Iterable[object]) -> tuple[Mapping[str, Any], ...]:
    """``messages`` as the JSON objects a request carries: dicts (or any mappings) and
    `Message` values (or anything with a ``to_dict``, such as the openai SDK's models),
    converted all the way down. Raises `TypeError` naming the message (``messages[2]``)
    and the place in it that JSON cannot carry, before anything is sent."""
    wired: list[Mapping[str, Any]] = []
    for i, message in enumerate(messages):
        if _plain(message):
            wired.append(message)  # type: ignore[arg-type]
            continue
        if not _is_mapping(message) and not callable(getattr(message, "to_dict", None)):
            raise TypeError(
                f"messages[{i}]: a {type(message).__name__} is not a message: give a dict such as "
                "{'role': 'user', 'content': 'hi'}, or a Message"
            )
        wired.append(_json(message, f"messages[{i}]"))  # type: ignore[arg-type]
    return tuple(wired)


def _params(value: Mapping[str, Any]) -> Mapping[str, Any]:
    if not value:  # (the converters of a request run on every call: nothing to do, done at once)
        return {}
    return {name: _json(item, f"parameter {name!r}") for name, item in value.items()}


def _headers(value: Mapping[str, str] | None) -> Mapping[str, str]:
    """Names and values HTTP can carry, or an error naming the header (never quoting its
    value, which may be a key)."""
    if not value:
        return {}
    for name, item in value.items():
        if not isinstance(name, str) or not isinstance(item, str):
            raise TypeError(f"extra_headers: header {name!r} must be a string with a string value")
        if not (name.isascii() and name.isprintable() and item.isascii() and item.isprintable()):
            raise ValueError(f"extra_headers: header {name!r} has a name or value HTTP cannot send")
    return dict(value)


def _query(value: Mapping[str, object] | None) -> Mapping[str, str]:
    query: dict[str, str] = {}
    if not value:
        return query
    for name, item in value.items():
        if not isinstance(item, (str, int, float)) or isinstance(item, bool):
            raise TypeError(f"extra_query: parameter {name!r} must be a string or a number, got {type(item).__name__}")
        query[str(name)] = str(item)
    return query


# The phases of an attempt that a per-call ``timeout`` sets, as the openai SDK's does.
TIMEOUT_PHASES = ("connect", "read", "write", "pool")


def _seconds(value: object, where: str) -> float | None:
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
        return None if value is None else float(value)
    raise TypeError(f"{where}: expected a positive number of seconds or None, got {value!r}")


def _timeout(value: object) -> Mapping[str, float | None] | None:
    """Seconds for each phase given: a number for all four (the openai SDK's meaning),
    a mapping of some, or an object with the four as attributes (an ``httpx.Timeout``)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dict.fromkeys(TIMEOUT_PHASES, _seconds(value, "timeout"))
    if _is_mapping(value):
        unknown = sorted(set(value) - set(TIMEOUT_PHASES))
        if unknown:
            raise TypeError(f"timeout: unknown phase {unknown[0]!r}; expected {', '.join(TIMEOUT_PHASES)}")
        return {phase: _seconds(value[phase], f"timeout[{phase!r}]") for phase in value}
    if all(hasattr(value, phase) for phase in TIMEOUT_PHASES):
        return {phase: _seconds(getattr(value, phase), f"timeout.{phase}") for phase in TIMEOUT_PHASES}
    raise TypeError(f"timeout: expected seconds, a mapping of {', '.join(TIMEOUT_PHASES)}, or an httpx Timeout")


@attrs.frozen(kw_only=True)
class ChatRequest:
    """One chat call, as the caller asked for it, before any provider quirk is applied.

    Attributes:
        provider: the provider's name (``"deepseek"`` for ``model="deepseek/deepseek-chat"``).
        model: the model name as the provider knows it (``"deepseek-chat"``).
        messages: the chat messages, as OpenAI-shaped dicts (`wire_messages` converts
            what it is given, a `Message` included).
        params: every other body parameter (``temperature``, ``tools``, ...), passed
            through (converted as JSON needs, or a `TypeError` naming it).
        stream: whether the reply is streamed.
        extra_headers: headers of this call alone, over the route's (auth included), as
            the openai SDK's ``extra_headers``.
        extra_query: query parameters of this call, over the route's.
        timeout: seconds per phase (``connect``, ``read``, ``write``, ``pool``) for this
            call, over the route's; None keeps the route's.
    """

    provider: str
    model: str
    messages: tuple[Mapping[str, Any], ...] = attrs.field(converter=wire_messages)
    params: Mapping[str, Any] = attrs.field(factory=dict, converter=_params)
    stream: bool = False
    extra_headers: Mapping[str, str] = attrs.field(factory=dict, converter=_headers)
    extra_query: Mapping[str, str] = attrs.field(factory=dict, converter=_query)
    timeout: Mapping[str, float | None] | None = attrs.field(default=None, converter=_timeout)


def decode_base64_floats(text: str) -> list[float]:
    """A base64 embedding as its floats: little-endian float32s, as the openai SDK
    decodes them when numpy is not installed (``array``, no numpy needed)."""
    floats = array.array("f", base64.b64decode(text, validate=True))
    if sys.byteorder == "big":
        floats.byteswap()
    return floats.tolist()


def _input(value: object) -> str | list[Any]:
    """What ``input`` takes, as the openai SDK does: a string, a list of strings, a list
    of token ids, or a list of such lists; never empty. A `TypeError` says what it got."""
    if isinstance(value, str):
        if not value:
            raise ValueError("input: an empty string cannot be embedded")
        return value
    if isinstance(value, (list, tuple)) and value:
        items = list(value)
        if all(isinstance(item, str) and item for item in items):
            return items
        if all(type(item) is int for item in items):
            return items
        if all(isinstance(item, (list, tuple)) and item and all(type(t) is int for t in item) for item in items):
            return [list(item) for item in items]
    raise TypeError(
        "input must be a non-empty string, a list of non-empty strings, a list of token ids or a list of "
        f"lists of token ids, got {_shown_type(value)}"
    )


def _shown_type(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return "an empty list" if not value else f"a list holding {type(value[0]).__name__}"
    return f"a {type(value).__name__}"


def _encoding_format(value: object) -> str | None:
    if value is None or value in ("float", "base64"):
        return value
    raise ValueError(f"encoding_format must be 'float' or 'base64', got {value!r}")


@attrs.frozen(kw_only=True)
class EmbeddingRequest:
    """One embeddings call, as the caller asked for it.

    It goes through the same middleware as a `ChatRequest`, and reads the same where a
    middleware looks: ``model``, ``params``, ``extra_*`` and ``timeout`` alike,
    ``stream`` always False and ``messages`` empty; the text is in ``input``.

    Attributes:
        provider: the provider's name.
        model: the model name as the provider knows it (``"embedding-3"``).
        input: a string, a list of strings, a list of token ids or a list of lists of them.
        params: every other body parameter (``dimensions``, ``user``, ...).
        encoding_format: what the caller asked for (``"float"`` or ``"base64"``), or
            None: then base64 goes over the wire (a third of the bytes) and the reply's
            vectors are decoded to floats, as the openai SDK does.
        extra_headers, extra_query, timeout: as in `ChatRequest`.
    """

    path: ClassVar[str] = "/embeddings"
    stream: ClassVar[bool] = False

    provider: str
    model: str
    input: str | list[Any] = attrs.field(converter=_input)
    params: Mapping[str, Any] = attrs.field(factory=dict, converter=_params)
    encoding_format: str | None = attrs.field(default=None, converter=_encoding_format)
    extra_headers: Mapping[str, str] = attrs.field(factory=dict, converter=_headers)
    extra_query: Mapping[str, str] = attrs.field(factory=dict, converter=_query)
    timeout: Mapping[str, float | None] | None = attrs.field(default=None, converter=_timeout)

    @property
    def messages(self) -> tuple[Mapping[str, Any], ...]:
        """None: an embeddings call has no messages (its text is in ``input``)."""
        return ()

    @property
    def texts(self) -> list[Any]:
        """``input`` as a list: one item per vector the reply will hold."""
        return [self.input] if isinstance(self.input, str) or type(self.input[0]) is int else self.input


# What goes through a route: a chat or an embeddings call.
Request = ChatRequest | EmbeddingRequest


@attrs.frozen(kw_only=True)
class Embedding(_Wire):
    """One vector of an embeddings reply.

    Attributes:
        embedding: the vector's floats; the base64 text when the caller asked for
            ``encoding_format="base64"``.
        index: the position of its input in the request.
        object: ``"embedding"``.
    """

    embedding: list[float] | str
    index: int = 0
    object: str | None = None
    raw: JSON = attrs.field(factory=dict, repr=False, eq=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, decode: bool = False) -> Embedding:
        vector = data.get("embedding")
        if isinstance(vector, str) and decode:
            vector = decode_base64_floats(vector)
        elif not isinstance(vector, str):
            vector = [float(x) for x in vector] if isinstance(vector, list) else []
        return cls(
            embedding=vector,
            index=_opt_int(data.get("index")) or 0,
            object=_opt_str(data.get("object")),
            raw=_raw(data),
        )


@attrs.frozen(kw_only=True)
class CreateEmbeddingResponse(_Wire):
    """An embeddings reply, named and shaped as the openai SDK's.

    Attributes:
        data: one `Embedding` per input, in the order of ``index``.
        model: the model that answered.
        object: ``"list"``.
        usage: the input's tokens (``prompt_tokens``, ``total_tokens``).
        provider, raw, http, cost: as in `ChatCompletion`.
    """

    data: tuple[Embedding, ...] = ()
    model: str | None = None
    object: str | None = None
    usage: Usage | None = None
    provider: str | None = None
    raw: JSON = attrs.field(factory=dict, repr=False)
    http: ResponseInfo | None = attrs.field(default=None, repr=False, eq=False)
    cost: Cost | None = attrs.field(default=None, eq=False)

    @classmethod
    def from_dict(
        cls, data: JSON, *, provider: str | None = None, http: ResponseInfo | None = None, decode: bool = False
    ) -> CreateEmbeddingResponse:
        """``decode``: base64 vectors become floats (the caller asked for no encoding)."""
        return cls(
            data=tuple([Embedding.from_dict(item, decode=decode) for item in _dicts(data.get("data"))]),
            model=_opt_str(data.get("model")),
            object=_opt_str(data.get("object")),
            usage=_usage(data.get("usage")),
            provider=provider,
            raw=data,
            http=http,
        )


@attrs.frozen(kw_only=True)
class Model(_Wire):
    """A model a provider lists (``GET /models``), shaped as the openai SDK's ``Model``.

    Attributes:
        id: the model's name, as ``model="provider/<id>"`` takes it.
        created: when it was made (seconds since the epoch), where the provider says.
        object: ``"model"``.
        owned_by: its owner, where the provider says.
        provider: the provider that listed it.
    """

    id: str
    created: int | None = None
    object: str | None = None
    owned_by: str | None = None
    provider: str | None = None
    raw: JSON = attrs.field(factory=dict, repr=False, eq=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, provider: str | None = None) -> Model:
        return cls(
            id=str(data.get("id", "")),
            created=_opt_int(data.get("created")),
            object=_opt_str(data.get("object")),
            owned_by=_opt_str(data.get("owned_by")),
            provider=provider,
            raw=_raw(data),
        )


@attrs.frozen(kw_only=True)
class BatchResult:
    """The outcome of one request of a batch; exactly one of ``response`` and ``error``.

    Attributes:
        index: the request's position in the input (0-based).
        custom_id: the request's id (from the input, else ``line-<n>``, 1-based).
        response: the reply, when the call succeeded (a `CreateEmbeddingResponse`
            for an embeddings request).
        error: why it did not: an ``llmadapters.errors`` exception (``BadRequestError`` for
            an input that is not a valid request).
        attempts: calls made (retries included); 0 for an invalid input. An embeddings
            input sent in chunks counts as one call, plus the retries of its chunks.
        latency_s: seconds from the first attempt to the outcome.
    """

    index: int
    custom_id: str
    response: ChatCompletion | CreateEmbeddingResponse | None = None
    error: Exception | None = attrs.field(default=None, eq=False)
    attempts: int = 0
    latency_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None
