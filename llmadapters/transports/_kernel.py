"""What every transport does the same way once it has bytes: the request body, the
reply's body (capped) and status, the SSE stream's tail, and one resend when a pooled
connection was found closed. Here, not in each transport, so that the same bytes on the
wire give equal values and equal errors whichever transport carried them.
"""

from __future__ import annotations

import json
import json.scanner
import select
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import (
    BadRequestError,
    MalformedResponseError,
    StreamError,
    TransportError,
    excerpt,
    snippet,
    status_error,
)
from ..sse import EventTooLarge, SSEDecoder
from ..types import ResponseInfo

if TYPE_CHECKING:
    import asyncio
    from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

    from .base import Endpoint

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "MAX_BODY_BYTES",
    "closed_before_sending",
    "decode_error_body",
    "decode_json_body",
    "decode_sse_json",
    "drain",
    "encode_json",
    "json_reply",
    "raise_for_status",
    "read_body",
    "resend_if_closed",
    "socket_readable",
    "stream_reply",
]

# Connections a transport opens at most, over all hosts, when the route does not say.
DEFAULT_MAX_CONNECTIONS = 1024
# The largest body read, after decompression (a gzip bomb stops here), and the largest
# stream event: far above any chat completion, far below what would hurt the process.
MAX_BODY_BYTES = 32 * 1024 * 1024
_SNIPPET = 200
_MAX_PLAIN_BODY = 64 * 1024
_MAX_DRAIN = 64 * 1024
_MAX_CHAIN = 16

_T = TypeVar("_T")

# One encoder, not one per call (which json.dumps with arguments makes).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_json(payload: Mapping[str, Any]) -> bytes:
    """The request body for ``payload``: compact UTF-8 JSON. What JSON cannot carry (NaN
    or an infinity, a lone surrogate, which is not text) is a `BadRequestError` raised
    before anything is sent."""
    try:
        return _ENCODER.encode(payload).encode()
    except UnicodeEncodeError as exc:
        where = exc.object[max(0, exc.start - 40) : exc.start]
        why = f"a string holds a lone surrogate {exc.object[exc.start]!r}, which is not text, after {where!r}"
    except ValueError as exc:  # NaN or an infinity, a circular reference
        why = str(exc)
    raise BadRequestError(f"invalid request: the body cannot be sent as JSON: {why}", status=400)


# json.loads goes through three Python functions before the C scanner; a reply and each
# stream event call the scanner directly (the one json.loads uses, with its defaults).
_SCAN = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def _loads(text: str | bytes) -> Any:
    """``json.loads(text)``: the scanner's value when it reads ``text`` whole and is
    UTF-8 text; anything else (whitespace around the value, another encoding, an
    error) goes to ``json.loads``, whose value and errors stay the reference."""
    try:
        string = text if isinstance(text, str) else text.decode()
        value, end = _SCAN(string, 0)
        if end == len(string):
            return value
    except (StopIteration, ValueError):  # (UnicodeDecodeError is a ValueError)
        pass
    except RecursionError:
        raise ValueError("JSON nested too deep to read") from None
    return json.loads(text)


def _snippet(body: bytes) -> str:
    text = body[: _SNIPPET + 1024].decode("utf-8", errors="replace")
    return snippet(text, _SNIPPET) or "<empty>"


def _error_message(data: Mapping[str, Any]) -> object:
    error = data.get("error")
    return error.get("message", error) if isinstance(error, Mapping) else error


async def read_body(chunks: AsyncIterator[bytes], *, limit: int = MAX_BODY_BYTES) -> bytes:
    """The whole (decoded) body, refusing more than ``limit`` bytes with
    `MalformedResponseError`."""
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise MalformedResponseError(f"response body over {limit} bytes")
    return bytes(body)


