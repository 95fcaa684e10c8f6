"""Differential tests: the same bytes on the wire give equal values and equal errors
through every transport, over real loopback HTTP to the fake server."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

import pytest

import llmadapters as la
from llmadapters.testing import FakeServer
from tests.conftest import TRANSPORTS, answering

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello fake world"}]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]

MakeClient = Callable[..., la.AsyncClient]


async def _collect(client: la.AsyncClient, model: str, stream: bool, **params: Any) -> Any:
    if not stream:
        return await client.chat.completions.create(model=f"local/{model}", messages=MESSAGES, **params)
    chunks = await client.chat.completions.create(model=f"local/{model}", messages=MESSAGES, stream=True, **params)
    return [chunk async for chunk in chunks]


async def _outcome(client: la.AsyncClient, model: str, stream: bool, **params: Any) -> Any:
    """The value, or a comparable description of the error."""
    try:
        return await _collect(client, model, stream, **params)
    except la.LLMAdapterError as exc:
        fields = {k: getattr(exc, k) for k in ("status", "provider", "body", "retry_after") if hasattr(exc, k)}
        return type(exc), str(exc), fields


async def _across_transports(make_client: MakeClient, model: str, stream: bool, **params: Any) -> list[Any]:
    return [await _outcome(make_client(t), model, stream, **params) for t in TRANSPORTS]


SUCCESS_CASES = [
    ("echo", {}),
    ("lorem", {"max_tokens": 40}),
    ("echo+reasoning", {}),
    ("echo+keepalive", {}),
    ("echo+processing", {}),
    ("echo+crlf", {}),
    ("echo", {"tools": TOOLS}),
    ("echo", {"stream_options": {"include_usage": True}}),
]


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize(("model", "params"), SUCCESS_CASES, ids=[f"{m}-{sorted(p)}" for m, p in SUCCESS_CASES])
async def test_transports_yield_equal_values(make_client: MakeClient, model: str, params: Any, stream: bool) -> None:
    first, *others = await _across_transports(make_client, model, stream, **params)
    assert not isinstance(first, tuple), first
    for other in others:
        assert other == first


async def test_values_carry_what_the_server_sent(make_client: MakeClient, transport: str) -> None:
    client = make_client(transport)
    reply = await client.chat.completions.create(model="local/echo+reasoning", messages=MESSAGES)
    assert reply.provider == "local"
    assert reply.choices[0].message.content == "hello fake world"
    assert reply.choices[0].message.reasoning_content == "Thinking about: hello fake world"
    assert reply.usage == la.Usage(prompt_tokens=13, completion_tokens=8, total_tokens=21)
    assert reply.raw["choices"][0]["message"]["content"] == "hello fake world"

    tool = await client.chat.completions.create(model="local/echo", messages=MESSAGES, tools=TOOLS)
    assert tool.choices[0].finish_reason == "tool_calls"
    calls = tool.choices[0].message.tool_calls
    assert calls is not None
    assert calls[0].function == la.FunctionCall(name="lookup", arguments='{"input": "hello fake world"}')


async def test_stream_pieces_add_up(make_client: MakeClient, transport: str) -> None:
    client = make_client(transport)
    stream = await client.chat.completions.create(
        model="local/echo+reasoning+keepalive",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join(c.choices[0].delta.reasoning_content or "" for c in chunks if c.choices)
    assert (content, reasoning) == ("hello fake world", "Thinking about: hello fake world")
    assert chunks[-1].choices == ()
    assert chunks[-1].usage == la.Usage(prompt_tokens=13, completion_tokens=8, total_tokens=21)
    assert all(c.provider == "local" for c in chunks)

    tools = await client.chat.completions.create(model="local/echo", messages=MESSAGES, tools=TOOLS, stream=True)
    args = "".join(
        [
            call.function.arguments or ""
            async for c in tools
            for call in (c.choices[0].delta.tool_calls or ())
            if call.function is not None
        ]
    )
    assert args == '{"input": "hello fake world"}'


FAULTS = [
    ("fail-400", la.BadRequestError),
    ("fail-401", la.AuthenticationError),
    ("fail-429", la.RateLimitError),
    ("fail-500", la.ServerError),
    ("fail-503", la.ServerError),
    ("html-502", la.ServerError),
    ("reset", la.TransportError),
    ("reset-mid-body", la.TransportError),
    ("truncate", None),  # unary: MalformedResponseError; stream: StreamError
    ("malformed", None),
    ("empty", None),
    ("stream-error", None),
]
# A stream cut after its first chunk is truncated, whichever way its connection broke.
STREAMED = {"reset-mid-body": la.StreamError}


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize(("fault", "expected"), FAULTS, ids=[f for f, _ in FAULTS])
async def test_transports_raise_equal_errors(
    make_client: MakeClient, fault: str, expected: type[Exception] | None, stream: bool
) -> None:
    outcomes = await _across_transports(make_client, f"echo+{fault}", stream)
    if fault == "stream-error" and not stream:  # a unary reply has no in-band events
        assert all(isinstance(o, la.ChatCompletion) for o in outcomes)
        return
    if expected is None:
        expected = la.StreamError if stream else la.MalformedResponseError
    elif stream:
        expected = STREAMED.get(fault, expected)
    kind, _, fields = outcomes[0]
    assert issubclass(kind, expected), outcomes[0]
    if issubclass(kind, la.TransportError):
        # The native messages differ by HTTP client; the class must not.
        assert {o[0] for o in outcomes} == {kind}, outcomes
    else:
        assert outcomes == [outcomes[0]] * len(outcomes)
    if issubclass(kind, la.APIStatusError):
        assert fields["provider"] == "local"
        assert fields["status"] == int(fault.split("-")[1])


async def test_rate_limit_error_fields(make_client: MakeClient, transport: str) -> None:
    client = make_client(transport, headers={"x-fake-retry-after": "2.5"})
    with pytest.raises(la.RateLimitError) as info:
        await client.chat.completions.create(model="local/fail-429", messages=MESSAGES)
    err = info.value
    assert (err.status, err.retry_after, err.code) == (429, 2.5, "rate_limit_exceeded")
    assert err.request_id is not None
    assert err.request_id.startswith("req_")
    assert err.body == {
        "error": {
            "message": "Rate limit reached (injected)",
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }


async def test_html_error_page_becomes_text_body(make_client: MakeClient, transport: str) -> None:
    with pytest.raises(la.ServerError) as info:
        await make_client(transport).chat.completions.create(model="local/html-502", messages=MESSAGES)
    assert isinstance(info.value.body, str)
    assert "502 Bad Gateway" in info.value.body
    assert "502 Bad Gateway" in str(info.value)


async def test_connect_refused(make_client: MakeClient, transport: str) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = make_client(transport, base_url=f"http://127.0.0.1:{port}/v1")
    for stream in (False, True):
        with pytest.raises(la.ConnectError, match=f"127.0.0.1:{port}"):
            await client.chat.completions.create(model="local/echo", messages=MESSAGES, stream=stream)


async def test_dns_failure(make_client: MakeClient, transport: str, failing_dns: str) -> None:
    client = make_client(transport, base_url=f"http://{failing_dns}/v1")
    with pytest.raises(la.ConnectError, match=failing_dns):
        await client.chat.completions.create(model="local/echo", messages=MESSAGES)


@pytest.mark.parametrize("fault", ["stall", "stall-mid-stream"])
async def test_read_timeout(make_client: MakeClient, transport: str, fault: str) -> None:
    client = make_client(transport, timeout={"read": 0.3}, headers={"x-fake-stall-s": "5"})
    # The read timeout's words, not the stall's end (5 s, then a reset), ended the call.
    with pytest.raises(la.APITimeoutError, match=r"^read timeout on .*\(timeout.read\)$"):
        await _collect(client, f"echo+{fault}", stream=True)


async def test_thousand_concurrent_requests(make_client: MakeClient, transport: str) -> None:
    # A thousand connections opened at once to a server on the same event loop: give the
    # connects room on a busy two-core machine; what this test checks is that none is lost.
    client = make_client(transport, timeout={"connect": 60})
    n = 1000

    async def one(i: int) -> str | None:
        messages = [{"role": "user", "content": f"request {i}"}]
        if i % 2:
            reply = await client.chat.completions.create(model="local/echo", messages=messages)
            return reply.choices[0].message.content
        stream = await client.chat.completions.create(model="local/echo", messages=messages, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream])

    results = await asyncio.gather(*(one(i) for i in range(n)))
    assert results == [f"request {i}" for i in range(n)]


async def test_streams_reuse_their_connection(make_client: MakeClient, fake_server: FakeServer, transport: str) -> None:
    client = make_client(transport)
    before = fake_server.connections_opened
    for _ in range(20):
        await _collect(client, "echo", stream=True)
    # Read to the end of the chunked body after [DONE], so HTTP/1.1 keeps the connection.
    assert fake_server.connections_opened - before == 1


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_an_error_sent_with_status_200_is_an_error(make_client: MakeClient, stream: bool) -> None:
    outcomes = await _across_transports(make_client, "echo+error-200", stream)
    kind, message, fields = outcomes[0]
    assert kind is (la.StreamError if stream else la.MalformedResponseError)
    assert "Quota exceeded (injected, with status 200)" in message
    assert fields["body"]["error"]["type"] == "insufficient_quota"
    assert outcomes == [outcomes[0]] * len(outcomes)


@pytest.mark.parametrize(
    "body",
    [
        {"id": "x", "choices": None, "base_resp": {"status_code": 1004, "status_msg": "login fail"}},  # MiniMax
        {"success": False, "msg": "rejected"},
        {"id": "x", "object": "chat.completion", "choices": []},
    ],
    ids=["minimax", "success-false", "no-choices"],
)
async def test_a_2xx_reply_without_choices_is_malformed(make_client: MakeClient, body: dict[str, Any]) -> None:
    """Not a chat completion, whatever its status says: a batch line must not end as an
    empty success."""
    async with answering(200, "application/json", json.dumps(body).encode()) as base_url:
        outcomes = [
            await _outcome(make_client(transport, base_url=base_url), "m", stream=False) for transport in TRANSPORTS
        ]
    kind, message, fields = outcomes[0]
    assert kind is la.MalformedResponseError
    assert message.startswith("a 2xx reply from local without choices: ")
    assert fields["body"] == body
    assert outcomes == [outcomes[0]] * len(outcomes)


@pytest.mark.parametrize(
    ("params", "why"),
    [
        ({"temperature": float("nan")}, "Out of range float values are not JSON compliant"),
        ({"messages": [{"role": "user", "content": "half \ud83d a pair"}]}, "a lone surrogate '\\ud83d'"),
    ],
    ids=["nan", "lone-surrogate"],
)
async def test_a_body_json_cannot_carry_is_a_bad_request_sent_nowhere(
    make_client: MakeClient, fake_server: FakeServer, params: dict[str, Any], why: str
) -> None:
    before = fake_server.requests_served
    messages: list[str] = []
    for transport in TRANSPORTS:
        with pytest.raises(la.BadRequestError) as caught:
            await make_client(transport).chat.completions.create(
                **{"model": "local/echo", "messages": MESSAGES, **params}
            )
        messages.append(str(caught.value))
    assert messages[0].startswith("invalid request: the body cannot be sent as JSON: ")
    assert why in messages[0]
    assert messages == [messages[0]] * len(messages)
    assert fake_server.requests_served == before


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_a_body_that_is_not_the_gzip_it_claims_is_a_decoding_error(make_client: MakeClient, stream: bool) -> None:
    """Worded alike on every transport (aiohttp's own words say the connection broke)."""
    async with answering(200, "application/json", b"not gzip at all", b"content-encoding: gzip\r\n") as base_url:
        outcomes = [await _outcome(make_client(transport, base_url=base_url), "m", stream) for transport in TRANSPORTS]
    kind, message, _ = outcomes[0]
    assert kind is la.TransportError
    assert "the body does not decode as its content-encoding says: Error -3 while decompressing" in message
    assert outcomes == [outcomes[0]] * len(outcomes)


async def test_a_server_that_ignores_stream_true_still_gives_its_answer(make_client: MakeClient) -> None:
    reply = {
        "id": "x",
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
    }
    async with answering(200, "application/json", json.dumps(reply).encode()) as base_url:
        for transport in TRANSPORTS:
            stream = await make_client(transport, base_url=base_url).chat.completions.create(
                model="local/m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
            final = await stream.get_final_completion()
            assert (final.choices[0].message.content, final.choices[0].finish_reason) == ("whole", "stop"), transport
            assert final.usage is not None
            assert final.usage.total_tokens == 3


async def test_environment_does_not_leak_into_requests(
    make_client: MakeClient, fake_server: FakeServer, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK reads these from the environment; they belong to OpenAI, not to every provider.
    monkeypatch.setenv("OPENAI_ORG_ID", "org-should-not-be-sent")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-should-not-be-sent")
    await _collect(make_client(transport), "echo", stream=False)
    sent = fake_server.seen_headers[-1]
    assert "openai-organization" not in sent
    assert "openai-project" not in sent


async def test_redirects_are_not_followed_so_keys_stay_home(make_client: MakeClient, transport: str) -> None:
    async with FakeServer() as elsewhere:
        target = f"{elsewhere.base_url}/chat/completions"
        client = make_client(transport, api_key="sk-stays-home", headers={"x-fake-redirect-to": target})
        for stream in (False, True):
            with pytest.raises(la.APIStatusError) as info:
                await _collect(client, "echo+redirect", stream)
            assert info.value.status == 307
            assert info.value.headers["location"] == target
        assert elsewhere.requests_served == 0
