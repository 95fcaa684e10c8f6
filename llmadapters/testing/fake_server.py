"""A real OpenAI-compatible HTTP server on loopback, with fault injection.

HTTP is parsed and framed by ``h11`` (already in the tree through httpx2's stack) over
asyncio streams; owning the socket is what lets it inject faults that an ASGI server
cannot, such as a TCP reset or a stall before the status line.

Endpoints: ``POST /v1/chat/completions`` (unary and ``stream: true``), ``POST
/v1/embeddings`` (see `embedding_of`), ``GET /v1/models``,
the Files and Batches endpoints of the OpenAI Batch API (see `.fake_batches`), and
``GET /v1/fake/stats``: how many successful replies each prompt (the last user
message) has had, to check that a resumed batch sent nothing twice. It holds the latest
10,000 prompts answered (a prompt over 256 characters by its SHA-256, ``sha256:HEX``), so
that a long load test does not grow the server without bound.

Replies are deterministic: model ``echo`` repeats the last user message; any other
model answers a fixed text whose length follows ``max_tokens``. Usage counts are
whitespace tokens (+4 per message for the prompt).

Behaviours are chosen per request, by the model name (``fail-429``, or several joined
by ``+``: ``echo+keepalive+crlf``) or by the ``x-fake-behaviour`` header (comma
separated). See `BEHAVIOURS`. With ``x-fake-fail-times: N`` the faults apply only to the
first N attempts of a call (attempts share an ``Idempotency-Key``), then it succeeds.
Each ``x-fake-reply-NAME: VALUE`` request header comes back as a ``NAME: VALUE``
response header (e.g. ``x-fake-reply-retry-after-ms: 1500``). ``x-fake-error-status`` with
``x-fake-error-body`` answers that status and body, to stand in for a provider's own
errors (Zhipu's ``{"error": {"code": "1302", ...}}``).

The latency model (time to first token, tokens per second) comes from the server's
options, or per request from the ``x-fake-ttft-ms`` and ``x-fake-tps`` headers.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import functools
import gzip
import hashlib
import itertools
import json
import re
import socket
import struct
import time
import zlib
from typing import TYPE_CHECKING, Any

import attrs
import h11

from ..pricing import message_text as _text_of
from ..pricing import words_and_four
from .fake_batches import FakeBatches

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping
    from ssl import SSLContext

__all__ = ["BEHAVIOURS", "FakeServer", "FakeServerOptions"]

BEHAVIOURS: Mapping[str, str] = {
    "echo": "answer with the last user message (the default answer is a fixed text)",
    "fail-400": "400 with an OpenAI-style JSON error",
    "fail-401": "401 with an OpenAI-style JSON error",
    "fail-402": "402 insufficient balance, as DeepSeek sends it",
    "fail-429": "429 with Retry-After (seconds, x-fake-retry-after header, default 1)",
    "fail-500": "500 with an OpenAI-style JSON error",
    "fail-503": "503 with an OpenAI-style JSON error",
    "html-502": "502 with an HTML page, as a proxy in front of a provider sends",
    "reset": "TCP reset before any response byte",
    "reset-mid-body": "status line and half the body, then a TCP reset",
    "truncate": "stream: ends cleanly before the finish_reason (and [DONE]); unary: the JSON cut in half",
    "no-done": "stream: ends cleanly after the finish_reason (and usage) chunk, without [DONE], as some servers do",
    "malformed": "unary: a body that is not JSON; stream: an event that is not JSON",
    "empty": "200 with an empty body (a stream too)",
    "error-200": "200 with a JSON error object as the body, as some providers send errors (a stream too)",
    "stream-error": 'stream: one chunk, then an in-band {"error": ...} event',
    "stall": "accept the request, never answer (x-fake-stall-s header bounds it)",
    "stall-mid-stream": "stream: one chunk, then silence",
    "keepalive": "DeepSeek queueing: ': keep-alive' comments in streams, blank lines before unary JSON",
    "processing": "Xiaomi MiMo: ': PROCESSING' comments in streams",
    "crlf": "stream lines end with CRLF",
    "gzip": (
        "a reply (unary, or a stream flushed event by event) sent with content-encoding: gzip when the request's "
        "accept-encoding allows gzip, as providers and gateways compress their JSON"
    ),
    "reasoning": "reasoning_content in the message and in stream deltas",
    "usage-in-choice": (
        "stream: the usage inside the last chunk's choice (choices[0].usage), asked for or not, not in a chunk "
        "of its own, as Moonshot sends it"
    ),
    "tools": "call the first tool of the request (on whenever it has tools), unless a tool's result came last",
    "huge-body": "200 with a 50 MB reply, a valid one but for its size (a stream too: one 50 MB chunk)",
    "gzip-bomb": "200 with a gzip body that inflates to 100 MB (a stream too)",
    "huge-header": "a 200 KB response header, over httpx2's (100 KiB) and aiohttp's (8 KiB) limits",
    "drip": "200, then the body one byte every 0.2 s (x-fake-stall-s bounds it)",
    "redirect": "307 to the x-fake-redirect-to URL",
    "deepseek-thinking": (
        "DeepSeek V4 thinking mode: reasoning_content in replies unless thinking is disabled; a 400 when "
        "an assistant message with tool calls does not carry its reasoning_content back, for a "
        "response_format of type json_schema, and for json_object when no message says 'json'"
    ),
    "zhipu-thinking": (
        "Zhipu GLM-4.5 and later: reasoning_content in replies unless thinking is disabled; a 400 with code "
        "1214 for an assistant message with neither content nor tool_calls"
    ),
    "moonshot-thinking": (
        "Moonshot Kimi K2.5/K2.6: reasoning_content in replies unless thinking is disabled; a 400 for a "
        "temperature other than 1 (0.6 with thinking disabled), and when an assistant message with tool "
        "calls does not carry its reasoning_content back"
    ),
    "mimo-thinking": (
        "Xiaomi MiMo models that think by default (mimo-v2.5-pro, ...): reasoning_content in replies unless "
        "thinking is disabled; a 400 when an assistant message with tool calls does not carry its "
        "reasoning_content back"
    ),
    "qwen-thinking": (
        "a DashScope (Qwen) model that thinks by default: reasoning_content in streamed replies; a 400 "
        "for a non-streamed call unless enable_thinking is false"
    ),
    "leak-key": (
        "echo the request's key (Authorization, api-key or x-api-key) in every reply: headers "
        "(x-echo-credential, x-request-id), error messages, the HTML page, stream error events"
    ),
}
# The profiles of models that think unless sent {"thinking": {"type": "disabled"}}, each
# with the 400 its provider answers when an assistant message with tool calls does not
# carry its reasoning_content back (None: not refused). Sources: DeepSeek,
# api-docs.deepseek.com/guides/thinking_mode; Moonshot, continuedev/continue#11527;
# MiMo, mimo.mi.com/docs/zh-CN/quick-start/usage-guide/other/deep-thinking.
_THINKING: Mapping[str, str | None] = {
    "deepseek-thinking": (
        "The reasoning_content in the thinking mode must be passed back to the API. (message index {})"
    ),
    "moonshot-thinking": (
        "thinking is enabled but reasoning_content is missing in assistant tool call message at index {}"
    ),
    "mimo-thinking": "reasoning_content must be fully passed back (message index {})",
    "zhipu-thinking": None,
}
_PROFILES = frozenset({*_THINKING, "qwen-thinking"})
_QUIRKS = (
    frozenset(
        {
            "echo",
            "keepalive",
            "processing",
            "crlf",
            "gzip",
            "reasoning",
            "tools",
            "leak-key",
            "no-done",
            "usage-in-choice",
        }
    )
    | _PROFILES
)
_FAULTS = frozenset(BEHAVIOURS) - _QUIRKS
_MAX_TRACKED_CALLS = 100_000
_MAX_TRACKED_PROMPTS = 10_000
_MAX_PROMPT_KEY = 256

_TEXT = [
    "The",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "the",
    "lazy",
    "dog",
    "while",
    "a",
    "fake",
    "server",
    "answers",
    "every",
    "request",
    "the",
    "same",
    "way",
    "so",
    "that",
    "tests",
    "can",
    "compare",
    "replies",
    "byte",
    "for",
    "byte",
    "across",
    "transports",
    "and",
    "runs",
    "without",
    "any",
    "network",
    "or",
    "key.",
]
_DEFAULT_TOKENS = 16
# The fake embedding models and the length of their vectors when ``dimensions`` is not sent.
EMBEDDING_MODELS: Mapping[str, int] = {"embed": 64, "embed-large": 1024}
_MAX_DIMENSIONS = 4096
_MAX_BODY = 16 * 1024 * 1024
_TOKEN = re.compile(r"\S+\s*")


@attrs.frozen(kw_only=True)
class FakeServerOptions:
    """Attributes:
    ttft: seconds before the first token (for unary: before the reply).
    tokens_per_s: generation speed; None for instant.
    api_key: when set, requests must carry ``Authorization: Bearer <api_key>``.
    clock: gives ``created`` timestamps; fix it to make replies byte-identical.
    max_concurrency: chat calls answered at once; those above it get a 429, as Moonshot
        answers "max organization concurrency" (a hidden limit for adaptive clients).
    """

    ttft: float = 0.0
    tokens_per_s: float | None = None
    api_key: str | None = attrs.field(default=None, repr=False)
    clock: Callable[[], float] = time.time
    max_concurrency: int | None = None


def _error_body(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


_STATUS_ERRORS: Mapping[str, tuple[int, dict[str, Any]]] = {
    "fail-400": (400, _error_body("Invalid request (injected)", "invalid_request_error")),
    "fail-401": (401, _error_body("Incorrect API key provided (injected)", "invalid_request_error", "invalid_api_key")),
    "fail-402": (402, _error_body("Insufficient Balance (injected)", "unknown_error", "invalid_request_error")),
    "fail-429": (429, _error_body("Rate limit reached (injected)", "rate_limit_error", "rate_limit_exceeded")),
    "fail-500": (500, _error_body("The server had an error (injected)", "server_error")),
    "fail-503": (503, _error_body("The engine is overloaded (injected)", "server_error")),
}

_HTML_502 = (
    b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>"
)


class _BadRequest(Exception):
    pass


def _number(headers: Mapping[str, str], name: str, default: float) -> float:
    value = headers.get(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number < float("inf"):
        raise _BadRequest(f"header {name} must be a non-negative number, got {value!r}")
    return number


@attrs.frozen
class _Reply:
    """What the fake model says to one request."""

    model: str
    pieces: tuple[str, ...]
    reasoning: tuple[str, ...]
    tool_call: dict[str, Any] | None
    prompt_tokens: int
    prompt: str

    @property
    def completion_tokens(self) -> int:
        return len(self.pieces) + len(self.reasoning)

    def usage(self) -> dict[str, int]:
        p, c = self.prompt_tokens, self.completion_tokens
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def embedding_of(text: str, dimensions: int) -> list[float]:
    """The fake vector of ``text``: ``dimensions`` float32 values, deterministic (from
    SHAKE-256 of the text), of unit length, so that tests can compute what to expect."""
    raw = struct.unpack(
        f"<{dimensions}I", hashlib.shake_256(text.encode("utf-8", "surrogatepass")).digest(4 * dimensions)
    )
    values = [x / 2**31 - 1.0 for x in raw]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    # Rounded through float32, as a base64 reply carries them: float and base64 agree.
    return list(struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f", *(v / norm for v in values))))


@attrs.frozen
class _Embeddings:
    """What the fake model answers to one embeddings request."""

    body: dict[str, Any]
    prompt: str  # the first input, counted in ``answered``

    @property
    def completion_tokens(self) -> int:
        return 0


def _embeddings(body: Mapping[str, Any]) -> _Embeddings:
    """The embeddings reply to ``body``, or `_BadRequest` saying what is wrong, as
    OpenAI checks: a known model, a non-empty input, ``dimensions`` and ``encoding_format``."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequest("'model' is required")
    base = model.split("+")[0]
    if base not in EMBEDDING_MODELS:
        raise _BadRequest(f"model {model!r} does not embed; the embedding models are {', '.join(EMBEDDING_MODELS)}")
    inputs = body.get("input")
    if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and all(type(t) is int for t in inputs)):
        inputs = [inputs]
    ok = (
        isinstance(inputs, list)
        and bool(inputs)
        and all(
            (isinstance(item, str) and item) or (isinstance(item, list) and item and all(type(t) is int for t in item))
            for item in inputs
        )
    )
    if not ok:
        raise _BadRequest("'input' must be a non-empty string or array of them (or of token arrays)")
    assert isinstance(inputs, list)
    dimensions = body.get("dimensions", EMBEDDING_MODELS[base])
    if type(dimensions) is not int or not 1 <= dimensions <= min(_MAX_DIMENSIONS, EMBEDDING_MODELS[base]):
        raise _BadRequest(f"'dimensions' must be an integer from 1 to {EMBEDDING_MODELS[base]} for {base}")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise _BadRequest("'encoding_format' must be 'float' or 'base64'")
    texts = [item if isinstance(item, str) else " ".join(map(str, item)) for item in inputs]
    data = []
    for i, text in enumerate(texts):
        vector: object = embedding_of(text, dimensions)
        if encoding == "base64":
            vector = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()  # type: ignore[misc]
        data.append({"object": "embedding", "index": i, "embedding": vector})
    tokens = sum(len(text.split()) for text in texts)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return _Embeddings({"object": "list", "data": data, "model": model, "usage": usage}, texts[0])


