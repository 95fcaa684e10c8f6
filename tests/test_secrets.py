"""Recognisable keys for every installed provider, every failure kind, DEBUG logging on
everywhere: no key in logs, exception strings, reprs, batch output records or summaries."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from conftest import TRANSPORTS, answering, read_request, serving, test_registry

import llmadapters as la
from llmadapters.batch import BatchSummary, write_record
from llmadapters.middleware.auth import Scrubber
from llmadapters.plugins import Registry
from llmadapters.types import ResponseInfo

if TYPE_CHECKING:
    import asyncio

    from llmadapters.testing import FakeServer

MakeClient = Callable[..., la.AsyncClient]

FAILURES = (
    "echo",
    "fail-400",
    "fail-401",
    "fail-402",
    "fail-429",
    "fail-500",
    "html-502",
    "reset",
    "reset-mid-body",
    "truncate",
    "malformed",
    "empty",
    "error-200",
    "stream-error",
    "stall",
    "huge-header",
    "redirect",
)


async def test_no_key_anywhere(
    fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Every failure, with the server echoing the key it got (leak-key: in error
    messages, the HTML page, headers, x-request-id and stream error events), on every
    transport: no key anywhere."""
    registry = Registry.load(autoload=True)
    for name, factory in test_registry().transports.items():
        if name not in registry.transports:
            registry.add_transport(name, factory, supports=test_registry().transport_features[name])
    providers = {spec.name: spec for spec in registry.providers.values() if spec.api_key_env}
    assert {"openai", "deepseek", "zhipu", "zai", "mimo", "moonshot"} <= set(providers)
    keys = {}
    for name, spec in providers.items():
        keys[name] = f"sk-{name}-SECRET-{'x' * 12}-7f3a"
        assert spec.api_key_env is not None
        monkeypatch.setenv(spec.api_key_env, keys[name])
    caplog.set_level(logging.DEBUG)  # httpx2, httpcore, openai, aiohttp and ours
    headers = {"x-fake-stall-s": "1", "x-fake-retry-after": "0", "x-fake-redirect-to": "http://127.0.0.1:9/v1"}
    settings = {
        name: {"base_url": fake_server.base_url, "headers": headers, "timeout": {"read": 0.3}} for name in providers
    }
    seen: list[str] = []
    out = io.StringIO()
    summary = BatchSummary()
    config = {"defaults": {"retry": {"max_attempts": 2, "initial_delay": 0.001, "max_delay": 0.001}}}
    for transport in TRANSPORTS:
        # A client per failure: a 401 or 402 retires the key, and later calls would
        # then fail without reaching the server.
        for failure in FAILURES:
            async with la.AsyncClient(config, transport=transport, providers=settings, registry=registry) as client:
                rows = [
                    {"model": f"{name}/echo+leak-key+{failure}", "messages": [{"role": "user", "content": "hi"}]}
                    for name in providers
                ]
                # line_deadline: a line answered 429 ends as an error record after 1 s.
                async for result in client.batch(rows, concurrency=16, line_deadline=1.0):
                    write_record(out, result)
                    summary.add(result)
                    seen += [repr(result), str(result.error), repr(result.error)]
                    if result.error is not None:
                        error = result.error
                        seen += [repr(getattr(error, "body", None)), repr(getattr(error, "headers", None))]
                        seen += [repr(result.error.__cause__), repr(result.error.__context__)]
                    if result.response is not None and result.response.http is not None:
                        seen += [repr(result.response.http.headers), str(result.response.http.request_id)]
                route = await client.route("deepseek")
                seen += [repr(route), repr(route.endpoint), repr(route.middleware), repr(client.settings)]
        async with la.AsyncClient(config, transport=transport, providers=settings, registry=registry) as client:
            for name in providers:
                for stream in (False, True):
                    try:
                        reply = await client.chat.completions.create(
                            model=f"{name}/echo+leak-key+stream-error",
                            messages=[{"role": "user", "content": "hi"}],
                            stream=stream,
                        )
                        if isinstance(reply, la.ChatCompletionStream):
                            async for _ in reply:
                                pass
                    except la.LLMAdapterError as exc:
                        seen += [str(exc), repr(exc), repr(getattr(exc, "body", None))]
    # The keys did reach the server, and it echoed them, so the check below is not vacuous.
    sent = {h.get("authorization") or h.get("api-key") for h in fake_server.seen_headers}
    assert any(keys["deepseek"] in (value or "") for value in sent)
    seen += [out.getvalue(), json.dumps(summary.as_dict()), caplog.text]
    assert summary.done == len(TRANSPORTS) * len(providers) * len(FAILURES)
    assert len(caplog.records) > 100
    text = "\n".join(seen)
    assert "****7f3a" in text  # the echoed keys, masked
    for name, key in keys.items():
        where = text.find(key)
        assert where < 0, (name, text[max(0, where - 600) : where + 100])
        assert key[-12:] not in text, name  # nor a tail of it


