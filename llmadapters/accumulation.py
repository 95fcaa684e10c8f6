"""`accumulate`: the chunks of a streamed reply, made into the one `ChatCompletion` that
the same answer unstreamed would have been.

It works on the chunks' JSON (``chunk.raw``), so that fields of a provider's own survive
as they do in a unary reply: strings arriving in pieces are joined (``content``,
``reasoning_content``, a tool call's ``arguments``), objects are merged, lists extended.
Identifiers (``role``, ``id``, ``type``, a function's ``name``) are kept as first sent,
since some servers repeat them in every piece.

Tool calls are assembled by their ``index``. Servers that send none (Ollama, some
Gemini-compatible endpoints) send each call whole, or its first piece with an ``id``
and the rest without: a piece with a new ``id`` starts a call, one without an ``id``
continues the last.

This module imports nothing of llmadapters but its value types.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from .types import ChatCompletion, ChatCompletionChunk

if TYPE_CHECKING:
    from .types import Cost

__all__ = ["accumulate"]

JSON = dict[str, Any]

# Sent once (or repeated whole), never in pieces.
_IDENTIFIERS = frozenset({"role", "id", "type", "name", "index"})


class _Pieces(list[str]):
    """A string still arriving: its pieces, joined once at the end (joining as they come
    would copy the text once per piece)."""


def _start(value: object) -> object:
    """A value seen for the first time, in a form later pieces can be merged into."""
    if isinstance(value, str):
        return _Pieces([value])
    if isinstance(value, Mapping):
        merged: JSON = {}
        _merge(merged, value)
        return merged
    if isinstance(value, list):
        return [_start(item) for item in value]
    return value


def _merge(into: JSON, delta: Mapping[str, Any]) -> None:
    for key, value in delta.items():
        old = into.get(key)
        if key == "tool_calls" and isinstance(value, list):
            if not isinstance(old, _ToolCalls):
                old = into[key] = _ToolCalls()
            for piece in value:
                if isinstance(piece, Mapping):
                    old.add(piece)
        elif old is None:
            into[key] = _start(value)
        elif value is None:
            continue
        elif key in _IDENTIFIERS:
            if not _text(old):
                into[key] = _start(value)
        elif isinstance(old, _Pieces) and isinstance(value, str):
            old.append(value)
        elif isinstance(old, dict) and isinstance(value, Mapping):
            _merge(old, value)
        elif isinstance(old, list) and isinstance(value, list):
            old.extend(_start(item) for item in value)
        else:
            into[key] = _start(value)


class _ToolCalls(list[JSON]):
    """Tool calls being assembled, in order, with where each ``index`` went."""

    def __init__(self) -> None:
        super().__init__()
        self.at_index: dict[int, int] = {}

    def add(self, piece: Mapping[str, Any]) -> None:
        index = piece.get("index")
        call_id = piece.get("id")
        if isinstance(index, int) and not isinstance(index, bool):
            position = self.at_index.get(index)
            # A new id at an index already taken is a new call: Ollama sends parallel
            # calls whole, every one at index 0 (ollama/ollama#15457, vercel/ai#14277).
            if position is None or (call_id and _text(self[position].get("id")) not in (None, "", call_id)):
                position = self.at_index[index] = len(self)
                self.append({})
        elif call_id:
            position = next((i for i, call in enumerate(self) if _text(call.get("id")) == call_id), len(self))
            if position == len(self):
                self.append({})
        else:
            if not self:
                self.append({})
            position = len(self) - 1
        _merge(self[position], {k: v for k, v in piece.items() if k != "index"})


def _text(value: object) -> object:
    return "".join(value) if isinstance(value, _Pieces) else value


def _finish(value: object) -> Any:
    """The merged value as plain JSON: pieces joined."""
    if isinstance(value, _Pieces):
        return "".join(value)
    if isinstance(value, dict):
        return {key: _finish(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finish(item) for item in value]
    return value


def _json_of(chunk: ChatCompletionChunk | Mapping[str, Any]) -> Mapping[str, Any]:
    return chunk.raw if isinstance(chunk, ChatCompletionChunk) else chunk


def accumulate(chunks: Iterable[ChatCompletionChunk | Mapping[str, Any]]) -> ChatCompletion:
    """One `ChatCompletion` from the chunks of a streamed reply (`ChatCompletionChunk`
    values, or their JSON): each choice's message (content, ``reasoning_content``, tool
    calls with their arguments joined, fields of the provider's own), its
    ``finish_reason``, and the usage of the chunk that carried it (with its ``cost``).
    Equal to the unary reply of the same answer; ``provider`` is the chunks'.
    """
    top: JSON = {}
    choices: dict[int, JSON] = {}
    usage: object = None
    provider: str | None = None
    cost: Cost | None = None
    for chunk in chunks:
        if isinstance(chunk, ChatCompletionChunk):
            provider = chunk.provider or provider
            cost = chunk.cost or cost
        data = _json_of(chunk)
        for key, value in data.items():
            if key == "choices":
                for choice in value if isinstance(value, list) else ():
                    if isinstance(choice, Mapping):
                        _choice(choices, choice)
            elif key == "usage":
                usage = value if value is not None else usage
            elif value is not None or key not in top:
                top[key] = value
    top["object"] = "chat.completion"
    top["choices"] = [_finish_choice(choices[index]) for index in sorted(choices)]
    if usage is not None:
        top["usage"] = usage
    reply = ChatCompletion.from_dict(top, provider=provider)
    return reply if cost is None else attrs.evolve(reply, cost=cost)


def _choice(choices: dict[int, JSON], choice: Mapping[str, Any]) -> None:
    index = choice.get("index")
    index = index if isinstance(index, int) and not isinstance(index, bool) else 0
    into = choices.get(index)
    if into is None:
        into = choices[index] = {"index": index, "message": {"role": "assistant"}, "finish_reason": None}
    for key, value in choice.items():
        if key == "delta":
            if isinstance(value, Mapping):
                _merge(into["message"], value)
        elif key == "finish_reason":
            into[key] = value if value is not None else into[key]
        elif key != "index":
            _merge(into, {key: value})


def _finish_choice(choice: JSON) -> JSON:
    """The choice as plain JSON, its message in the shape a unary reply's has: a
    ``content`` (None when only tools were called: streams often open with ``""``), and
    tool calls typed, in order, without the stream's ``index``."""
    done: JSON = _finish(choice)
    message = done["message"]
    if not message.get("content") and message.get("tool_calls"):
        message["content"] = None
    message.setdefault("content", None)
    for call in message.get("tool_calls") or ():
        if "function" in call:
            call.setdefault("type", "function")
    return done