def _json_refusal(response_format: object, messages: list[Any]) -> str | None:
    """DeepSeek's answer to a ``response_format`` it does not take (its JSON mode guide,
    api-docs.deepseek.com/guides/json_mode; the messages as in public reports)."""
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_schema":
        return "This response_format type is unavailable now"
    words = " ".join(_text_of(m.get("content")) for m in messages if isinstance(m, dict)).lower()
    if kind == "json_object" and "json" not in words:
        return "Prompt must contain the word 'json' in some form to use 'response_format' of type 'json_object'."
    return None


def _refusal(body: Mapping[str, Any], behaviours: set[str]) -> dict[str, Any] | None:
    """The 400 a provider profile answers to what the real provider rejects, with the
    body it sends; and the reasoning a thinking profile adds to ``behaviours``."""
    messages = body.get("messages")
    messages = [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
    thinking = body.get("thinking") != {"type": "disabled"}
    if "deepseek-thinking" in behaviours:
        text = _json_refusal(body.get("response_format"), messages)
        if text is not None:
            return _error_body(text, "invalid_request_error", "invalid_request_error")
    if "zhipu-thinking" in behaviours:
        for i, message in enumerate(messages):
            if message.get("role") == "assistant" and not message.get("content") and not message.get("tool_calls"):
                # AgentEra/Agently#76: the code and message as Zhipu sends them
                return {"error": {"code": "1214", "message": f"messages[{i}]:content和tool_calls 字段不能同时为空"}}
    if "moonshot-thinking" in behaviours and "temperature" in body:
        allowed = 1 if thinking else 0.6  # platform.kimi.com/docs/api/models-overview
        if body["temperature"] != allowed:
            return {
                "error": {
                    "message": f"invalid temperature: only {allowed} is allowed for this model",
                    "type": "invalid_request_error",
                }
            }
    for profile in sorted(behaviours & _THINKING.keys()):
        if not thinking:
            break
        behaviours.add("reasoning")
        refusal = _THINKING[profile]
        dropped = (i for i, m in enumerate(messages) if m.get("tool_calls") and not m.get("reasoning_content"))
        index = next(dropped, None)
        if refusal is not None and index is not None:
            return _error_body(refusal.format(index), "invalid_request_error", "invalid_request_error")
    if "qwen-thinking" in behaviours and body.get("enable_thinking") is not False:
        if not body.get("stream"):
            # alibabacloud.com/help/en/model-studio/error-code
            text = "parameter.enable_thinking must be set to false for non-streaming calls"
            return _error_body(text, "invalid_request_error", "invalid_parameter_error")
        behaviours.add("reasoning")
    return None


def _compose(body: Mapping[str, Any], behaviours: set[str]) -> _Reply:
    model = body.get("model")
    messages = body.get("messages")
    if not isinstance(model, str) or not model:
        raise _BadRequest("'model' is required")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise _BadRequest("'messages' must be a non-empty list of objects")
    prompt_tokens = words_and_four(messages)
    last_user = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    if "echo" in behaviours:
        text = last_user
    else:
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or _DEFAULT_TOKENS
        n = max(1, min(int(limit), 4096)) if isinstance(limit, int) else _DEFAULT_TOKENS
        text = " ".join(itertools.islice(itertools.cycle(_TEXT), n))
    reasoning = tuple(_TOKEN.findall(f"Thinking about: {last_user}")) if "reasoning" in behaviours else ()
    tools = body.get("tools")
    tool_call = None
    answered = messages[-1].get("role") == "tool"  # a tool's result came back: answer in words
    if ("tools" in behaviours or tools) and isinstance(tools, list) and tools and not answered:
        function = tools[0].get("function") if isinstance(tools[0], dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise _BadRequest("tools[0].function.name must be a string")
        call_id = "call_" + hashlib.sha256(last_user.encode()).hexdigest()[:24]
        tool_call = {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": json.dumps({"input": last_user})},
        }
    pieces = () if tool_call else tuple(_TOKEN.findall(text))
    return _Reply(model, pieces, reasoning, tool_call, prompt_tokens, last_user)


def _completion(reply: _Reply, completion_id: str, created: int) -> dict[str, Any]:
    """The unary reply's JSON."""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(reply.pieces) or None}
    if reply.reasoning:
        message["reasoning_content"] = "".join(reply.reasoning)
    if reply.tool_call:
        message["tool_calls"] = [reply.tool_call]
    finish = "tool_calls" if reply.tool_call else "stop"
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": reply.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": reply.usage(),
    }


