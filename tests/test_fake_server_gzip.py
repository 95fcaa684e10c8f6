"""The fake server's gzip behaviour: the same reply, compressed when the request accepts
gzip, a stream flushed event by event (the client reads each event as it comes)."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from collections.abc import Mapping

    from llmadapters.testing import FakeServer

_BODY: dict[str, object] = {"model": "echo", "messages": [{"role": "user", "content": "squeeze me"}]}


async def _raw(server: FakeServer, body: Mapping[str, object], headers: dict[str, str]) -> tuple[httpx.Headers, bytes]:
    """The response headers and the bytes on the wire (not decoded)."""
    async with httpx.AsyncClient(trust_env=False) as client:
        request = client.build_request("POST", f"{server.base_url}/chat/completions", json=body, headers=headers)
        response = await client.send(request, stream=True)
        try:
            return response.headers, b"".join([chunk async for chunk in response.aiter_raw()])
        finally:
            await response.aclose()


@pytest.mark.parametrize("how", ["model", "header"])
async def test_a_unary_reply_is_gzipped_when_asked_and_accepted(fake_server: FakeServer, how: str) -> None:
    accept = {"accept-encoding": "gzip, deflate"}
    _, plain = await _raw(fake_server, _BODY, accept)
    if how == "model":
        headers, wire = await _raw(fake_server, {**_BODY, "model": "echo+gzip"}, accept)
    else:
        headers, wire = await _raw(fake_server, _BODY, {**accept, "x-fake-behaviour": "gzip"})
    assert headers["content-encoding"] == "gzip"
    assert int(headers["content-length"]) == len(wire)
    reply = json.loads(gzip.decompress(wire))
    assert reply["choices"] == json.loads(plain)["choices"]
    assert reply["choices"][0]["message"]["content"] == "squeeze me"
    if how == "header":  # the same request body: the same reply, byte for byte
        assert gzip.decompress(wire) == plain


async def test_nothing_is_gzipped_for_a_request_that_does_not_accept_gzip(fake_server: FakeServer) -> None:
    _, plain = await _raw(fake_server, _BODY, {"accept-encoding": "identity"})
    headers, wire = await _raw(fake_server, _BODY, {"accept-encoding": "br;q=1, identity", "x-fake-behaviour": "gzip"})
    assert "content-encoding" not in headers
    assert wire == plain


async def test_a_stream_is_gzipped_whole(fake_server: FakeServer) -> None:
    body = {**_BODY, "stream": True}
    _, plain = await _raw(fake_server, body, {"accept-encoding": "identity"})
    headers, wire = await _raw(fake_server, body, {"accept-encoding": "gzip", "x-fake-behaviour": "gzip"})
    assert headers["content-encoding"] == "gzip"
    assert gzip.decompress(wire) == plain
    assert plain.endswith(b"data: [DONE]\n\n")


async def test_a_gzipped_stream_is_flushed_event_by_event(fake_server: FakeServer) -> None:
    """The first event inflates while the server is still silent after it (a stall
    that ends only with a reset): it was not held back in the compressor."""
    body = {**_BODY, "model": "echo+gzip+stall-mid-stream", "stream": True}
    async with httpx.AsyncClient(trust_env=False) as client:
        headers = {"accept-encoding": "gzip", "x-fake-stall-s": "30"}
        request = client.build_request("POST", f"{fake_server.base_url}/chat/completions", json=body, headers=headers)
        response = await client.send(request, stream=True)
        try:
            assert response.headers["content-encoding"] == "gzip"
            inflate = zlib.decompressobj(wbits=31)
            text = b""
            async for chunk in response.aiter_raw():
                text += inflate.decompress(chunk)
                if text.endswith(b"\n\n"):
                    break
        finally:
            await response.aclose()
    assert text.startswith(b"data: {"), text
    assert json.loads(text.removeprefix(b"data: "))["choices"][0]["delta"] == {"role": "assistant", "content": ""}