KEY = "sk-live-SECRETSECRETSECRET0123456789abcdefXYZ"


def _straddling(limit: int, before: str = "") -> str:
    """Text whose excerpt of ``limit`` characters would end inside ``KEY``."""
    return before + "y" * (limit - 20 - len(before)) + KEY + " and more"


# What a server echoes, cut where the error message quotes it: a gateway's HTML page and
# a FastAPI-style ``detail`` (300 characters of an error body), a 2xx body that is not
# JSON and a stream event that is not JSON (200 characters).
_CUT_REPLIES = {
    "html-502": (502, "text/html", _straddling(300, "<html><body><pre>").encode(), False),
    "detail-401": (401, "application/json", json.dumps({"detail": _straddling(300 - 12)}).encode(), False),
    "text-200": (200, "text/html", _straddling(200).encode(), False),
    "event-200": (200, "text/event-stream", f"data: {_straddling(200)}\n\n".encode(), True),
}


@pytest.mark.parametrize("reply", list(_CUT_REPLIES))
async def test_an_echoed_key_that_an_excerpt_would_cut_is_masked_whole(
    make_client: MakeClient, transport: str, reply: str
) -> None:
    """The error message quotes the first few hundred characters of what the server sent;
    a key at the cut is quoted whole, so that it is masked, not cut to a prefix the
    scrubber cannot know."""
    status, content_type, body, stream = _CUT_REPLIES[reply]
    async with answering(status, content_type, body) as base_url:
        client = make_client(transport, base_url=base_url, api_key=KEY)
        with pytest.raises(la.LLMAdapterError) as caught:
            await client.chat.completions.create(
                model="local/m", messages=[{"role": "user", "content": "x"}], stream=stream
            )
    shown = f"{caught.value} {caught.value!r} {getattr(caught.value, 'body', '')!r}"
    assert "****fXYZ" in str(caught.value)
    assert KEY[:12] not in shown


async def test_a_key_given_in_code_is_sent_and_masked_without_the_spaces_around_it(
    fake_server: FakeServer, make_client: MakeClient, transport: str
) -> None:
    """A server takes the spaces off a header's value; the key it echoes is the stripped
    one, so that is the one sent and masked."""
    client = make_client(transport, api_key=f" {KEY} \n")
    with pytest.raises(la.AuthenticationError) as caught:
        await client.chat.completions.create(
            model="local/fail-401+leak-key", messages=[{"role": "user", "content": "x"}]
        )
    assert fake_server.seen_headers[-1]["authorization"] == f"Bearer {KEY}"
    assert KEY[:12] not in f"{caught.value} {caught.value!r} {caught.value.headers!r}"
    assert "****fXYZ" in str(caught.value)


