"""Structured output on every provider: a ``json_schema`` response_format goes out as the
provider takes it (as ``json_object`` with the schema in the prompt where the plugin
says so), and ``la.parse_json`` checks a reply against the schema."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

import llmadapters as la
from llmadapters.plugins import Registry

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmadapters.testing import FakeServer

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "tags": {"items": {"enum": ["a", "b"]}}},
    "required": ["city", "days"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "trip", "strict": True, "schema": SCHEMA}}
ANSWER = {"city": "Oslo", "days": 3}


def _client(server: FakeServer, provider: str) -> la.AsyncClient:
    providers = {provider: {"base_url": server.base_url, "api_key": "sk-test"}}
    return la.AsyncClient({}, providers=providers, middleware=[], registry=Registry.load(autoload=True))


async def test_deepseek_refuses_json_schema_and_the_plugin_sends_json_object_with_the_schema(
    make_client: Callable[..., la.AsyncClient], fake_server: FakeServer
) -> None:
    messages = [{"role": "user", "content": json.dumps(ANSWER)}]
    profile = {"extra_headers": {"x-fake-behaviour": "echo,deepseek-thinking"}}
    # Without the plugin, as DeepSeek answers.
    with pytest.raises(la.BadRequestError, match="This response_format type is unavailable now"):
        await make_client().chat.completions.create(
            model="local/deepseek-v4-flash", messages=messages, response_format=RESPONSE_FORMAT, **profile
        )
    with pytest.raises(la.BadRequestError, match="must contain the word 'json'"):
        await make_client().chat.completions.create(
            model="local/deepseek-v4-flash", messages=messages, response_format={"type": "json_object"}, **profile
        )
    async with _client(fake_server, "deepseek") as client:
        reply = await client.chat.completions.create(
            model="deepseek/deepseek-v4-flash", messages=messages, response_format=RESPONSE_FORMAT, **profile
        )
    sent = fake_server.seen_bodies[-1]
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["messages"][0]["role"] == "system"
    assert json.dumps(SCHEMA) in sent["messages"][0]["content"]
    assert sent["messages"][1:] == messages
    assert la.parse_json(reply, RESPONSE_FORMAT) == ANSWER


@pytest.mark.parametrize(
    ("provider", "downgraded"),
    [("deepseek", True), ("zhipu", True), ("zai", True), ("mimo", True), ("moonshot", False), ("qwen", False)],
)
async def test_which_providers_get_the_schema_in_the_prompt(
    fake_server: FakeServer, provider: str, downgraded: bool
) -> None:
    messages = [{"role": "system", "content": "Plan trips."}, {"role": "user", "content": json.dumps(ANSWER)}]
    async with _client(fake_server, provider) as client:
        reply = await client.chat.completions.create(
            model=f"{provider}/echo", messages=messages, response_format=RESPONSE_FORMAT
        )
    sent = fake_server.seen_bodies[-1]
    if downgraded:
        assert sent["response_format"] == {"type": "json_object"}
        system = sent["messages"][0]["content"]
        assert system.startswith("Plan trips.\n\n")
        assert json.dumps(SCHEMA) in system
        assert len(sent["messages"]) == 2
    else:
        assert (sent["response_format"], sent["messages"]) == (RESPONSE_FORMAT, messages)
    assert la.parse_json(reply.choices[0].message, SCHEMA) == ANSWER


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"city": "Oslo"}', r"\$: missing required key 'days'"),
        ('{"city": "Oslo", "days": "3"}', r"\$\.days: expected integer, got string"),
        ('{"city": "Oslo", "days": 3, "stars": 5}', r"\$: unexpected key 'stars'"),
        ('{"city": "Oslo", "days": 3, "tags": ["a", "c"]}', r"\$\.tags\[1\]: not one of the enum's values"),
        ("[1]", r"\$: expected object, got array"),
        ("Sure! Here is your JSON", r"not JSON"),
    ],
)
async def test_a_reply_that_departs_from_its_schema_is_refused_where_it_departs(
    make_client: Callable[..., la.AsyncClient], content: str, problem: str
) -> None:
    reply = await make_client().chat.completions.create(
        model="local/echo", messages=[{"role": "user", "content": content}]
    )
    with pytest.raises(la.StructuredOutputError, match=problem):
        la.parse_json(reply, RESPONSE_FORMAT)


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        ({"type": "integer"}, 3.0),
        ({"type": ["string", "null"]}, None),
        ({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "number"}}]}, [1, 2.5]),
        ({"const": "x"}, "x"),
        ({"type": "object", "properties": {"a": {"$ref": "#/defs/a"}}}, {"a": 1, "b": 2}),  # $ref: not checked
    ],
)
def test_what_matches(schema: dict[str, Any], value: object) -> None:
    assert la.parse_json(json.dumps(value), schema) == value


@pytest.mark.parametrize(
    ("schema", "value", "problem"),
    [
        ({"type": "integer"}, 2.5, r"expected integer, got number"),
        ({"type": "number"}, True, r"expected number, got boolean"),
        ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, [], r"matches none of oneOf"),
        ({"const": "x"}, "y", r"not the const value"),
    ],
)
def test_what_does_not(schema: dict[str, Any], value: object, problem: str) -> None:
    with pytest.raises(la.StructuredOutputError, match=problem):
        la.parse_json(json.dumps(value), schema)
    assert la.parse_json(json.dumps(value)) == value  # no schema: the JSON only


def test_a_reply_without_text_is_refused() -> None:
    with pytest.raises(la.StructuredOutputError, match="no text content"):
        la.parse_json(la.Message(role="assistant"), SCHEMA)