def decode_json_body(body: bytes) -> dict[str, Any]:
    """Decode a 2xx non-streamed body. Leading blank lines are allowed: DeepSeek sends
    them while a request waits in its queue. An ``{"error": ...}`` object without
    ``choices`` (some providers send errors with status 200) raises."""
    try:
        data = _loads(body)
    except ValueError as exc:
        raise MalformedResponseError(f"response body is not JSON: {_snippet(body)!r}") from exc
    if not isinstance(data, dict):
        raise MalformedResponseError(f"response body is not a JSON object: {_snippet(body)!r}")
    if data.get("error") and "choices" not in data:
        raise MalformedResponseError(f"error in a 2xx response: {_error_message(data)}", body=data)
    return data


def decode_error_body(body: bytes) -> object:
    """The body of an error response: its JSON when it is JSON, else its text."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return body.decode("utf-8", errors="replace")


async def decode_sse_json(
    chunks: AsyncIterator[bytes], *, provider: str | None = None
) -> AsyncGenerator[dict[str, Any], None]:
    """Turn the body of a 2xx streamed reply into JSON events, up to ``[DONE]``.

    Events whose data is empty or a re-wrapped comment (``data: : keepalive``, sent by
    some proxies) are skipped. Anything else that is not a JSON object, an in-band
    ``{"error": ...}`` event, or an end of body before ``[DONE]`` (``ended_early``: the
    route decides whether the answer was complete) raises `StreamError`; a body that was
    one JSON object instead of a stream is kept in its ``body``, unless it is a whole chat
    completion (a server that ignored ``stream: true``): that is the stream's one event,
    each choice's message its delta.
    """
    async for events in _sse_json_batches(chunks, provider):
        for event in events:
            yield event


async def _sse_json_batches(
    chunks: AsyncIterator[bytes], provider: str | None
) -> AsyncGenerator[list[dict[str, Any]], None]:
    """`decode_sse_json`'s events, a list per read of the body: a generator resumed
    once a read, not once an event, under the generators that yield each event. The
    events before an error in the same read come first, then the error."""
    decoder = SSEDecoder(max_event_bytes=MAX_BODY_BYTES)
    where = f" from {provider}" if provider else ""
    head = bytearray()  # the start of the body, while it may be plain JSON, not SSE
    events = 0
    async for chunk in chunks:
        if not events and len(head) < _MAX_PLAIN_BODY:
            head += chunk
        try:
            completed = decoder.feed(chunk)
        except EventTooLarge as exc:
            raise StreamError(f"stream{where}: {exc}") from None
        batch: list[dict[str, Any]] = []
        for event in completed:
            events += 1
            data = event.data
            if data == "[DONE]":
                if batch:
                    yield batch
                return
            if not data.strip() or data[0] == ":":
                continue
            try:
                batch.append(_event_object(data, where))
            except StreamError:
                if batch:
                    yield batch
                raise
        if batch:
            yield batch
    if not events and head.strip():
        try:
            plain = json.loads(head)
        except (ValueError, RecursionError):
            plain = None
        if isinstance(plain, dict):
            whole = _as_chunk(plain)
            if whole is not None:  # a server that ignores stream: true, answering whole
                yield [whole]
                return
            raise StreamError(f"a JSON body{where} instead of a stream: {_error_message(plain)}", body=plain)
    raise StreamError(f"stream{where} ended before [DONE]", ended_early=True)


def _as_chunk(reply: dict[str, Any]) -> dict[str, Any] | None:
    """A whole chat completion as the one chunk of a stream (each message its choice's
    delta), or None when ``reply`` is not one."""
    choices = reply.get("choices")
    if not isinstance(choices, list) or not choices:
        return None
    if not all(isinstance(c, dict) and isinstance(c.get("message"), dict) for c in choices):
        return None
    deltas = [
        {"index": c.get("index", i), "delta": c["message"], "finish_reason": c.get("finish_reason")}
        for i, c in enumerate(choices)
    ]
    return {**reply, "object": "chat.completion.chunk", "choices": deltas}


def _event_object(data: str, where: str) -> dict[str, Any]:
    """A stream event's JSON object, or `StreamError`."""
    try:
        obj = _loads(data)
    except ValueError as exc:
        raise StreamError(f"stream event{where} is not JSON: {excerpt(data, _SNIPPET)!r}") from exc
    if not isinstance(obj, dict):
        raise StreamError(f"stream event{where} is not a JSON object: {excerpt(data, _SNIPPET)!r}")
    if obj.get("error"):
        raise StreamError(f"error event in stream{where}: {_error_message(obj)}", body=obj)
    return obj


