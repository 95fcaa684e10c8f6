"""Streams: one that finished is not an error, one that broke after its first chunk is a
`StreamError` on every transport; sync streams close quietly."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import pytest

import llmadapters as la
from llmadapters.providers.base import ProviderSpec
from tests.conftest import answering, eventually, read_request, serving, test_registry

if TYPE_CHECKING:
    from llmadapters.middleware import Call, CallNext, Reply
    from llmadapters.testing import FakeServer

MakeClient = Callable[..., la.AsyncClient]
USAGE = {"stream_options": {"include_usage": True}}


async def _text(stream: la.ChatCompletionStream) -> tuple[str, la.Usage | None]:
    text, usage = "", None
    async for chunk in stream:
        text += "".join(choice.delta.content or "" for choice in chunk.choices)
        usage = chunk.usage or usage
    return text, usage


@pytest.mark.parametrize("params", [{}, USAGE], ids=["no-usage", "usage"])
async def test_a_stream_that_finished_without_done_is_complete(
    make_client: MakeClient, transport: str, params: dict[str, Any]
) -> None:
    client = make_client(transport)
    messages = [{"role": "user", "content": "all of it"}]
    stream = await client.chat.completions.create(model="local/echo+no-done", messages=messages, stream=True, **params)
    text, usage = await _text(stream)
    assert text == "all of it"
    assert (usage is not None) == bool(params)


async def test_a_stream_cut_before_its_finish_reason_is_an_error(make_client: MakeClient, transport: str) -> None:
    client = make_client(transport)
    stream = await client.chat.completions.create(
        model="local/echo+truncate", messages=[{"role": "user", "content": "cut"}], stream=True, **USAGE
    )
    with pytest.raises(la.StreamError, match=r"ended before \[DONE\]") as caught:
        await _text(stream)
    assert caught.value.ended_early


_CHUNK = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1_700_000_000,
    "model": "m",
    "choices": [{"index": 0, "delta": {"content": "half"}, "finish_reason": None}],
}


@contextlib.asynccontextmanager
async def _breaking_server(how: str, release: asyncio.Event) -> AsyncIterator[str]:
    """A loopback server that answers a stream with one chunk, then, once ``release`` is
    set, breaks the body: a chunk cut short by the end of the connection, or a TCP reset.
    (aiohttp's C parser waits, until the read timeout, on a chunk size that is not hex.)"""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        event = b"data: " + json.dumps(_CHUNK).encode() + b"\n\n"
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
        await release.wait()
        if how == "reset":
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        writer.write(b"ff\r\ndata: {")
        await writer.drain()
        writer.close()

    async with serving(answer) as base_url:
        yield base_url


def _chunk(content: str, finish_reason: str | None) -> dict[str, Any]:
    return {**_CHUNK, "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish_reason}]}


@pytest.mark.parametrize("ends", ["stop", None], ids=["finished", "cut"])
async def test_an_empty_finish_reason_is_no_finish(make_client: MakeClient, transport: str, ends: str | None) -> None:
    """Some servers (sglang, GLM routes) send ``"finish_reason": ""`` on every chunk but
    the last: a stream that ends without [DONE] after such chunks only was cut."""
    events = [_chunk("The answer ", ""), _chunk("is ", "")]
    if ends is not None:
        events.append(_chunk("42.", ends))
    body = b"".join(b"data: " + json.dumps(event).encode() + b"\n\n" for event in events)  # no [DONE]
    async with answering(200, "text/event-stream", body) as base_url:
        client = make_client(transport, base_url=base_url)
        stream = await client.chat.completions.create(
            model="local/m", messages=[{"role": "user", "content": "x"}], stream=True
        )
        if ends is None:
            with pytest.raises(la.StreamError, match=r"ended before \[DONE\]"):
                await _text(stream)
        else:
            assert (await stream.get_final_completion()).choices[0].message.content == "The answer is 42."


@pytest.mark.parametrize("how", ["chunk-cut-short", "reset"])
async def test_a_stream_that_breaks_after_its_first_chunk_is_a_stream_error(
    make_client: MakeClient, transport: str, how: str
) -> None:
    release = asyncio.Event()
    async with _breaking_server(how, release) as base_url:
        client = make_client(transport, base_url=base_url)
        stream = await client.chat.completions.create(
            model="local/m", messages=[{"role": "user", "content": "x"}], stream=True
        )
        first = await stream.__anext__()
        assert first.choices[0].delta.content == "half"
        release.set()
        with pytest.raises(la.StreamError, match=r"^stream from local broke after its first chunk: ") as caught:
            await stream.__anext__()
        await stream.aclose()
    # The transport's own error, worded as every transport words it, is the cause.
    assert isinstance(caught.value.__cause__, la.TransportError)
    assert str(caught.value).endswith(str(caught.value.__cause__))
    assert not caught.value.ended_early


def _no_usage(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key != "usage"}


async def test_a_stream_without_the_usage_it_was_asked_for_is_an_error(fake_server: FakeServer) -> None:
    registry = test_registry()
    registry.add_providers([ProviderSpec(name="nousage", key_required=False, normalize=_no_usage)])
    providers = {"nousage": {"base_url": fake_server.base_url}}
    async with la.AsyncClient({}, providers=providers, middleware=[], registry=registry) as client:
        messages = [{"role": "user", "content": "x"}]
        stream = await client.chat.completions.create(model="nousage/echo+no-done", messages=messages, stream=True)
        assert (await _text(stream))[0] == "x"  # no usage asked for: complete
        stream = await client.chat.completions.create(
            model="nousage/echo+no-done", messages=messages, stream=True, **USAGE
        )
        with pytest.raises(la.StreamError, match=r"ended before \[DONE\]"):
            await _text(stream)


_ABANDONED = """
import gc
import llmadapters as la

messages = [{"role": "user", "content": "one two three four"}]
with la.Client({}) as client:
    for model in ("fake/echo", "fake/echo+reasoning"):  # closed with the client
        stream = client.chat.completions.create(model=model, messages=messages, stream=True)
        for chunk in stream:
            break
    dropped = client.chat.completions.create(model="fake/echo", messages=messages, stream=True)
    next(dropped)
    del dropped  # closed when collected
    gc.collect()
    for result in client.batch([{"model": "fake/echo", "messages": messages}] * 3):
        break
    print(client.chat.completions.create(model="fake/echo", messages=messages).choices[0].message.content)
"""


def test_sync_streams_left_early_close_without_noise() -> None:
    done = subprocess.run([sys.executable, "-c", _ABANDONED], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, "one two three four\n", "")


async def test_on_end_tells_each_observer_how_its_stream_ended(make_client: MakeClient) -> None:
    """Read to its end (with its usage and cost), closed early, dropped unread, observed
    after its end, and a failing observer, which does not keep the others from theirs."""
    ends: list[la.StreamEnd] = []

    async def observe(call: Call, call_next: CallNext) -> Reply:
        reply = await call_next(call)
        if isinstance(reply, la.ChatCompletionStream):
            reply.on_end(ends.append)
        return reply

    prices = {"echo": {"input": 1.0, "output": 2.0}}
    client = make_client(middleware=[observe, observe], prices=prices)  # two observers of one stream
    messages = [{"role": "user", "content": "one two"}]

    async def stream() -> la.ChatCompletionStream:
        return await client.chat.completions.create(model="local/echo", messages=messages, stream=True, **USAGE)

    read = await stream()
    assert ends == []
    last = [chunk async for chunk in read][-1]
    assert len(ends) == 2
    assert ends[0] is ends[1]
    assert ends[0] == la.StreamEnd(complete=True, error=None, usage=last.usage, cost=last.cost)
    assert last.usage is not None
    assert last.usage.total_tokens
    assert last.cost is not None
    assert last.cost.amount > 0
    late: list[la.StreamEnd] = []
    read.on_end(late.append)  # after its end: at once
    assert late == [ends[0]]

    ends.clear()
    closed = await stream()
    await closed.__anext__()
    await closed.aclose()
    assert ends == [la.StreamEnd(complete=False)] * 2

    ends.clear()
    dropped = await stream()
    del dropped  # never read nor closed: closed on the loop once it is collected, then told
    gc.collect()
    await eventually(lambda: len(ends) == 2, "told")
    assert ends == [la.StreamEnd(complete=False)] * 2

    failing = await stream()
    told: list[la.StreamEnd] = []

    def fail(end: la.StreamEnd) -> None:
        raise ValueError("observer bug")

    failing.on_end(fail)
    failing.on_end(told.append)
    with pytest.raises(ValueError, match="observer bug"):
        await _text(failing)
    assert len(told) == 1
    assert told[0].complete


async def test_on_end_tells_the_error_of_a_stream_that_broke(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The stream's own error goes on when an observer fails as it breaks; an aclose
    from another task while one reads it raises and does not end it early."""
    ends: list[la.StreamEnd] = []

    def fail(end: la.StreamEnd) -> None:
        raise ValueError("observer bug")

    release = asyncio.Event()
    async with _breaking_server("reset", release) as base_url:
        client = make_client(base_url=base_url)
        stream = await client.chat.completions.create(
            model="local/m", messages=[{"role": "user", "content": "x"}], stream=True
        )
        stream.on_end(fail)
        stream.on_end(ends.append)
        await stream.__anext__()
        reading = asyncio.ensure_future(stream.__anext__())
        await eventually(lambda: getattr(stream._chunks, "ag_running", False), "reading")
        with pytest.raises(RuntimeError, match="already running"):
            await stream.aclose()
        assert ends == []  # still being read
        release.set()
        with pytest.raises(la.StreamError) as caught:
            await reading
        await stream.aclose()
    assert ends == [la.StreamEnd(complete=False, error=caught.value)]
    assert "an on_end callback raised as the stream broke" in caplog.text
    late: list[la.StreamEnd] = []
    stream.on_end(late.append)  # the stream keeps its end, not its error
    assert late == [la.StreamEnd(complete=False)]


async def test_the_final_completion_of_a_stream_closed_before_its_end_is_an_error(make_client: MakeClient) -> None:
    """What was read is not the whole reply: no partial answer passed off as whole."""
    stream = await make_client().chat.completions.create(
        model="local/echo", messages=[{"role": "user", "content": "one two three four"}], stream=True
    )
    async with stream:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
    with pytest.raises(la.StreamError, match="closed before its end"):
        await stream.get_final_completion()
