"""The openai SDK's per-call options mean what they mean there, on every transport:
``extra_headers`` and ``extra_query`` go on this call's request, ``extra_body`` into its
body, ``timeout`` bounds its phases; none of them is a body field."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx2
import pytest

import llmadapters as la

if TYPE_CHECKING:
    from llmadapters.testing import FakeServer

MakeClient = Callable[..., la.AsyncClient]
MESSAGES = [{"role": "user", "content": "options"}]
OPTIONS = ("extra_headers", "extra_query", "extra_body", "timeout")


async def test_headers_query_and_body_of_one_call(
    make_client: MakeClient, fake_server: FakeServer, transport: str
) -> None:
    client = make_client(transport, headers={"x-team": "route", "x-kept": "yes"}, query={"api-version": "1"})
    reply = await client.chat.completions.create(
        model="local/echo",
        messages=MESSAGES,
        temperature=0.5,
        extra_headers={"x-team": "call", "x-trace": "t-1"},
        extra_query={"tag": "a b", "n": 2},
        extra_body={"temperature": 0.1, "thinking": {"type": "disabled"}},
        timeout=30,
    )
    assert reply.choices[0].message.content == "options"
    headers, target, body = fake_server.seen_headers[-1], fake_server.seen_targets[-1], fake_server.seen_bodies[-1]
    assert (headers["x-team"], headers["x-trace"], headers["x-kept"]) == ("call", "t-1", "yes")
    assert target == "/v1/chat/completions?api-version=1&tag=a+b&n=2"
    assert (body["temperature"], body["thinking"]) == (0.1, {"type": "disabled"})
    assert not set(OPTIONS) & set(body)
    # The next call is the route's own again.
    await client.chat.completions.create(model="local/echo", messages=MESSAGES)
    assert (fake_server.seen_headers[-1]["x-team"], fake_server.seen_targets[-1]) == (
        "route",
        "/v1/chat/completions?api-version=1",
    )


@pytest.mark.parametrize(
    "timeout", [0.3, {"read": 0.3}, httpx2.Timeout(5.0, read=0.3)], ids=["seconds", "dict", "httpx"]
)
async def test_a_per_call_timeout_bounds_that_call(make_client: MakeClient, transport: str, timeout: object) -> None:
    client = make_client(transport, headers={"x-fake-stall-s": "30"})
    with pytest.raises(la.APITimeoutError, match=r"read timeout on .*: no data from the server for 0.3 s"):
        await client.chat.completions.create(model="local/stall", messages=MESSAGES, timeout=timeout)
    assert (await client.chat.completions.create(model="local/echo", messages=MESSAGES)).choices


async def test_a_streamed_call_takes_them_too(make_client: MakeClient, fake_server: FakeServer, transport: str) -> None:
    client = make_client(transport)
    stream = await client.chat.completions.create(
        model="local/echo", messages=MESSAGES, stream=True, extra_headers={"x-s": "1"}, extra_body={"seed": 7}
    )
    assert (await stream.get_final_completion()).choices[0].message.content == "options"
    assert (fake_server.seen_headers[-1]["x-s"], fake_server.seen_bodies[-1]["seed"]) == ("1", 7)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"extra_headers": {"x-key": "sk-\u00e9"}}, ValueError, r"header 'x-key' has a name or value HTTP cannot send"),
        ({"extra_headers": {"x-n": 1}}, TypeError, r"header 'x-n' must be a string"),
        ({"extra_query": {"q": [1]}}, TypeError, r"extra_query: parameter 'q' must be a string or a number"),
        ({"extra_body": ["x"]}, TypeError, r"extra_body must be a dict"),
        ({"timeout": {"total": 3}}, TypeError, r"timeout: unknown phase 'total'"),
        ({"timeout": -1}, TypeError, r"timeout: expected a positive number"),
    ],
)
async def test_options_that_cannot_be_used_are_refused_before_sending(
    make_client: MakeClient, fake_server: FakeServer, options: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match) as caught:
        await make_client().chat.completions.create(model="local/echo", messages=MESSAGES, **options)
    assert "\u00e9" not in str(caught.value)  # a header's value may be a key: never quoted
    assert fake_server.requests_served == 0