async def drain(chunks: AsyncIterator[bytes]) -> None:
    """Read what follows ``[DONE]`` (at most the chunked terminator, normally), so that
    HTTP/1.1 can reuse the connection instead of dropping it."""
    left = _MAX_DRAIN
    async for chunk in chunks:
        left -= len(chunk)
        if left <= 0:
            return


def raise_for_status(status: int, headers: Mapping[str, str], body: bytes, endpoint: Endpoint) -> ResponseInfo:
    """Raise the `APIStatusError` subclass for a non-2xx status (``body`` is the error
    response's); for 2xx, the reply's `ResponseInfo`. ``headers`` must look names up
    case-insensitively (httpx2's and aiohttp's header objects do)."""
    if status >= 300:
        raise status_error(status, headers, decode_error_body(body), provider=endpoint.provider)
    if status < 200:
        where = f" from {endpoint.provider}" if endpoint.provider else ""
        raise TransportError(f"unexpected HTTP status {status}{where}")
    return ResponseInfo(status, headers)


def json_reply(
    status: int, headers: Mapping[str, str], body: bytes, endpoint: Endpoint
) -> tuple[dict[str, Any], ResponseInfo]:
    """What ``send`` returns for a whole reply: its JSON object and its `ResponseInfo`,
    or the error of its status (`raise_for_status`) or body (`decode_json_body`)."""
    info = raise_for_status(status, headers, body, endpoint)
    return decode_json_body(body), info


async def stream_reply(
    status: int, headers: Mapping[str, str], chunks: AsyncIterator[bytes], endpoint: Endpoint
) -> AsyncGenerator[ResponseInfo | dict[str, Any], None]:
    """What ``stream`` yields for a reply whose status and headers are in and whose body
    is ``chunks``: an error status raised with its body read (`raise_for_status`), else
    the `ResponseInfo`, each event (`decode_sse_json`), and the rest of the body
    drained (`drain`). The transport maps its library's errors around it."""
    error_body = await read_body(chunks) if status >= 300 else b""
    yield raise_for_status(status, headers, error_body, endpoint)
    async for events in _sse_json_batches(chunks, endpoint.provider):
        for event in events:
            yield event
    await drain(chunks)


def closed_before_sending(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is aiohttp finding a pooled connection closed
    by the server before a byte of the request went out, so that sending again on a new
    connection cannot repeat the call. (A server may close an idle connection just as
    it is reused: tinyproxy closes every one after its reply, keep-alive headers or not.)
    """
    chain = 0
    cause: BaseException | None = exc
    while cause is not None and chain < _MAX_CHAIN:
        if type(cause).__name__ == "ClientConnectionResetError" and type(cause).__module__.startswith("aiohttp"):
            return str(cause) == "Cannot write to closing transport"
        cause, chain = cause.__cause__ or cause.__context__, chain + 1
    return False


def socket_readable(transport: asyncio.BaseTransport) -> bool:
    """Whether the socket under ``transport`` has bytes (or an end) that the event loop
    has not handed on yet: asked of a pooled connection before a request goes on it,
    since the server may have closed it just now. (A ``poll`` system call.)"""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.fileno() < 0:
        return True
    poll = select.poll()
    poll.register(sock.fileno(), select.POLLIN)
    return bool(poll.poll(0))


async def resend_if_closed(post: Callable[[], Awaitable[_T]]) -> _T:
    """``await post()``, and once more when the first found its pooled connection closed
    before sending anything (`closed_before_sending`)."""
    try:
        return await post()
    except Exception as exc:
        if not closed_before_sending(exc):
            raise
    return await post()
