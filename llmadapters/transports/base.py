"""The Transport protocol, and the byte-level decoding every transport shares.

A transport has one job: move a JSON payload to an endpoint and bring back the JSON
reply, or the stream of JSON events. It knows no provider, middleware or config; the
route hands it an `Endpoint` with auth already in the headers. It maps its native
exceptions to `llmadapters.errors` and lets none escape.

Decoding lives here, not in each transport, so that the same bytes on the wire give
equal values and equal errors whichever transport carried them.
"""

from __future__ import annotations

import builtins
import errno
import json
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from ..errors import ConnectError, MalformedResponseError, StreamError, TimeoutError, TransportError, status_error
from ..sse import EventTooLarge, SSEDecoder
from ..types import ResponseInfo

__all__ = [
    "MAX_BODY_BYTES",
    "Endpoint",
    "ResponseInfo",
    "Timeouts",
    "Transport",
    "classify_transport_error",
    "closed_before_sending",
    "decode_error_body",
    "decode_json_body",
    "decode_sse_json",
    "drain",
    "encode_json",
    "native_error_kind",
    "raise_for_status",
    "read_body",
    "redacted_repr",
    "timeout_error",
]

_SENSITIVE_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "proxy-authorization", "cookie"})
_SNIPPET = 200
# The largest body read, after decompression (a gzip bomb stops here), and the largest
# stream event: far above any chat completion, far below what would hurt the process.
MAX_BODY_BYTES = 32 * 1024 * 1024
_MAX_PLAIN_BODY = 64 * 1024
_MAX_DRAIN = 64 * 1024
_MAX_CHAIN = 16


@attrs.frozen(kw_only=True)
class Timeouts:
    """Per-attempt timeouts in seconds (None: no limit).

    Attributes:
        connect: to establish a connection (TCP + TLS).
        read: between two reads of the response; it bounds a stalled stream.
        write: between two writes of the request.
        pool: waiting for a free connection from the pool.
        total: the whole attempt, a stream's last chunk included (enforced by the
            timeout middleware, not the transport).
        first_token: until a stream's first chunk or a unary reply (timeout middleware).
    """

    connect: float | None = 5.0
    read: float | None = 600.0
    write: float | None = 600.0
    pool: float | None = None
    total: float | None = None
    first_token: float | None = None


def redacted_repr(headers: Mapping[str, str]) -> str:
    """The repr of ``headers`` with the values of credential headers hidden."""
    return repr({k: ("<redacted>" if k.lower() in _SENSITIVE_HEADERS else v) for k, v in headers.items()})


@attrs.frozen(kw_only=True)
class Endpoint:
    """Where and how to send one call.

    Attributes:
        base_url: e.g. ``https://api.deepseek.com/v1`` (no trailing slash needed).
        path: e.g. ``/chat/completions``.
        headers: sent with the request, auth included; redacted in repr.
        query: query parameters added to the URL (e.g. ``api-version``).
        timeouts: per-attempt timeouts.
        provider: the provider's name, used only to label errors.
    """

    base_url: str
    path: str = "/chat/completions"
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=redacted_repr)
    query: Mapping[str, str] = attrs.field(factory=dict)
    timeouts: Timeouts = attrs.field(factory=Timeouts)
    provider: str | None = None

    @property
    def url(self) -> str:
        """The full URL, query included."""
        url = self.base_url.rstrip("/") + "/" + self.path.lstrip("/")
        return f"{url}?{urllib.parse.urlencode(self.query)}" if self.query else url

    def with_headers(self, headers: Mapping[str, str]) -> Endpoint:
        """A copy that also sends ``headers`` (which win over existing ones)."""
        return attrs.evolve(self, headers={**self.headers, **headers})


