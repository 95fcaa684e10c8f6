"""The transport kernel decodes a reply's JSON exactly as ``json.loads`` does, whichever
way the text comes (it calls the JSON scanner directly on the common path), and a
stream's events in order, up to an error or ``[DONE]``, however many arrive in one read."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmadapters.errors import MalformedResponseError, StreamError
from llmadapters.policies import Timeouts
from llmadapters.transports._kernel import decode_json_body, decode_sse_json, stream_reply
from llmadapters.transports.base import Endpoint

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@given(
    st.dictionaries(st.text(max_size=5), VALUES, max_size=4),
    st.sampled_from(["", " ", "\n\n", "\r\n "]),
    st.sampled_from(["", " ", "\n"]),
    st.booleans(),
)
def test_a_body_decodes_as_json_loads_decodes_it(value: dict[str, Any], before: str, after: str, ascii: bool) -> None:
    text = before + json.dumps(value, ensure_ascii=ascii) + after
    assert decode_json_body(text.encode()) == json.loads(text) == value
    assert decode_json_body(b"\xef\xbb\xbf" + text.encode()) == value  # json.loads takes a UTF-8 BOM in bytes
    assert decode_json_body(text.encode("utf-16")) == value


@pytest.mark.parametrize(
    "body", [b'{"a": 1} x', b'{"a": ', b"", b"\xff{}", b"[1]", b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}"]
)
def test_a_body_that_is_not_one_json_object_raises(body: bytes) -> None:
    with pytest.raises(MalformedResponseError, match=r"not JSON|not a JSON object"):
        decode_json_body(body)


async def _reads(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.mark.parametrize(
    ("bad", "message"),
    [(b"data: nope\n\n", "not JSON"), (b"data: [1]\n\n", "not a JSON object"), (b'data: {"error": "x"}\n\n', "error")],
)
async def test_the_events_before_a_bad_one_in_the_same_read_come_first(bad: bytes, message: str) -> None:
    body = b'data: {"n": 1}\n\ndata: {"n": 2}\n\n' + bad + b'data: {"n": 3}\n\n'
    seen: list[object] = []
    with pytest.raises(StreamError, match=message):
        await _collect(decode_sse_json(_reads(body)), seen)
    assert seen == [{"n": 1}, {"n": 2}]
    endpoint = Endpoint(base_url="http://127.0.0.1:9", provider="p")
    seen.clear()
    with pytest.raises(StreamError, match=message):
        await _collect(stream_reply(200, {}, _reads(b'data: {"n": 0}\n\n', body), endpoint), seen)
    assert seen[1:] == [{"n": 0}, {"n": 1}, {"n": 2}]


async def _collect(items: AsyncIterator[object], into: list[object]) -> None:
    async for item in items:
        into.append(item)


async def test_events_after_done_in_the_same_read_are_not_read() -> None:
    body = b'data: {"n": 1}\n\ndata: [DONE]\n\ndata: nope\n\n'
    assert [event async for event in decode_sse_json(_reads(body))] == [{"n": 1}]


def test_an_endpoint_with_headers_keeps_every_other_field() -> None:
    endpoint = Endpoint(
        base_url="http://127.0.0.1:9/v1",
        path="/embeddings",
        headers={"a": "1", "b": "1"},
        query={"api-version": "2"},
        timeouts=Timeouts(connect=1.0),
        provider="p",
    )
    extended = endpoint.with_headers({"b": "2", "c": "3"})
    assert extended.headers == {"a": "1", "b": "2", "c": "3"}
    assert endpoint.headers == {"a": "1", "b": "1"}
    for field in attrs.fields(Endpoint):
        if field.name != "headers":
            assert getattr(extended, field.name) == getattr(endpoint, field.name), field.name
