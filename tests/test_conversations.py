"""Conversations: a reply's message goes back into ``messages`` as it is, on every
transport, carrying everything the provider sent; what cannot be sent is refused before
anything is."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import attrs
import pytest

import llmadapters as la
from llmadapters.types import ChatCompletion, ChatCompletionChunk, wire_messages

if TYPE_CHECKING:
    from llmadapters.testing import FakeServer

MakeClient = Callable[..., la.AsyncClient]

WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"input": {}}}},
}


async def test_the_returned_message_is_appended_and_sent_back_whole(
    make_client: MakeClient, fake_server: FakeServer, transport: str
) -> None:
    client = make_client(transport)
    messages: list[Any] = [{"role": "user", "content": "Paris"}]
    reply = await client.chat.completions.create(model="local/echo+reasoning", messages=messages, tools=[WEATHER])
    message = reply.choices[0].message
    assert message.tool_calls is not None
    messages.append(message)
    messages.append({"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "sunny"})
    messages.append({"role": "user", "content": "and tomorrow?"})
    again = await client.chat.completions.create(model="local/echo", messages=messages)
    assert again.choices[0].message.content == "and tomorrow?"
    sent = fake_server.seen_bodies[-1]["messages"][1]
    assert sent == reply.raw["choices"][0]["message"]  # as the provider sent it: null content, reasoning, tool calls
    assert sent["reasoning_content"] == "Thinking about: Paris"
    assert sent["content"] is None
    assert json.loads(sent["tool_calls"][0]["function"]["arguments"]) == {"input": "Paris"}


def test_the_sync_client_takes_its_own_messages_too() -> None:
    messages: list[Any] = [{"role": "user", "content": "one"}]
    with la.Client({}) as client:
        first = client.chat.completions.create(model="fake/echo", messages=messages)
        messages += [first.choices[0].message, {"role": "user", "content": "two"}]
        second = client.chat.completions.create(model="fake/echo", messages=messages)
    assert second.choices[0].message.content == "two"


def test_to_dict_gives_back_everything_the_provider_sent() -> None:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "system_fingerprint": "fp_1",
        "choices": [
            {
                "index": 0,
                "logprobs": None,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "hm",
                    "annotations": [],
                    "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}, "x": 1}
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5, "prompt_cache_hit_tokens": 1},
    }
    reply = ChatCompletion.from_dict(json.loads(json.dumps(body)))
    assert reply.to_dict() == body
    assert reply.choices[0].message.to_dict() == body["choices"][0]["message"]  # type: ignore[index]
    assert reply.usage is not None
    assert reply.usage.to_dict()["prompt_cache_hit_tokens"] == 1
    chunk = {"id": "c", "choices": [{"index": 0, "delta": {"content": "x", "extra": True}, "finish_reason": None}]}
    assert ChatCompletionChunk.from_dict(json.loads(json.dumps(chunk))).to_dict() == chunk


def test_a_value_made_in_code_and_a_changed_one() -> None:
    call = la.ToolCall(id="c1", type="function", function=la.FunctionCall(name="f", arguments="{}"))
    message = la.Message(role="assistant", tool_calls=(call,))
    assert message.to_dict() == {
        "role": "assistant",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    parsed = la.Message.from_dict({"role": "assistant", "content": "old", "reasoning_content": "r"})
    assert attrs.evolve(parsed, content="new").to_dict() == {
        "role": "assistant",
        "content": "new",
        "reasoning_content": "r",
    }


@pytest.mark.parametrize(
    ("messages", "where"),
    [
        ([{"role": "user", "content": "hi"}, object()], r"messages\[1\]: a object is not a message"),
        ([{"role": "user", "content": [{"type": "text", "text": {1}}]}], r"messages\[0\]\['content'\]\[0\]\['text'\]"),
        ([{"role": "user", "content": ["hi"], (3,): "x"}], r"messages\[0\]: the key \(3,\) cannot be"),
        (["hi"], r"messages\[0\]: a str is not a message"),
    ],
)
async def test_what_cannot_be_sent_is_a_type_error_naming_the_message_and_nothing_is_sent(
    make_client: MakeClient, fake_server: FakeServer, messages: list[Any], where: str
) -> None:
    client = make_client()
    with pytest.raises(TypeError, match=where):
        await client.chat.completions.create(model="local/echo", messages=messages)
    with pytest.raises(TypeError, match=r"parameter 'tools'\[0\]: an object of type bytes"):
        await client.chat.completions.create(model="local/echo", messages=[{"role": "user"}], tools=[b"x"])
    assert fake_server.requests_served == 0


def test_wire_messages_takes_mappings_tuples_and_objects_with_to_dict() -> None:
    class SDKModel:  # the openai SDK's models have to_dict()
        def to_dict(self) -> dict[str, Any]:
            return {"role": "assistant", "content": "from the SDK"}

    wired = wire_messages([MappingProxyType({"role": "user", "content": ("a", "b")}), SDKModel()])
    assert wired == ({"role": "user", "content": ["a", "b"]}, {"role": "assistant", "content": "from the SDK"})
    plain = {"role": "user", "content": "hi"}
    assert wire_messages([plain])[0] is plain


PROFILES = (
    "echo",
    "echo+deepseek-thinking",
    "echo+qwen-thinking",
    "echo+zhipu-thinking",
    "echo+moonshot-thinking",
    "echo+mimo-thinking",
)


@pytest.mark.parametrize("profile", PROFILES)
async def test_a_streamed_tool_loop_of_three_turns_on_every_profile(
    make_client: MakeClient, fake_server: FakeServer, transport: str, profile: str
) -> None:
    client = make_client(transport)
    messages: list[Any] = []
    for turn in ("one", "two", "three"):
        messages.append({"role": "user", "content": turn})
        stream = await client.chat.completions.create(
            model=f"local/{profile}", messages=messages, tools=[WEATHER], stream=True
        )
        call = (await stream.get_final_completion()).choices[0].message
        assert call.tool_calls is not None
        assert json.loads(call.tool_calls[0].function.arguments or "") == {"input": turn}  # type: ignore[union-attr]
        messages += [call, {"role": "tool", "tool_call_id": call.tool_calls[0].id, "content": f"done {turn}"}]
        stream = await client.chat.completions.create(
            model=f"local/{profile}", messages=messages, tools=[WEATHER], stream=True
        )
        answer = (await stream.get_final_completion()).choices[0].message
        assert (answer.content, answer.tool_calls) == (turn, None)
        messages.append(answer)
    assert fake_server.requests_served == 6
    thinking = profile != "echo"
    sent = [m for m in fake_server.seen_bodies[-1]["messages"] if m["role"] == "assistant"]
    assert len(sent) == 5  # the last answer is not sent
    assert all(("reasoning_content" in m) == thinking for m in sent)


@pytest.mark.parametrize(
    ("profile", "refusal"),
    [
        ("deepseek-thinking", r"reasoning_content in the thinking mode must be passed back.*index 1"),
        ("moonshot-thinking", r"reasoning_content is missing in assistant tool call message at index 1"),
        ("mimo-thinking", r"reasoning_content must be fully passed back.*index 1"),
    ],
)
async def test_thinking_profiles_refuse_a_tool_loop_that_drops_the_reasoning(
    make_client: MakeClient, fake_server: FakeServer, profile: str, refusal: str
) -> None:
    client = make_client()
    messages: list[Any] = [{"role": "user", "content": "Paris"}]
    reply = await client.chat.completions.create(model=f"local/{profile}", messages=messages, tools=[WEATHER])
    message = reply.choices[0].message
    assert message.tool_calls is not None
    assert message.reasoning_content
    result = {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "sunny"}
    # What hand-written code often sends back: the content and tool calls, not the reasoning.
    dropped = {"role": "assistant", "content": None, "tool_calls": [c.to_dict() for c in message.tool_calls]}
    with pytest.raises(la.BadRequestError, match=refusal):
        await client.chat.completions.create(model=f"local/{profile}", messages=[*messages, dropped, result])
    # Appending the returned message carries it back.
    again = await client.chat.completions.create(
        model=f"local/{profile}", messages=[*messages, message, result], tools=[WEATHER]
    )
    assert again.choices[0].message.content
    off = await client.chat.completions.create(
        model=f"local/{profile}", messages=[*messages, dropped, result], thinking={"type": "disabled"}
    )
    assert off.choices[0].message.reasoning_content is None
