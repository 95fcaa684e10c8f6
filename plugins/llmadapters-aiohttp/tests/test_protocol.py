"""The transport's connection protocol (`llmadapters_aiohttp.protocol`). Its reads, into
one buffer: a reply many times the buffer's size arrives whole, streamed or not. Its
read timeout, kept by one timer per connection: it bounds each read, not the whole
response; a connection's timer left from its last response times nothing out; a later
call's shorter timeout applies; a closed connection leaves no timer behind. Each
against the fake server on loopback."""

from __future__ import annotations

import asyncio
import functools
import gc
from typing import Any

import aiohttp
import pytest
from aiohttp.client_proto import ResponseHandler
from llmadapters_aiohttp import FEATURES, aiohttp_transport
from llmadapters_aiohttp.protocol import READ_SIZE, LeanResponseHandler, use_lean_protocol

import llmadapters as la
from llmadapters.plugins import Registry
from llmadapters.testing import FakeServer

MESSAGES = [{"role": "user", "content": "one two three four five six seven eight"}]


def _client(server: FakeServer, **provider: Any) -> la.AsyncClient:
    registry = Registry.builtin()
    registry.add_transport("aiohttp", aiohttp_transport, supports=FEATURES)
    providers = {"local": {"base_url": server.base_url, "max_connections": 1, **provider}}
    return la.AsyncClient({}, transport="aiohttp", providers=providers, registry=registry, middleware=[])


def _protocols() -> list[LeanResponseHandler]:
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, LeanResponseHandler)]


async def test_the_installed_aiohttp_builds_the_lean_protocol() -> None:
    # Fails when an aiohttp upgrade builds its protocols otherwise (the transport then
    # keeps aiohttp's own protocol: correct, slower), so that it is seen.
    connector = aiohttp.TCPConnector()
    try:
        assert use_lean_protocol(connector)
        assert type(connector._factory()) is LeanResponseHandler
    finally:
        await connector.close()


async def test_a_connector_that_builds_another_protocol_is_left_alone() -> None:
    connector = aiohttp.TCPConnector()
    other = functools.partial(lambda: ResponseHandler(asyncio.get_running_loop()))
    connector._factory = other
    try:
        assert not use_lean_protocol(connector)
        assert connector._factory is other
    finally:
        await connector.close()


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_a_reply_many_times_the_read_buffer_arrives_whole(stream: bool) -> None:
    words = " ".join(f"w{i:06d}" for i in range(5 * READ_SIZE // 8))  # 5 buffers' worth
    async with FakeServer() as server, _client(server, timeout={"read": 10}) as client:  # (a lost read fails)
        reply = await client.chat.completions.create(
            model="local/echo", messages=[{"role": "user", "content": words}], stream=stream
        )
        if isinstance(reply, la.ChatCompletionStream):
            text = "".join([chunk.choices[0].delta.content or "" async for chunk in reply])
        else:
            text = reply.choices[0].message.content or ""
    assert text == words


async def test_a_stream_longer_than_the_read_timeout_completes_when_each_read_is_quick() -> None:
    # 8 words at 10 a second: 0.8 s in all, reads 0.1 s apart, under a 0.5 s timeout.
    async with FakeServer() as server, _client(server, timeout={"read": 0.5}, headers={"x-fake-tps": "10"}) as client:
        stream = await client.chat.completions.create(model="local/echo", messages=MESSAGES, stream=True)
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
    assert text == MESSAGES[0]["content"]


async def test_an_idle_connection_reused_after_its_last_deadline_is_not_timed_out() -> None:
    async with FakeServer() as server, _client(server, timeout={"read": 0.3}) as client:
        first = await client.chat.completions.create(model="local/echo", messages=MESSAGES)
        await asyncio.sleep(0.6)  # the first response's deadline passes while idle
        second = await client.chat.completions.create(
            model="local/echo", messages=MESSAGES, extra_headers={"x-fake-ttft-ms": "150"}
        )
        assert server.connections_opened == 1  # the same connection, with its timer
    assert first.choices[0].message.content == second.choices[0].message.content


async def test_a_later_call_with_a_shorter_read_timeout_times_out_at_it() -> None:
    async with FakeServer() as server, _client(server, timeout={"read": 60}) as client:
        await client.chat.completions.create(model="local/echo", messages=MESSAGES)  # a timer 60 s out
        stalled = client.chat.completions.create(
            model="local/stall", messages=MESSAGES, timeout={"read": 0.2}, extra_headers={"x-fake-stall-s": "30"}
        )
        with pytest.raises(la.APITimeoutError, match="read"):
            await asyncio.wait_for(stalled, 15)  # (the 60 s timer would outlast this)


async def test_a_closed_client_leaves_no_protocol_held_by_a_timer() -> None:
    before = len(_protocols())
    async with FakeServer() as server, _client(server, timeout={"read": 600}) as client:
        await client.chat.completions.create(model="local/echo", messages=MESSAGES)
        assert len(_protocols()) == before + 1
    await asyncio.sleep(0)  # connection_lost comes in the loop's next round
    assert len(_protocols()) == before
