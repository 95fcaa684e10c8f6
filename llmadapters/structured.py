"""Structured output: a reply's JSON, checked against the JSON Schema it was asked for.

Providers that enforce ``response_format={"type": "json_schema", ...}`` (OpenAI) answer
in the schema. Those that take only ``{"type": "json_object"}`` get the schema in the
prompt instead (their plugins declare it with
`llmadapters.providers.base.json_schema_in_prompt`), and the model may not honour it:
`parse_json` is the check, when you want one.

What it checks, recursively: ``type`` (one name or a list), ``enum``, ``const``,
``required``, ``properties``, ``additionalProperties: false``, ``items`` (one schema
for every item) and ``anyOf``/``oneOf`` (read as "at least one branch"). Everything else
(``$ref``, ``pattern``, ``format``, bounds and lengths, ...) is not checked.

This module imports nothing of llmadapters but its value types and errors.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from .errors import StructuredOutputError
from .types import ChatCompletion, Message

__all__ = ["parse_json", "schema_of"]

_TYPES: Mapping[str, Callable[[object], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def schema_of(response_format: Mapping[str, Any]) -> Mapping[str, Any]:
    """The JSON Schema in ``response_format={"type": "json_schema", "json_schema":
    {"schema": ...}}``; a mapping that is not such a ``response_format`` is taken as the
    schema itself."""
    if response_format.get("type") != "json_schema":
        return response_format
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    return schema if isinstance(schema, Mapping) else {}


def _kind(value: object) -> str:
    return next((name for name, test in _TYPES.items() if test(value)), type(value).__name__)


def _mismatch(value: object, schema: object, path: str) -> str | None:
    """Where and how ``value`` first departs from ``schema``, or None."""
    if not isinstance(schema, Mapping):
        return None
    expected = schema.get("type")
    if expected is not None:
        names = [expected] if isinstance(expected, str) else list(expected)
        if not any(str(name) not in _TYPES or _TYPES[str(name)](value) for name in names):
            return f"{path}: expected {' or '.join(map(str, names))}, got {_kind(value)}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{path}: not one of the enum's values"
    if "const" in schema and value != schema["const"]:
        return f"{path}: not the const value"
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches and all(_mismatch(value, b, path) for b in branches):
            return f"{path}: matches none of {key}"
    if isinstance(value, dict):
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        for name in schema.get("required", ()):
            if name not in value:
                return f"{path}: missing required key {name!r}"
        for name, item in value.items():
            if name in properties:
                problem = _mismatch(item, properties[name], f"{path}.{name}")
                if problem:
                    return problem
            elif schema.get("additionalProperties") is False:
                return f"{path}: unexpected key {name!r}"
    if isinstance(value, list):
        for i, item in enumerate(value):
            problem = _mismatch(item, schema.get("items"), f"{path}[{i}]")
            if problem:
                return problem
    return None


def parse_json(reply: ChatCompletion | Message | str, schema: Mapping[str, Any] | None = None) -> Any:
    """The JSON of ``reply``'s content (its first choice's, for a `ChatCompletion`),
    checked against ``schema`` when one is given: the ``response_format`` the call sent
    (``{"type": "json_schema", ...}``) or a bare JSON Schema. See the module's docstring
    for what is checked.

    Raises:
        StructuredOutputError: the content is missing, not JSON, or departs from the
            schema; the message says where (``$.items[2].name: expected string, got
            integer``).
    """
    if isinstance(reply, ChatCompletion):
        if not reply.choices:
            raise StructuredOutputError("the reply has no choices")
        reply = reply.choices[0].message
    text = reply.content if isinstance(reply, Message) else reply
    if not isinstance(text, str):
        raise StructuredOutputError("the reply has no text content")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise StructuredOutputError(f"the reply is not JSON: {exc}") from None
    if schema is not None:
        problem = _mismatch(value, schema_of(schema), "$")
        if problem:
            raise StructuredOutputError(f"the reply does not match its schema: {problem}")
    return value
