"""The incremental SSE decoder (`llmadapters.sse`) and `decode_sse_json`.

Every test asserts the exact list of events. `ServerSentEvent` is a NamedTuple, so
``E("x")`` is ``ServerSentEvent(data="x", event="message", id=None, retry=None)``.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmadapters.errors import StreamError
from llmadapters.sse import ServerSentEvent as E
from llmadapters.sse import SSEDecoder
from llmadapters.transports.base import decode_sse_json

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

BOM = b"\xef\xbb\xbf"


def feed_all(chunks: Iterable[bytes], decoder: SSEDecoder | None = None) -> list[E]:
    decoder = decoder or SSEDecoder()
    events: list[E] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    return events


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def decode_whole(data: bytes) -> list[E]:
    return feed_all([data])


# --------------------------------------------------------------------------- line ends


@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"], ids=["LF", "CR", "CRLF"])
def test_line_ends(eol: bytes) -> None:
    stream = b"event: a" + eol + b"data: 1" + eol + b"data: 2" + eol + eol + b"data: 3" + eol + eol
    expected = [E("1\n2", "a"), E("3")]
    assert decode_whole(stream) == expected
    assert feed_all(bytewise(stream)) == expected


def test_mixed_line_ends() -> None:
    stream = b"data: a\r\ndata: b\rdata: c\n\r\ndata: 1\r\rdata: 2\n\ndata: 3\r\n\r\n"
    expected = [E("a\nb\nc"), E("1"), E("2"), E("3")]
    assert decode_whole(stream) == expected
    assert feed_all(bytewise(stream)) == expected


def test_crlf_split_across_feeds() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    # The first LF completes the CRLF; only the second one is a blank line.
    assert decoder.feed(b"\n\n") == [E("a")]
    assert not decoder.pending


def test_crlf_split_lf_alone_is_not_a_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n") == []
    assert decoder.pending
    assert decoder.feed(b"\r\n") == [E("a")]


def test_crlf_split_does_not_reset_event_name() -> None:
    # Were the LF taken for a blank line, it would reset the event name to "message".
    decoder = SSEDecoder()
    assert decoder.feed(b"event: x\r") == []
    assert decoder.feed(b"\ndata: a\r\n\r\n") == [E("a", "x")]


def test_blank_line_crlf_split_dispatches_at_the_cr() -> None:
    decoder = SSEDecoder()
    # The lone CR ends the blank line, so the event is complete already.
    assert decoder.feed(b"data: a\r\n\r") == [E("a")]
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"data: b\r\n\r\n") == [E("b")]
    assert not decoder.pending


def test_lone_cr_at_chunk_end_followed_by_non_lf() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    # A CR (not an LF) next: the lone CR was a line end, and this CR is a blank line.
    assert decoder.feed(b"\rdata: b\r") == [E("a")]
    assert decoder.feed(b"data: c\r\r") == [E("b\nc")]
    assert not decoder.pending


def test_lone_cr_at_chunk_end_followed_by_field() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"data: b\n\n") == [E("a\nb")]


def test_empty_feed_between_cr_and_lf_keeps_the_crlf_whole() -> None:
    # An empty read between the CR and the LF of one CRLF must change nothing: the LF
    # still completes the CRLF and is not a blank line of its own.
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\n") == []
    assert decoder.pending
    assert decoder.feed(b"data: b\n\n") == [E("a\nb")]


def test_empty_feeds_anywhere_change_nothing() -> None:
    stream = b"event: x\ndata: a\n\ndata: b\n\n"
    chunks: list[bytes] = [b""]
    for byte in bytewise(stream):
        chunks += [byte, b""]
    assert feed_all(chunks) == [E("a", "x"), E("b")]


# --------------------------------------------------------------------------- BOM, UTF-8


def test_leading_bom_stripped() -> None:
    assert decode_whole(BOM + b"data: a\n\n") == [E("a")]


def test_leading_bom_one_byte_per_feed() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(BOM[:1]) == []
    assert decoder.pending
    assert decoder.feed(BOM[1:2]) == []
    assert decoder.feed(BOM[2:]) == []
    assert decoder.feed(b"data: a\n\n") == [E("a")]
    assert feed_all(bytewise(BOM + b"data: a\n\n")) == [E("a")]


def test_bom_prefix_that_is_not_a_bom_is_kept() -> None:
    # 0xEF 0xBB then 'x': not a BOM, so those bytes stay (and decode as U+FFFD).
    assert feed_all([b"data: a\n\n"]) == [E("a")]
    assert feed_all([b"\xef", b"\xbb", b"x\ndata: a\n\n"]) == [E("a")]
    decoder = SSEDecoder()
    assert feed_all([b"\xef", b"\xbbxyz\n\n"], decoder) == []
    assert not decoder.pending


def test_only_one_leading_bom_stripped() -> None:
    # The second BOM becomes part of the field name "\ufeffdata", an unknown field.
    assert decode_whole(BOM + BOM + b"data: a\n\ndata: b\n\n") == [E("b")]


def test_bom_not_at_stream_start_is_kept() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\n") == [E("a")]
    # At the start of a later chunk it is not stripped: field "\ufeffdata" is ignored.
    assert decoder.feed(BOM + b"data: b\n\n") == []
    assert decode_whole(b"data: " + BOM + b"x\n\n") == [E("\ufeffx")]


def test_multibyte_utf8_split_across_feeds() -> None:
    text = "héllo € 😀 日本語"
    stream = b"data: " + text.encode() + b"\n\n"
    assert feed_all(bytewise(stream)) == [E(text)]
    for cut in range(len(stream) + 1):
        assert feed_all([stream[:cut], stream[cut:]]) == [E(text)], cut


# --------------------------------------------------------------------------- comments


def test_comments_never_dispatched() -> None:
    stream = b": keep-alive\n\n: PROCESSING\n\ndata: a\n: in the middle\ndata: b\n\n:\n\n"
    assert decode_whole(stream) == [E("a\nb")]


def test_openai_python_2722_id_then_comment_is_not_an_empty_event() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 1\n\n: comment\n\n") == []
    assert decoder.last_event_id == "1"
    assert not decoder.pending
    assert decoder.feed(b"data: x\n\n") == [E("x", id="1")]


@pytest.mark.parametrize(
    "stream",
    [b"event: ping\n\n", b"id: 7\n\n", b"retry: 10\n\n", b"event: ping\nid: 7\nretry: 5\n\n"],
)
def test_event_without_data_not_dispatched(stream: bytes) -> None:
    decoder = SSEDecoder()
    assert decoder.feed(stream) == []
    assert not decoder.pending


def test_event_name_does_not_leak_past_an_undispatched_event() -> None:
    assert decode_whole(b"event: ping\n\ndata: x\n\n") == [E("x")]


# --------------------------------------------------------------------------- fields


def test_multiline_data_joined_with_lf() -> None:
    assert decode_whole(b"data: a\ndata: b\ndata:\ndata: c\n\n") == [E("a\nb\n\nc")]


def test_data_without_colon_is_empty_data() -> None:
    assert decode_whole(b"data\n\n") == [E("")]
    assert decode_whole(b"data\ndata\n\n") == [E("\n")]


@pytest.mark.parametrize(
    ("line", "data"),
    [
        (b"data: x", "x"),
        (b"data:x", "x"),
        (b"data:  x", " x"),
        (b"data: x ", "x "),
        (b"data:", ""),
        (b"data: ", ""),
        (b"data: a: b", "a: b"),
        (b"data:\tx", "\tx"),
    ],
)
def test_one_leading_space_stripped(line: bytes, data: str) -> None:
    assert decode_whole(line + b"\n\n") == [E(data)]


def test_event_name_carried_and_reset() -> None:
    stream = b"event: delta\ndata: a\n\ndata: b\n\nevent:\ndata: c\n\nevent:  sp\ndata: d\n\n"
    assert decode_whole(stream) == [E("a", "delta"), E("b"), E("c"), E("d", " sp")]


def test_id_updates_last_event_id_and_persists() -> None:
    decoder = SSEDecoder()
    assert decoder.last_event_id is None
    assert decoder.feed(b"id: 1\ndata: a\n\ndata: b\n\n") == [E("a", id="1"), E("b", id="1")]
    assert decoder.last_event_id == "1"
    # id after data in the same event still applies to it.
    assert decoder.feed(b"data: c\nid: 2\n\n") == [E("c", id="2")]
    # "id" with no value sets the last event id to "".
    assert decoder.feed(b"id\ndata: d\n\n") == [E("d", id="")]
    assert decoder.last_event_id == ""


def test_id_with_nul_ignored() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 1\ndata: a\n\nid: 2\x00x\ndata: b\n\n") == [E("a", id="1"), E("b", id="1")]
    assert decoder.last_event_id == "1"


def test_retry_set_when_all_ascii_digits() -> None:
    assert decode_whole(b"retry: 1500\ndata: a\n\n") == [E("a", retry=1500)]
    assert decode_whole(b"retry:0\ndata: a\n\n") == [E("a", retry=0)]


def test_retry_persists_as_the_streams_reconnection_time() -> None:
    # WHATWG: retry sets the stream's reconnection time; it is not per event.
    stream = b"retry: 10\ndata: a\n\ndata: b\n\nretry: 20\ndata: c\n\nretry: x\ndata: d\n\n"
    assert decode_whole(stream) == [E("a", retry=10), E("b", retry=10), E("c", retry=20), E("d", retry=20)]


@pytest.mark.parametrize(
    "value",
    ["", "1x", "-1", "+1", "1.5", " 1", "1 ", "\u0661\u0662", "\u00b2", "\uff11"],
    ids=repr,
)
def test_retry_ignored_unless_all_ascii_digits(value: str) -> None:
    assert decode_whole(b"retry: " + value.encode() + b"\ndata: a\n\n") == [E("a")]


def test_unknown_field_ignored() -> None:
    assert decode_whole(b"foo: bar\nDATA: no\nData: no\ndata: a\n\n") == [E("a")]


# --------------------------------------------------------------------------- pending


def test_unterminated_last_event_not_dispatched() -> None:
    decoder = SSEDecoder()
    assert not decoder.pending
    assert decoder.feed(b"data: a\n\ndata: b\n") == [E("a")]
    assert decoder.pending
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\ndata: b") == [E("a")]
    assert decoder.pending
    decoder = SSEDecoder()
    assert decoder.feed(b"event: x\n") == []
    assert decoder.pending


def test_not_pending_after_complete_stream() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\n: trailing comment\n") == [E("a")]
    assert not decoder.pending


# --------------------------------------------------------------------------- realistic stream


def _openai_chunk(i: int, content: str | None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    if i == 0:
        delta = {"role": "assistant", "content": ""}
    obj = {
        "id": "chatcmpl-abc123",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return json.dumps(obj, ensure_ascii=False).encode()


OPENAI_PIECES = ["", "Hel", "lo, ", "wörld", " 😀", None]
OPENAI_DATA = [_openai_chunk(i, c, "stop" if c is None else None) for i, c in enumerate(OPENAI_PIECES)]
OPENAI_STREAM = (
    b": OPENROUTER PROCESSING\n\n" + b"".join(b"data: " + d + b"\n\n" for d in OPENAI_DATA) + b"data: [DONE]\n\n"
)


def test_openai_stream_bytewise_equals_whole() -> None:
    expected = [E(d.decode()) for d in OPENAI_DATA] + [E("[DONE]")]
    assert decode_whole(OPENAI_STREAM) == expected
    assert feed_all(bytewise(OPENAI_STREAM)) == expected
    text = "".join(json.loads(e.data)["choices"][0]["delta"].get("content", "") for e in expected[:-1])
    assert text == "Hello, wörld 😀"


# --------------------------------------------------------------------------- property


_line_text = st.builds(
    str.__add__,
    st.sampled_from(["", "", " ", "  ", ":", "\ufeff"]),
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n"), max_size=12),
)


@st.composite
def _streams(draw: st.DrawFn, line_ends: tuple[str, ...] = ("\n", "\r", "\r\n")) -> tuple[bytes, list[E], str | None]:
    """A valid event stream, and the events (and final last_event_id) it must decode to,
    computed from the generated values, not by parsing."""
    eols = st.sampled_from(line_ends)
    lines: list[str] = []
    expected: list[E] = []
    last_id: str | None = None
    retry: int | None = None
    for _ in range(draw(st.integers(0, 6))):
        fields: list[str] = []
        data = draw(st.lists(_line_text, max_size=4))
        for value in data:
            colon = "data:" if value[:1] != " " and draw(st.booleans()) else "data: "
            fields.append(colon + value if value or draw(st.booleans()) else "data")
        name = draw(st.none() | _line_text)
        if name is not None:
            fields.append("event: " + name)
        event_id = draw(st.none() | _line_text.filter(lambda s: "\0" not in s))
        if event_id is not None:
            fields.append("id: " + event_id)
            last_id = event_id
        new_retry = draw(st.none() | st.integers(0, 10**6))
        if new_retry is not None:
            fields.append(f"retry: {new_retry}")
            retry = new_retry
        comments = draw(st.lists(_line_text.map(lambda s: ":" + s), max_size=2))
        # Data lines keep their order among themselves; the rest go anywhere.
        others = draw(st.permutations(fields[len(data) :] + comments))
        slots = sorted(draw(st.lists(st.integers(0, len(data)), min_size=len(others), max_size=len(others))))
        block = list(fields[: len(data)])
        for offset, (slot, line) in enumerate(zip(slots, others, strict=True)):
            block.insert(slot + offset, line)
        lines += [*block, ""]
        if data:
            expected.append(E("\n".join(data), name or "message", last_id, retry))
        if draw(st.booleans()):  # a keep-alive between events (openai-python #2722)
            lines += [draw(_line_text.map(lambda s: ":" + s)), ""]
    text = ""
    prev_eol = ""
    for line in lines:
        eol = draw(eols)
        if prev_eol == "\r" and line == "" and eol == "\n":
            eol = "\r\n"  # "\r" + "\n" would be one CRLF, not two line ends
        text += line + eol
        prev_eol = eol
    raw = text.encode()
    if draw(st.booleans()):
        raw = BOM + raw
    return raw, expected, last_id


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=_streams(), cuts=st.lists(st.integers(0, 10**6), max_size=12))
def test_any_split_gives_the_same_events(stream: tuple[bytes, list[E], str | None], cuts: list[int]) -> None:
    _check_any_split(stream, cuts)


def _check_any_split(stream: tuple[bytes, list[E], str | None], cuts: list[int]) -> None:
    raw, expected, last_id = stream
    whole = SSEDecoder()
    assert whole.feed(raw) == expected
    assert whole.last_event_id == last_id
    assert not whole.pending
    points = sorted({c % (len(raw) + 1) for c in cuts})
    chunks = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    split = SSEDecoder()
    assert feed_all(chunks, split) == expected
    assert split.last_event_id == last_id
    assert not split.pending


# --------------------------------------------------------------------------- linear time


def _time_long_line(size: int) -> float:
    line = b"data: " + b"x" * size + b"\n\n"
    pieces = [line[i : i + 64] for i in range(0, len(line), 64)]
    decoder = SSEDecoder()
    start = time.perf_counter()
    events: list[E] = []
    for piece in pieces:
        events += decoder.feed(piece)
    elapsed = time.perf_counter() - start
    assert len(events) == 1
    assert len(events[0].data) == size
    return elapsed


def test_long_line_buffering_is_linear() -> None:
    # openai-python #3687: re-scanning the whole buffer at each read made a long line
    # quadratic. 4x the bytes must cost about 4x the time (16x if quadratic).
    small = min(_time_long_line(1_000_000) for _ in range(3))
    large = min(_time_long_line(4_000_000) for _ in range(2))
    assert large / small < 10, (small, large)


# --------------------------------------------------------------------------- decode_sse_json


async def _aiter(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _collect(chunks: Iterable[bytes], provider: str | None = None) -> list[dict[str, object]]:
    return [obj async for obj in decode_sse_json(_aiter(chunks), provider=provider)]


async def test_decode_sse_json_yields_dicts() -> None:
    expected = [json.loads(d) for d in OPENAI_DATA]
    assert await _collect([OPENAI_STREAM]) == expected
    assert await _collect(bytewise(OPENAI_STREAM)) == expected


async def test_decode_sse_json_stops_at_done_and_ignores_the_rest() -> None:
    stream = b'data: {"a": 1}\n\ndata: [DONE]\n\ndata: {bad\n\ndata: {"b": 2}\n\n'
    assert await _collect([stream]) == [{"a": 1}]


async def test_decode_sse_json_reads_nothing_after_done() -> None:
    async def source() -> AsyncIterator[bytes]:
        yield b'data: {"a": 1}\n\n'
        yield b"data: [DONE]\n\n"
        raise AssertionError("read past [DONE]")

    assert [obj async for obj in decode_sse_json(source())] == [{"a": 1}]


async def test_decode_sse_json_skips_keepalives_and_empty_data() -> None:
    stream = (
        b": keep-alive\n\n"
        b"data: : keepalive\n\n"
        b"data:\n\n"
        b"data:   \n\n"
        b'data: {"a": 1}\n\n'
        b"data\n\n"
        b'data: {"b": 2}\n\n'
        b"data: [DONE]\n\n"
    )
    assert await _collect([stream]) == [{"a": 1}, {"b": 2}]


async def test_decode_sse_json_multiline_data_is_one_json() -> None:
    stream = b'data: {"a":\ndata: 1}\n\ndata: [DONE]\n\n'
    assert await _collect([stream]) == [{"a": 1}]


@pytest.mark.parametrize(
    ("stream", "words"),
    [
        (b"data: {bad\n\n", ["not JSON", "{bad"]),
        (b"data: [1,2]\n\n", ["not a JSON object", "[1,2]"]),
        (b'data: "text"\n\n', ["not a JSON object"]),
        (b'data: {"a": 1}\n\n', ["ended before [DONE]"]),
        (b'data: {"a": 1}\n\ndata: [DONE]', ["ended before [DONE]"]),  # [DONE] unterminated
        (b"", ["ended before [DONE]"]),
    ],
)
async def test_decode_sse_json_raises_stream_error(stream: bytes, words: list[str]) -> None:
    with pytest.raises(StreamError) as info:
        await _collect([stream])
    for word in words:
        assert word in str(info.value)
    assert "from" not in str(info.value)


async def test_decode_sse_json_in_band_error() -> None:
    body = {"error": {"message": "boom", "type": "server_error"}}
    stream = b'data: {"a": 1}\n\ndata: ' + json.dumps(body).encode() + b"\n\ndata: [DONE]\n\n"
    seen: list[dict[str, object]] = []

    async def consume() -> None:
        async for obj in decode_sse_json(_aiter([stream])):
            seen.append(obj)

    with pytest.raises(StreamError) as info:
        await consume()
    assert seen == [{"a": 1}]
    assert info.value.body == body
    assert "boom" in str(info.value)


async def test_decode_sse_json_in_band_error_as_string() -> None:
    with pytest.raises(StreamError) as info:
        await _collect([b'data: {"error": "overloaded"}\n\n'])
    assert info.value.body == {"error": "overloaded"}
    assert "overloaded" in str(info.value)


async def test_decode_sse_json_null_error_is_not_an_error() -> None:
    assert await _collect([b'data: {"error": null, "a": 1}\n\ndata: [DONE]\n\n']) == [{"error": None, "a": 1}]


@pytest.mark.parametrize(
    "stream",
    [
        b"data: {bad\n\n",
        b"data: [1,2]\n\n",
        b'data: {"a": 1}\n\n',
        b'data: {"error": {"message": "boom"}}\n\n',
    ],
    ids=["not-json", "not-object", "no-done", "in-band-error"],
)
async def test_decode_sse_json_error_names_provider(stream: bytes) -> None:
    with pytest.raises(StreamError) as info:
        await _collect([stream], provider="deepseek")
    assert "deepseek" in str(info.value)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=_streams(line_ends=("\n",)), cuts=st.lists(st.integers(0, 10**6), max_size=12))
def test_any_split_of_a_stream_of_lf_line_ends_gives_the_same_events(
    stream: tuple[bytes, list[E], str | None], cuts: list[int]
) -> None:
    """The decoder's fast path (a chunk without CR, split and decoded at once) is the
    only one such a stream takes."""
    _check_any_split(stream, cuts)
