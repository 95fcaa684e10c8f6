"""A streamed reply made whole: `accumulate` and ``stream.get_final_completion()`` give
the `ChatCompletion` the same answer has unstreamed, however the stream split it."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import llmadapters as la

MakeClient = Callable[..., la.AsyncClient]
TOOLS = [
    {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}},
]
BASE = {"id": "chatcmpl-1", "created": 1, "model": "m", "system_fingerprint": "fp"}


@st.composite
def pieces(draw: st.DrawFn, text: str) -> list[str]:
    """``text`` cut at random places (empty pieces included, as servers send)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=6)))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def transcripts(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A unary reply, and a stream of the same answer: role first, then reasoning,
    content and tool calls in random pieces, then the finish_reason and usage. Tool
    calls carry their index, or none (as Ollama sent them), or all index 0, each with its
    own id (as Ollama 0.20 sends parallel calls)."""
    content = draw(st.none() | st.text(max_size=20))
    reasoning = draw(st.none() | st.text(min_size=1, max_size=20))
    calls = [
        {"id": f"call_{i}", "type": "function", "function": {"name": f"f{i}", "arguments": json.dumps({"q": q})}}
        for i, q in enumerate(draw(st.lists(st.text(max_size=8), max_size=3)))
    ]
    if content is None and not calls:
        content = ""
    indexing = draw(st.sampled_from(["own", "none", "zero"]))
    finish = "tool_calls" if calls else draw(st.sampled_from(["stop", "length"]))
    usage = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8, "prompt_cache_hit_tokens": 1}
    message: dict[str, Any] = {"role": "assistant", "content": content or (None if calls else content)}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = calls
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    unary = {**BASE, "object": "chat.completion", "choices": [choice], "usage": usage}

    opening = draw(st.sampled_from(["", None])) if calls else ""  # streams open with either
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": opening}]
    deltas += [{"reasoning_content": p} for p in (draw(pieces(reasoning)) if reasoning else ())]
    deltas += [{"content": p} for p in (draw(pieces(content)) if content else ())]
    for i, call in enumerate(calls):
        head = {"id": call["id"], "type": "function", "function": {"name": call["function"]["name"], "arguments": ""}}
        rest = draw(pieces(call["function"]["arguments"]))
        if indexing != "none":
            index = i if indexing == "own" else 0
            deltas.append({"tool_calls": [{"index": index, **head}]})
            deltas += [{"tool_calls": [{"index": index, "function": {"arguments": p}}]} for p in rest]
        else:  # no index: the first piece has the id, the rest continue it
            deltas.append({"tool_calls": [head]})
            deltas += [{"tool_calls": [{"function": {"arguments": p}}]} for p in rest]
    chunks = [
        {**BASE, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": d, "logprobs": None}]}
        for d in deltas
    ]
    chunks.append({**BASE, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}]})
    chunks.append({**BASE, "choices": [], "usage": usage})
    return unary, chunks


@settings(max_examples=60, deadline=None)
@given(transcripts())
def test_accumulation_equals_the_unary_reply_for_any_split(transcript: tuple[dict[str, Any], list[Any]]) -> None:
    unary, chunks = transcript
    values = [la.ChatCompletionChunk.from_dict(json.loads(json.dumps(c)), provider="p") for c in chunks]
    expected = la.ChatCompletion.from_dict(unary, provider="p")
    assert la.accumulate(values) == expected
    assert la.accumulate(chunks).to_dict() == unary  # from the JSON too


def test_tool_calls_sent_whole_without_index_or_id() -> None:
    whole = [
        {"function": {"name": "a", "arguments": '{"x": 1}'}},
        {"id": "call_b", "function": {"name": "b", "arguments": "{}"}},
        {"id": "call_c", "function": {"name": "c", "arguments": "{"}},
        {"function": {"arguments": "}"}},
    ]
    chunks = [{"choices": [{"delta": {"tool_calls": [call]}}]} for call in whole]
    chunks.append({"choices": [{"delta": {}, "finish_reason": "tool_calls"}]})
    message = la.accumulate(chunks).choices[0].message
    assert message.tool_calls is not None
    calls = [(c.id, c.type, c.function.name if c.function else None) for c in message.tool_calls]
    assert calls == [(None, "function", "a"), ("call_b", "function", "b"), ("call_c", "function", "c")]
    assert [c.function.arguments for c in message.tool_calls if c.function] == ['{"x": 1}', "{}", "{}"]
    assert (message.role, message.content) == ("assistant", None)


def test_identifiers_repeated_in_every_piece_are_not_doubled() -> None:
    pieces = [
        {"role": "assistant", "content": "He", "tool_calls": [{"index": 0, "id": "c", "function": {"name": "f"}}]},
        {"role": "assistant", "content": "llo", "tool_calls": [{"index": 0, "id": "c", "function": {"name": "f"}}]},
    ]
    message = la.accumulate([{"choices": [{"delta": d}]} for d in pieces]).choices[0].message
    assert (message.role, message.content) == ("assistant", "Hello")
    assert message.tool_calls == (la.ToolCall(id="c", type="function", function=la.FunctionCall(name="f")),)


async def test_get_final_completion_equals_the_unary_reply_on_every_transport(
    make_client: MakeClient, transport: str
) -> None:
    client = make_client(transport)
    for model, tools in (("local/echo+reasoning", None), ("local/echo", TOOLS)):
        params: dict[str, Any] = {"tools": tools} if tools else {}
        messages = [{"role": "user", "content": "three little words"}]
        unary = await client.chat.completions.create(model=model, messages=messages, **params)
        stream = await client.chat.completions.create(
            model=model, messages=messages, stream=True, stream_options={"include_usage": True}, **params
        )
        first = await stream.__anext__()  # chunks already read count too
        assert first.choices
        final = await stream.get_final_completion()
        assert (final.choices, final.usage, final.provider) == (unary.choices, unary.usage, "local")
        assert final.choices[0].message.to_dict() == unary.raw["choices"][0]["message"]


def test_the_sync_stream_has_it_too() -> None:
    with la.Client({}) as client:
        stream = client.chat.completions.create(
            model="fake/echo", messages=[{"role": "user", "content": "sync words"}], stream=True
        )
        assert next(stream).choices
        final = stream.get_final_completion()
    assert (final.choices[0].message.content, final.choices[0].finish_reason) == ("sync words", "stop")