@runtime_checkable
class Transport(Protocol):
    """Moves JSON to an OpenAI-compatible endpoint and back.

    - ``send`` POSTs ``payload`` and returns the decoded JSON object of a 2xx reply
      with the reply's `ResponseInfo` (status and headers).
    - ``stream`` POSTs ``payload`` (which asks for ``"stream": true``); once the status
      is known to be 2xx it yields the `ResponseInfo`, then each SSE event's JSON object
      until ``[DONE]``. Status errors are raised before anything is yielded.
    - ``aclose`` releases connections; the transport is unusable afterwards.

    Failures raise `llmadapters.errors` classes only: `ConnectError`, `TimeoutError`,
    `TransportError`, `APIStatusError` subclasses (via `decode_error_body` and
    `errors.status_error`), `MalformedResponseError` and `StreamError`.
    """

    async def send(self, endpoint: Endpoint, payload: Mapping[str, Any]) -> tuple[dict[str, Any], ResponseInfo]: ...

    def stream(
        self, endpoint: Endpoint, payload: Mapping[str, Any]
    ) -> AsyncGenerator[ResponseInfo | dict[str, Any], None]: ...

    async def aclose(self) -> None: ...


# One encoder, not one per call (which json.dumps with arguments makes).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode_json(payload: Mapping[str, Any]) -> bytes:
    """The request body for ``payload``: compact UTF-8 JSON."""
    return _ENCODER.encode(payload).encode()


def _snippet(body: bytes) -> str:
    text = body[:_SNIPPET].decode("utf-8", errors="replace")
    return " ".join(text.split()) or "<empty>"


def _error_message(data: Mapping[str, Any]) -> object:
    error = data.get("error")
    return error.get("message", error) if isinstance(error, Mapping) else error


async def read_body(chunks: AsyncIterator[bytes], *, limit: int = MAX_BODY_BYTES) -> bytes:
    """The whole (decoded) body, refusing more than ``limit`` bytes."""
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
        data = json.loads(body)
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
    except ValueError:
        return body.decode("utf-8", errors="replace")


async def decode_sse_json(
    chunks: AsyncIterator[bytes], *, provider: str | None = None
) -> AsyncGenerator[dict[str, Any], None]:
    """Turn the body of a 2xx streamed reply into JSON events, up to ``[DONE]``.

    Events whose data is empty or a re-wrapped comment (``data: : keepalive``, sent by
    some proxies) are skipped. Anything else that is not a JSON object, an in-band
    ``{"error": ...}`` event, or an end of body before ``[DONE]`` (``ended_early``: the
    route decides whether the answer was complete) raises `StreamError`; a body that was
    one JSON object instead of a stream is kept in its ``body``.
    """
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
        for event in completed:
            events += 1
            data = event.data
            if data == "[DONE]":
                return
            if not data.strip() or data[0] == ":":
                continue
            try:
                obj = json.loads(data)
            except ValueError as exc:
                raise StreamError(f"stream event{where} is not JSON: {data[:_SNIPPET]!r}") from exc
            if not isinstance(obj, dict):
                raise StreamError(f"stream event{where} is not a JSON object: {data[:_SNIPPET]!r}")
            if obj.get("error"):
                raise StreamError(f"error event in stream{where}: {_error_message(obj)}", body=obj)
            yield obj
    if not events and head.strip():
        try:
            plain = json.loads(head)
        except ValueError:
            plain = None
        if isinstance(plain, dict):
            raise StreamError(f"a JSON body{where} instead of a stream: {_error_message(plain)}", body=plain)
    raise StreamError(f"stream{where} ended before [DONE]", ended_early=True)


async def drain(chunks: AsyncIterator[bytes]) -> None:
    """Read what follows ``[DONE]`` (at most the chunked terminator, normally), so that
    HTTP/1.1 can reuse the connection instead of dropping it."""
    left = _MAX_DRAIN
    async for chunk in chunks:
        left -= len(chunk)
        if left <= 0:
            return


def native_error_kind(exc: BaseException) -> type[TransportError] | None:
    """The class of ours for an aiohttp or built-in exception, or None if unknown.

    aiohttp is imported only once one of its exceptions is seen, so it is installed.
    """
    if type(exc).__module__.startswith("aiohttp."):
        import aiohttp

        if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.InvalidURL)):
            return ConnectError
        if isinstance(exc, (aiohttp.ServerTimeoutError, builtins.TimeoutError)):
            return TimeoutError
        return TransportError
    if isinstance(exc, builtins.TimeoutError):
        return TimeoutError
    return None


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


