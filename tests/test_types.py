"""The value types keep what a provider sent in the shape it should have, and turn a value
of the wrong type into None (never an exception), whatever the JSON holds."""

from __future__ import annotations

import json
import pickle
from collections import OrderedDict
from types import MappingProxyType
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmadapters.types import (
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    Delta,
    FunctionCall,
    Message,
    ToolCall,
    Usage,
)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
FIELDS = ["id", "model", "created", "choices", "usage", "index", "delta", "message", "content", "role"]


def test_a_well_formed_chunk_and_reply() -> None:
    chunk = ChatCompletionChunk.from_dict(
        {"id": "c1", "created": 7, "choices": [{"index": 1, "delta": {"role": "assistant", "content": "hi"}}]},
        provider="p",
    )
    assert (chunk.id, chunk.created, chunk.provider) == ("c1", 7, "p")
    choice = chunk.choices[0]
    assert (choice.index, choice.delta.role, choice.delta.content) == (1, "assistant", "hi")
    reply = ChatCompletion.from_dict(
        {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}], "usage": {"total_tokens": 3}}
    )
    assert (reply.choices[0].message.content, reply.choices[0].finish_reason) == ("ok", "stop")
    assert reply.usage is not None
    assert reply.usage.total_tokens == 3


def test_replies_dump_as_the_sdk_s_models_do() -> None:
    """``model_dump()`` and ``model_dump_json()``, the openai SDK's names, give the JSON
    ``to_dict()`` gives, the provider's own fields included."""
    data = {
        "id": "x",
        "object": "chat.completion",
        "system_fingerprint": "fp",
        "choices": [{"message": {"content": "é"}}],
    }
    reply = ChatCompletion.from_dict(data)
    assert reply.model_dump() == reply.to_dict()
    assert reply.model_dump()["system_fingerprint"] == "fp"
    assert json.loads(reply.model_dump_json()) == reply.to_dict()
    assert '"é"' in reply.choices[0].message.model_dump_json(indent=2)


def test_values_of_the_wrong_type_become_none() -> None:
    chunk = ChatCompletionChunk.from_dict(
        {"id": 5, "model": ["m"], "created": True, "choices": [{"index": "0", "delta": {"content": 3}}, 7], "usage": 1}
    )
    assert (chunk.id, chunk.model, chunk.created, chunk.usage) == (None, None, None, None)
    assert len(chunk.choices) == 1  # the 7 is no choice
    assert (chunk.choices[0].index, chunk.choices[0].delta.content) == (0, None)
    reply = ChatCompletion.from_dict({"choices": "none", "created": 1.5})
    assert (reply.choices, reply.created) == ((), None)


def test_mappings_and_sequences_other_than_dict_and_list() -> None:
    delta: Any = MappingProxyType({"content": "x"})
    chunk = ChatCompletionChunk.from_dict({"choices": (OrderedDict(index=2, delta=delta),)})
    assert (chunk.choices[0].index, chunk.choices[0].delta.content) == (2, "x")


@given(st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=6), st.lists(JSON_VALUES, max_size=3))
def test_any_json_makes_a_value(data: dict[str, Any], choices: list[Any]) -> None:
    data.setdefault("choices", choices)
    chunk = ChatCompletionChunk.from_dict(data)
    reply = ChatCompletion.from_dict(data)
    assert chunk.raw is data
    assert reply.raw is data
    for value in (chunk.id, chunk.model, reply.id, reply.model):
        assert value is None or isinstance(value, str)
    for created in (chunk.created, reply.created):
        assert created is None or (isinstance(created, int) and not isinstance(created, bool))
    assert all(isinstance(c.index, int) for c in chunk.choices)
    assert all(isinstance(c.index, int) for c in reply.choices)


def test_a_value_from_json_is_the_one_its_constructor_makes_and_is_frozen() -> None:
    # from_dict builds values without attrs' __init__ (it is on every chunk's path).
    data = {
        "id": "c1",
        "model": "m",
        "created": 7,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "hi",
                    "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }
    reply = ChatCompletion.from_dict(data, provider="p")
    call = ToolCall(id="t", type="function", function=FunctionCall(name="f", arguments="{}"))
    message = Message(role="assistant", content="hi", tool_calls=(call,))
    made = ChatCompletion(
        id="c1",
        model="m",
        created=7,
        choices=(Choice(index=0, message=message, finish_reason="stop"),),
        usage=Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3),
        provider="p",
        raw=data,
    )
    assert reply == made
    assert hash(reply.choices[0].message) == hash(message)
    assert repr(reply) == repr(made)
    assert (reply.cost, reply.http, reply.choices[0].message.raw) == (None, None, data["choices"][0]["message"])
    chunk = ChatCompletionChunk.from_dict({"choices": [{"delta": {"content": "x"}}]})
    assert chunk == ChatCompletionChunk(choices=(ChunkChoice(delta=Delta(content="x")),), raw=chunk.raw)
    assert attrs.evolve(chunk, id="c2").id == "c2"
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        chunk.id = "c3"  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        reply.choices[0].message.content = "changed"  # type: ignore[misc]


def test_from_dict_makes_values_of_the_public_classes_that_pickle_and_stay_frozen() -> None:
    # from_dict fills a plain class with the same slots and then makes it the public one.
    data = {"id": "c1", "choices": [{"message": {"content": "hi", "tool_calls": [{"function": {"name": "f"}}]}}]}
    reply = ChatCompletion.from_dict({**data, "usage": {"total_tokens": 3}}, provider="p")
    message = reply.choices[0].message
    assert tuple(map(type, (reply, reply.choices[0], message, reply.usage))) == (ChatCompletion, Choice, Message, Usage)
    assert message.tool_calls is not None
    assert (type(message.tool_calls[0]), type(message.tool_calls[0].function)) == (ToolCall, FunctionCall)
    assert type(ChatCompletionChunk.from_dict({"choices": [{"delta": {"content": "x"}}]}).choices[0].delta) is Delta
    again = pickle.loads(pickle.dumps(reply))
    assert again == reply
    assert type(again.choices[0].message) is Message
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        reply.usage.total_tokens = 4  # type: ignore[misc, union-attr]
    assert not hasattr(message, "__dict__")


def test_from_dict_refuses_a_class_whose_slots_python_cannot_match() -> None:
    class Loose(Usage):  # a __dict__ and a __weakref__
        pass

    @attrs.frozen(kw_only=True, weakref_slot=False)
    class Counted(Usage):
        pass

    with pytest.raises(TypeError, match="weakref_slot=False"):
        Loose.from_dict({"total_tokens": 3})
    assert type(Counted.from_dict({"total_tokens": 3})) is Counted


def test_the_usual_chunk_a_piece_of_text_is_the_value_its_constructor_makes() -> None:
    # from_dict takes a shorter way for a chunk of one choice whose delta is text alone.
    data = {"choices": [{"index": 0, "delta": {"content": "w1 "}}]}
    chunk = ChatCompletionChunk.from_dict(data, provider="p")
    assert chunk == ChatCompletionChunk(
        choices=(ChunkChoice(index=0, delta=Delta(content="w1 ")),), provider="p", raw=data
    )
    assert chunk.choices[0].delta.raw is data["choices"][0]["delta"]
    assert ChatCompletionChunk.from_dict({"choices": [{"delta": {"content": 5}}]}).choices[0].delta.content is None
    two = ChatCompletionChunk.from_dict({"choices": [{"delta": {"content": "a"}}, {"index": 1, "delta": {}}]})
    assert [(c.index, c.delta.content) for c in two.choices] == [(0, "a"), (1, None)]