async def test_a_call_with_its_own_key_retires_none_of_the_route_s_keys(
    fake_server: FakeServer, make_client: MakeClient, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``extra_headers`` that replace the auth header send the call's own key: a 401 for
    it leaves the configured key in use, and the server's echo of it is masked."""
    own = "sk-tenant-OWNKEY-0123456789-abcd"
    caplog.set_level(logging.DEBUG)  # httpx2, httpcore, openai, aiohttp and ours
    client = make_client(transport, api_key=KEY)
    with pytest.raises(la.AuthenticationError) as caught:
        await client.chat.completions.create(
            model="local/fail-401+leak-key",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"authorization": f"Bearer {own}"},
        )
    assert fake_server.seen_headers[-1]["authorization"] == f"Bearer {own}"
    assert own[:12] not in f"{caught.value} {caught.value!r} {caught.value.headers!r} {caught.value.body!r}"
    assert own[:12] not in caplog.text
    assert "****abcd" in str(caught.value)
    reply = await client.chat.completions.create(model="local/echo", messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content
    assert fake_server.seen_headers[-1]["authorization"] == f"Bearer {KEY}"


def test_a_short_placeholder_key_is_masked_only_as_a_word_of_its_own() -> None:
    """``api_key="x"`` (a local server's placeholder) leaves ``max_tokens`` alone."""
    scrubber = Scrubber.of_auth(["Bearer x"])
    assert scrubber.text("max_tokens is x (Bearer x), not 1x") == "max_tokens is **** (****), not 1x"
    assert not scrubber.holds("max_tokens")


def test_scrubbed_headers_are_still_found_case_insensitively() -> None:
    """Headers rebuilt to mask a key keep the lookups `ResponseInfo` promises (lower-case
    names), and the info's other fields."""
    info = ResponseInfo(200, {"X-Request-Id": KEY, "X-RateLimit-Remaining-Requests": "9"}, attempts=3)
    scrubbed = Scrubber.of_auth([KEY]).info(info)
    assert scrubbed.request_id == "****fXYZ"
    assert scrubbed.headers.get("x-ratelimit-remaining-requests") == "9"
    assert scrubbed.attempts == 3


async def test_a_key_given_as_a_configured_header_is_masked_too(
    fake_server: FakeServer, make_client: MakeClient, transport: str
) -> None:
    """No api_key, the credential in ``providers.X.headers`` (a gateway's own header):
    a server's echo of it is masked as a key's is."""
    client = make_client(transport, headers={"x-api-key": KEY})
    with pytest.raises(la.AuthenticationError) as caught:
        await client.chat.completions.create(
            model="local/fail-401+leak-key", messages=[{"role": "user", "content": "x"}]
        )
    assert fake_server.seen_headers[-1]["x-api-key"] == KEY
    assert KEY[:12] not in f"{caught.value} {caught.value!r} {caught.value.headers!r} {caught.value.body!r}"
    assert "****fXYZ" in str(caught.value)


async def test_a_credential_in_a_configured_header_beside_a_key_is_masked_too(transport: str) -> None:
    """An api_key, and a gateway's own credential in ``providers.X.headers``: a server's
    echo of the header's is masked as the key's is (it is sent on every call)."""
    gateway = "gw-SECRETSECRET0123456789abcdefQRS"

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_request(reader)
        echoed = re.search(rb"x-api-key: *([^\r]+)", head, re.IGNORECASE)
        body = b'{"error": {"message": "the gateway refused %s"}}' % (echoed[1] if echoed else b"nothing")
        writer.write(b"HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\nconnection: close\r\n")
        writer.write(b"content-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    async with serving(answer) as base_url:
        providers = {"gw": {"base_url": base_url, "api_key": KEY, "headers": {"x-api-key": gateway}}}
        async with la.AsyncClient({}, transport=transport, providers=providers, registry=test_registry()) as client:
            with pytest.raises(la.APIStatusError) as caught:
                await client.chat.completions.create(model="gw/m", messages=[{"role": "user", "content": "x"}])
    shown = f"{caught.value} {caught.value!r} {caught.value.body!r}"
    assert "the gateway refused ****fQRS" in str(caught.value)
    assert gateway[:12] not in shown