def classify_transport_error(
    exc: BaseException,
    endpoint: Endpoint,
    kind_of: Callable[[BaseException], type[TransportError] | None] = native_error_kind,
) -> TransportError:
    """Our error for a native one, classified by the innermost cause ``kind_of`` knows
    (wrappers such as the openai SDK's re-label what they wrap), in the same words
    whichever library raised it: a timeout names its phase and limit (`timeout_error`),
    a connection the server reset or closed mid-answer says so."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(chain) < _MAX_CHAIN:
        chain.append(cause)
        cause = cause.__cause__
    kind: type[TransportError] = TransportError
    native = exc
    for candidate in reversed(chain):
        found = kind_of(candidate)
        if found is not None:
            kind, native = found, candidate
            break
    url = endpoint.url
    detail = str(native) or type(native).__name__
    if kind is ConnectError:
        return ConnectError(f"cannot connect to {url}: {detail}")
    if kind is TimeoutError:
        phase = next((_TIMEOUT_PHASES[_name(c)] for c in reversed(chain) if _name(c) in _TIMEOUT_PHASES), None)
        if phase is not None:
            return timeout_error(phase, url, getattr(endpoint.timeouts, phase))
    elif any(_lost(c) for c in chain):
        return kind(f"connection lost on {url} before the response was complete: the server closed or reset it")
    return kind(f"{type(native).__name__} on {url}: {detail}")


# Per phase of an attempt: what its timeout means, and the setting that sets it.
_TIMEOUT_TEXT = {
    "connect": ("no connection within {} s", "timeout.connect"),
    "write": ("the server took no data for {} s", "timeout.write"),
    "read": ("no data from the server for {} s", "timeout.read"),
    "pool": ("no free connection within {} s", "timeout.pool"),
    "first_token": ("no reply (or first chunk of a stream) within {} s", "timeout.first_token"),
    "total": ("the attempt took over {} s", "timeout.total"),
    "deadline": ("the call's deadline passed, {} s into this attempt", "retry.deadline"),
}
# The native timeouts that tell their phase, by module and class name: httpx2's (and
# httpcore2's, which it wraps) and aiohttp's (raised alone, or under the openai SDK).
_TIMEOUT_PHASES = {
    "httpx2.ConnectTimeout": "connect",
    "httpx2.ReadTimeout": "read",
    "httpx2.WriteTimeout": "write",
    "httpx2.PoolTimeout": "pool",
    "httpcore2.ConnectTimeout": "connect",
    "httpcore2.ReadTimeout": "read",
    "httpcore2.WriteTimeout": "write",
    "httpcore2.PoolTimeout": "pool",
    "aiohttp.ConnectionTimeoutError": "connect",
    "aiohttp.SocketTimeoutError": "read",
}
# A connection the server dropped before the reply was whole, as each library says it:
# a reset (an OSError of one of these numbers), or the end of the stream too early.
_LOST_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})
_LOST = frozenset({"httpx2.RemoteProtocolError", "httpcore2.RemoteProtocolError", "aiohttp.ClientPayloadError"})
_LOST |= {"aiohttp.ServerDisconnectedError", "httpcore2.ReadError", "httpcore2.WriteError"}


def _name(exc: BaseException) -> str:
    """``library.ClassName`` of ``exc``, its library's top-level module."""
    return f"{type(exc).__module__.partition('.')[0]}.{type(exc).__name__}"


def _lost(exc: BaseException) -> bool:
    return (isinstance(exc, OSError) and exc.errno in _LOST_ERRNOS) or _name(exc) in _LOST


def timeout_error(phase: str, url: str, seconds: float | None) -> TimeoutError:
    """The `TimeoutError` of one phase of an attempt (``connect``, ``write``, ``read``,
    ``pool``, ``first_token``, ``total``, or the call's ``deadline``), in the same words
    on every transport: ``read timeout on URL: no data from the server for 30 s
    (timeout.read)``."""
    text, setting = _TIMEOUT_TEXT[phase]
    limit = "?" if seconds is None else f"{seconds:g}"
    return TimeoutError(f"{phase.replace('_', ' ')} timeout on {url}: {text.format(limit)} ({setting})")


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