class FakeServer:
    """Serve the fake API on ``host:port`` (port 0: any free port) until closed.

    Use as ``async with FakeServer() as server: server.base_url``. It runs on the event
    loop that starts it. With ``ssl`` (a server-side `ssl.SSLContext`) it serves HTTPS.
    """

    def __init__(
        self,
        options: FakeServerOptions | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl: SSLContext | None = None,
    ) -> None:
        self.options = options or FakeServerOptions()
        self._host = host
        self._port = port
        self._ssl = ssl
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.requests_served = 0
        self.connections_opened = 0
        # Successful replies by prompt, of the latest prompts answered (see the module's docstring).
        self.answered: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.active = 0  # chat calls being answered
        self.peak_active = 0
        # The headers and targets (path and query) of the latest requests, for tests
        # that check what was sent.
        self.seen_headers: collections.deque[dict[str, str]] = collections.deque(maxlen=256)
        self.seen_targets: collections.deque[str] = collections.deque(maxlen=256)
        # The JSON bodies of the latest chat requests, for tests that check what a
        # conversation sent back (fewer: a body may be large).
        self.seen_bodies: collections.deque[dict[str, Any]] = collections.deque(maxlen=32)
        # When each of the latest chat requests arrived (time.monotonic()), for tests of
        # rate limits as the server sees them.
        self.arrivals: collections.deque[float] = collections.deque(maxlen=100_000)
        # Over TLS: the protocol each connection's ALPN chose ("h2", "http/1.1"), or None.
        self.alpn_protocols: list[str | None] = []
        self._attempts: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.batches = FakeBatches(self._answer_batch_line, self.options.clock)

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        if self._server is None:
            raise RuntimeError("server is not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self._ssl else 'http'}://{host}:{port}/v1"

    @property
    def open_connections(self) -> int:
        """Connections open now (a client's pool keeps its idle ones open)."""
        return len(self._connections)

    async def start(self) -> FakeServer:
        self._server = await asyncio.start_server(self._connection, self._host, self._port, backlog=2048, ssl=self._ssl)
        return self

    async def aclose(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> FakeServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    # -- connection handling ------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.connections_opened += 1
        tls = writer.get_extra_info("ssl_object")
        if tls is not None:
            self.alpn_protocols.append(tls.selected_alpn_protocol())
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = await self._read_request(conn, reader)
                if request is None:
                    break
                exchange = _Exchange(conn, writer, request, body)
                try:
                    keep_open = await self._respond(exchange, body)
                except Exception as exc:  # a fault of the fake itself: answer 500, never just hang up
                    if conn.our_state is not h11.SEND_RESPONSE:
                        raise
                    await exchange.send_json(500, _error_body(f"fake server failed: {exc!r}", "server_error"))
                    break
                if not keep_open or conn.our_state is h11.MUST_CLOSE:
                    break
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # aclose() cancels open connections; end quietly so that asyncio's
            # start_server callback does not log the cancellation as an error.
            pass
        finally:
            self._connections.discard(task)
            writer.close()  # no wait_closed(): a cancelled connection must not await again

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[h11.Request | None, bytes]:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > _MAX_BODY:
                    raise h11.RemoteProtocolError("request body too large")
            elif isinstance(event, h11.EndOfMessage):
                return request, bytes(body)
            else:  # ConnectionClosed, or PAUSED after a protocol switch we never agree to
                return None, b""

    async def _respond(self, ex: _Exchange, raw_body: bytes) -> bool:
        self.requests_served += 1
        method, target = ex.request.method.decode(), ex.request.target.decode()
        path = target.split("?")[0]
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in ex.request.headers}
        self.seen_headers.append(headers)
        self.seen_targets.append(target)
        if self.options.api_key is not None and headers.get("authorization") != f"Bearer {self.options.api_key}":
            await ex.send_json(
                401, _error_body("Incorrect API key provided", "invalid_request_error", "invalid_api_key")
            )
            return True
        if method == "GET" and path == "/v1/fake/stats":
            await ex.send_json(200, {"answered": dict(self.answered), "requests_served": self.requests_served})
            return True
        if method == "GET" and path == "/v1/models":
            names = [*EMBEDDING_MODELS, *BEHAVIOURS]
            data = [{"id": name, "object": "model", "owned_by": "llmadapters"} for name in names]
            await ex.send_json(200, {"object": "list", "data": data})
            return True
        if path.startswith(("/v1/files", "/v1/batches")):
            await self.batches.handle(ex, method, target, headers, raw_body)
            return True
        if path not in ("/v1/chat/completions", "/v1/embeddings"):
            await ex.send_json(404, _error_body(f"no route {method} {path}", "invalid_request_error"))
            return True
        if method != "POST":
            await ex.send_json(405, _error_body(f"{method} not allowed", "invalid_request_error"))
            return True
        self.arrivals.append(time.monotonic())
        try:
            body = json.loads(raw_body)
            if not isinstance(body, dict):
                raise _BadRequest("the body must be a JSON object")
            self.seen_bodies.append(body)
            behaviours = set(str(body.get("model", "")).split("+"))
            behaviours.update(b.strip() for b in headers.get("x-fake-behaviour", "").split(",") if b.strip())
            failing = True
            if "x-fake-fail-times" in headers and self._attempt(headers) > _number(headers, "x-fake-fail-times", 0):
                behaviours &= _QUIRKS
                failing = False
            ex.error_status = int(_number(headers, "x-fake-error-status", 0)) if failing else 0
            if "leak-key" in behaviours:
                ex.leak = _credential(headers)
            accepted = {coding.split(";")[0].strip() for coding in headers.get("accept-encoding", "").split(",")}
            ex.gzip = "gzip" in behaviours and "gzip" in accepted
            reply: _Reply | _Embeddings
            if path == "/v1/embeddings":
                reply = _embeddings(body)
            else:
                refusal = _refusal(body, behaviours)
                if refusal is not None:
                    await ex.send_json(400, refusal)
                    return True
                reply = _compose(body, behaviours)
            ex.stall = _number(headers, "x-fake-stall-s", 3600)
            ex.ttft = _number(headers, "x-fake-ttft-ms", self.options.ttft * 1000) / 1000
            ex.tps = _number(headers, "x-fake-tps", self.options.tokens_per_s or 0.0) or None
        except (ValueError, _BadRequest) as exc:
            await ex.send_json(400, _error_body(f"invalid request: {exc}", "invalid_request_error"))
            return True
        return await self._chat(ex, body, reply, behaviours, headers)

    def _answer_batch_line(self, body: object) -> tuple[int, dict[str, Any]]:
        """A batch line's answer, as a unary chat call with the same body gets it (its
        model's failures included; faults of the connection do not apply)."""
        if not isinstance(body, dict):
            return 400, _error_body("invalid request: the body must be a JSON object", "invalid_request_error")
        behaviours = set(str(body.get("model", "")).split("+"))
        refusal = _refusal(body, behaviours)
        if refusal is not None:
            return 400, refusal
        for name, (status, error) in _STATUS_ERRORS.items():
            if name in behaviours:
                return status, error
        try:
            reply = _compose(body, behaviours)
        except _BadRequest as exc:
            return 400, _error_body(f"invalid request: {exc}", "invalid_request_error")
        self._count_answer(reply.prompt)
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]
        return 200, _completion(reply, f"chatcmpl-{digest}", int(self.options.clock()))

    def _count_answer(self, prompt: str) -> None:
        if len(prompt) > _MAX_PROMPT_KEY:
            prompt = "sha256:" + hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()
        self.answered[prompt] = self.answered.pop(prompt, 0) + 1
        if len(self.answered) > _MAX_TRACKED_PROMPTS:
            self.answered.popitem(last=False)

    def _attempt(self, headers: Mapping[str, str]) -> int:
        """Which attempt of its call this request is, by its Idempotency-Key."""
        key = headers.get("idempotency-key", "")
        count = self._attempts.pop(key, 0) + 1
        self._attempts[key] = count
        if len(self._attempts) > _MAX_TRACKED_CALLS:
            self._attempts.popitem(last=False)
        return count

    async def _chat(
        self,
        ex: _Exchange,
        body: dict[str, Any],
        reply: _Reply | _Embeddings,
        behaviours: set[str],
        headers: dict[str, str],
    ) -> bool:
        limit = self.options.max_concurrency
        if limit is not None and self.active >= limit:
            message = f"max organization concurrency: {limit}, please try again after 1 seconds"
            extra = [("retry-after", headers.get("x-fake-retry-after", "1"))]
            await ex.send_json(429, _error_body(message, "rate_limit_reached_error"), extra)
            return True
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        try:
            keep_open = await self._answer(ex, body, reply, behaviours, headers)
        finally:
            self.active -= 1
        if ex.conn.our_state is h11.DONE and not behaviours & _FAULTS and not ex.error_status:
            self._count_answer(reply.prompt)
        return keep_open

    async def _answer(
        self,
        ex: _Exchange,
        body: dict[str, Any],
        reply: _Reply | _Embeddings,
        behaviours: set[str],
        headers: dict[str, str],
    ) -> bool:
        if ex.error_status:
            await ex.send_bytes(ex.error_status, headers.get("x-fake-error-body", "").encode(), "application/json")
            return True
        for name, (status, error) in _STATUS_ERRORS.items():
            if name in behaviours:
                extra = [("retry-after", headers.get("x-fake-retry-after", "1"))] if status == 429 else []
                await ex.send_json(status, error, extra)
                return True
        if "error-200" in behaviours:
            await ex.send_json(200, _error_body("Quota exceeded (injected, with status 200)", "insufficient_quota"))
            return True
        if "redirect" in behaviours:
            location = headers.get("x-fake-redirect-to", "/v1/chat/completions")
            await ex.send_bytes(307, b"", "application/json", [("location", location)])
            return True
        if "html-502" in behaviours:
            page = _HTML_502.replace(b"</body>", f"<p>{ex.leak}</p></body>".encode()) if ex.leak else _HTML_502
            await ex.send_bytes(502, page, "text/html")
            return True
        if "reset" in behaviours:
            ex.reset()
            return False
        if "stall" in behaviours:
            await asyncio.sleep(ex.stall)
            return False
        hostile = behaviours & _HOSTILE.keys()
        if hostile:
            await _HOSTILE[min(hostile)](ex, bool(body.get("stream")))
            return False
        ttft, tps = ex.ttft, ex.tps
        completion_id = f"chatcmpl-{ex.digest}"
        if body.get("stream") and isinstance(reply, _Reply):
            await self._stream(ex, body, reply, behaviours, completion_id, ttft, tps)
            return "stall-mid-stream" not in behaviours
        await asyncio.sleep(ttft + (reply.completion_tokens / tps if tps else 0.0))
        return await self._unary(ex, reply, behaviours, completion_id)

    async def _unary(
        self, ex: _Exchange, reply: _Reply | _Embeddings, behaviours: set[str], completion_id: str
    ) -> bool:
        answer = (
            reply.body
            if isinstance(reply, _Embeddings)
            else _completion(reply, completion_id, int(self.options.clock()))
        )
        data = json.dumps(answer).encode()
        if "empty" in behaviours:
            data = b""
        elif "malformed" in behaviours:
            data = b"{this is not json"
        elif "truncate" in behaviours:
            data = data[: len(data) // 2]
        elif "keepalive" in behaviours:
            data = b"\n\n\n" + data
        if "reset-mid-body" in behaviours:
            await ex.start(200, "application/json", [("content-length", str(len(data)))])
            await ex.write(data[: len(data) // 2])
            ex.reset()
            return False
        await ex.send_bytes(200, data, "application/json", compress=True)
        return True

    async def _stream(
        self,
        ex: _Exchange,
        body: dict[str, Any],
        reply: _Reply,
        behaviours: set[str],
        completion_id: str,
        ttft: float,
        tps: float | None,
    ) -> None:
        eol = "\r\n" if "crlf" in behaviours else "\n"
        comment = (
            ": keep-alive" if "keepalive" in behaviours else ": PROCESSING" if "processing" in behaviours else None
        )
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        base = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(self.options.clock()),
            "model": reply.model,
        }

        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            chunk: dict[str, Any] = {
                **base,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                chunk["usage"] = None
            return f"data: {json.dumps(chunk)}{eol}{eol}".encode()

        await ex.start(200, "text/event-stream", [("cache-control", "no-cache")], compress=True)
        if "empty" in behaviours:
            await ex.end()
            return
        if comment:
            await ex.write(f"{comment}{eol}{eol}".encode())
        await asyncio.sleep(ttft)
        await ex.write(event({"role": "assistant", "content": ""}))
        if "stream-error" in behaviours:
            error = ex.leaky(_error_body("The server had an error while streaming (injected)", "server_error"))
            await ex.write(f"data: {json.dumps(error)}{eol}{eol}".encode())
            await ex.end()
            return
        if "stall-mid-stream" in behaviours:
            await asyncio.sleep(ex.stall)
            ex.reset()
            return
        if "malformed" in behaviours:
            await ex.write(f"data: {{this is not json{eol}{eol}".encode())
            await ex.end()
            return
        delay = 1.0 / tps if tps else 0.0
        for field, pieces in (("reasoning_content", reply.reasoning), ("content", reply.pieces)):
            for piece in pieces:
                if delay:
                    await asyncio.sleep(delay)
                await ex.write(event({field: piece}))
                if comment:
                    await ex.write(f"{comment}{eol}{eol}".encode())
        if reply.tool_call:
            call, args = reply.tool_call, reply.tool_call["function"]["arguments"]
            head = {
                "index": 0,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            await ex.write(event({"tool_calls": [head]}))
            for part in (args[: len(args) // 2], args[len(args) // 2 :]):
                await ex.write(event({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}))
        if "reset-mid-body" in behaviours:
            ex.reset()
            return
        if "truncate" not in behaviours:
            finish = "tool_calls" if reply.tool_call else "stop"
            if "usage-in-choice" in behaviours:
                last = {"index": 0, "delta": {}, "finish_reason": finish, "usage": reply.usage()}
                await ex.write(f"data: {json.dumps({**base, 'choices': [last]})}{eol}{eol}".encode())
            else:
                await ex.write(event({}, finish))
            if include_usage and "usage-in-choice" not in behaviours:
                usage = {**base, "choices": [], "usage": reply.usage()}
                await ex.write(f"data: {json.dumps(usage)}{eol}{eol}".encode())
            if "no-done" not in behaviours:
                await ex.write(f"data: [DONE]{eol}{eol}".encode())
        await ex.end()


_HUGE = 50 * 1024 * 1024
_MIB = b"a" * (1024 * 1024)


@functools.cache
def _gzip_bomb(stream: bool) -> bytes:
    """100 MB of zeros (after ``data: `` for a stream), gzipped to about 100 KB."""
    inflated = (b"data: " if stream else b"") + bytes(100 * 1024 * 1024)
    return gzip.compress(inflated, compresslevel=9)


async def _huge_body(ex: _Exchange, stream: bool) -> None:
    """A reply (a stream's chunk) whose content is 50 MB: only a body cap refuses it."""
    if stream:
        head, tail = b'data: {"choices": [{"index": 0, "delta": {"content": "', b'"}, "finish_reason": null}]}\n\n'
    else:
        head = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "'
        tail = b'"}, "finish_reason": "stop"}]}'
    size = len(head) + _HUGE + len(tail)
    await ex.start(200, "text/event-stream" if stream else "application/json", [("content-length", str(size))])
    await ex.write(head)
    for _ in range(_HUGE // len(_MIB)):
        await ex.write(_MIB)
    await ex.write(tail)
    await ex.end()


async def _bomb(ex: _Exchange, stream: bool) -> None:
    body = _gzip_bomb(stream)
    content_type = "text/event-stream" if stream else "application/json"
    await ex.send_bytes(200, body, content_type, [("content-encoding", "gzip")])


async def _huge_header(ex: _Exchange, stream: bool) -> None:
    await ex.send_bytes(200, b"{}", "application/json", [("x-padding", "p" * 200_000)])


async def _drip(ex: _Exchange, stream: bool) -> None:
    await ex.start(200, "text/event-stream" if stream else "application/json", [("content-length", "1000000")])
    deadline = asyncio.get_running_loop().time() + ex.stall
    while asyncio.get_running_loop().time() < deadline:
        await ex.write(b" ")
        await asyncio.sleep(0.2)
    ex.reset()


_HOSTILE: Mapping[str, Callable[[_Exchange, bool], Awaitable[None]]] = {
    "drip": _drip,
    "gzip-bomb": _bomb,
    "huge-body": _huge_body,
    "huge-header": _huge_header,
}


def _credential(headers: Mapping[str, str]) -> str:
    """The key a request carries, in any of the usual headers."""
    bearer = headers.get("authorization", "").removeprefix("Bearer ")
    return bearer or headers.get("api-key") or headers.get("x-api-key") or ""


class _Exchange:
    """One request/response on a connection."""

    def __init__(self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request, body: bytes) -> None:
        self.conn = conn
        self.writer = writer
        self.request = request
        # Derived from the request, so that the same request gets the same reply.
        self.digest = hashlib.sha256(body).hexdigest()[:24]
        self.request_id = f"req_{self.digest}"
        # The latency model and stall of this request, from its headers.
        self.ttft = 0.0
        self.tps: float | None = None
        self.stall = 3600.0
        self.error_status = 0
        self.leak = ""  # the request's key, to echo (the leak-key behaviour)
        self.gzip = False  # the gzip behaviour, asked by a request that accepts gzip
        self._deflate: Any = None  # a gzip stream's compressor, once started

    def leaky(self, error: dict[str, Any]) -> dict[str, Any]:
        """``error`` (``{"error": {"message": ...}}``), its message quoting the request's
        key when the leak-key behaviour is on, as some providers and proxies do."""
        if self.leak:
            error = {"error": {**error["error"], "message": f"{error['error']['message']} (key: {self.leak})"}}
        return error

    async def start(
        self, status: int, content_type: str, extra: Iterable[tuple[str, str]] = (), *, compress: bool = False
    ) -> None:
        """Send the status line and headers; with ``compress`` and the gzip behaviour,
        announce ``content-encoding: gzip`` and gzip what `write` sends after them."""
        if compress and self.gzip:
            extra = [*extra, ("content-encoding", "gzip")]
            self._deflate = zlib.compressobj(wbits=31)  # 31: the gzip format
        prefix = b"x-fake-reply-"
        echoed = [(k[len(prefix) :].decode(), v.decode()) for k, v in self.request.headers if k.startswith(prefix)]
        leaked = [("x-echo-credential", self.leak)] if self.leak else []
        headers: list[tuple[str, str]] = [
            ("content-type", content_type),
            ("x-request-id", self.leak or self.request_id),
            *leaked,
            *extra,
            *echoed,
        ]
        await self.write_raw(self.conn.send(h11.Response(status_code=status, headers=headers)))

    async def write(self, data: bytes) -> None:
        if self._deflate is not None:  # each write flushed whole, so that a stream stays live
            data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        await self.write_raw(self.conn.send(h11.Data(data=data)))

    async def write_raw(self, data: bytes | None) -> None:
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def end(self) -> None:
        if self._deflate is not None:
            tail, self._deflate = self._deflate.flush(), None
            await self.write_raw(self.conn.send(h11.Data(data=tail)))
        await self.write_raw(self.conn.send(h11.EndOfMessage()))

    async def send_bytes(
        self,
        status: int,
        data: bytes,
        content_type: str,
        extra: Iterable[tuple[str, str]] = (),
        *,
        compress: bool = False,
    ) -> None:
        """Send a whole reply; with ``compress`` and the gzip behaviour, gzipped."""
        if compress and self.gzip:
            data = gzip.compress(data, mtime=0)
            extra = [*extra, ("content-encoding", "gzip")]
        await self.start(status, content_type, [("content-length", str(len(data))), *extra])
        await self.write(data)
        await self.end()

    async def send_json(self, status: int, obj: object, extra: Iterable[tuple[str, str]] = ()) -> None:
        if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
            obj = self.leaky(obj)
        await self.send_bytes(status, json.dumps(obj).encode(), "application/json", extra)

    def reset(self) -> None:
        """Drop the connection with a TCP RST (SO_LINGER 0), not a clean FIN."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()
