"""Middleware against the fake server's fault injection, over real loopback HTTP.

Retry waits are recorded instead of slept (``RetryMiddleware(sleep=...)``), so the
tables run in virtual time.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import pytest

import llmadapters as la
from llmadapters.middleware import (
    Call,
    CallNext,
    LoggingMiddleware,
    Reply,
    RetryMiddleware,
    RetryPolicy,
    TimeoutMiddleware,
)
from llmadapters.middleware.base import new_idempotency_key
from llmadapters.streaming import ChatCompletionStream

if TYPE_CHECKING:
    from llmadapters.testing import FakeServer

MESSAGES = [{"role": "user", "content": "retry me"}]
MakeClient = Callable[..., la.AsyncClient]


class Recorder:
    """Stands in for asyncio.sleep, and collects the per-call log records."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.records: list[dict[str, Any]] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def stack(self, policy: RetryPolicy | None = None, *inner: Any) -> list[Any]:
        retry = RetryMiddleware(policy, sleep=self.sleep, random=lambda: 0.0)
        return [LoggingMiddleware(on_record=self.records.append), retry, *inner]


async def _answer(client: la.AsyncClient, model: str, stream: bool) -> str:
    if not stream:
        reply = await client.chat.completions.create(model=f"local/{model}", messages=MESSAGES)
        return reply.choices[0].message.content or ""
    chunks = await client.chat.completions.create(model=f"local/{model}", messages=MESSAGES, stream=True)
    return "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])


RETRYABLE = ["fail-429", "fail-500", "fail-503", "html-502", "reset", "malformed", "empty"]
# A malformed stream event comes after the first chunk: never retried (tested below).
RETRY_CASES = [(f, s) for f in RETRYABLE for s in (False, True) if not (s and f == "malformed")]


@pytest.mark.parametrize(
    ("fault", "stream"), RETRY_CASES, ids=[f"{f}-{'stream' if s else 'unary'}" for f, s in RETRY_CASES]
)
@pytest.mark.parametrize("failures", [0, 1, 2])
async def test_retry_table(
    make_client: MakeClient, fake_server: FakeServer, fault: str, failures: int, stream: bool
) -> None:
    rec = Recorder()
    headers = {"x-fake-fail-times": str(failures), "x-fake-retry-after": "0"}
    client = make_client(middleware=rec.stack(), headers=headers)
    assert await _answer(client, f"echo+{fault}", stream) == "retry me"
    assert rec.records[-1]["attempts"] == failures + 1
    # Backoff when the server gives no positive Retry-After: 0.5, 1.0 (jitter off).
    assert rec.sleeps == [0.5, 1.0][:failures]
    keys = {h["idempotency-key"] for h in list(fake_server.seen_headers)[-(failures + 1) :]}
    assert len(keys) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_client_call_reports_the_attempts_and_keeps_the_key_it_is_given(
    make_client: MakeClient, fake_server: FakeServer, stream: bool
) -> None:
    rec = Recorder()
    client = make_client(middleware=rec.stack(), headers={"x-fake-fail-times": "1", "x-fake-retry-after": "0"})
    request = client.request(messages=MESSAGES, model="local/echo+fail-500", stream=stream)
    reply = await client.call(request, idempotency_key="line-7")
    assert reply.http is not None
    assert reply.http.attempts == 2
    first, second = list(fake_server.seen_headers)[-2:]
    assert first["idempotency-key"] == second["idempotency-key"] == "line-7"
    if isinstance(reply, la.ChatCompletionStream):
        await reply.aclose()
    once = await client.call(client.request(messages=MESSAGES, model="local/echo"))
    assert once.http is not None
    assert once.http.attempts == 1
    assert list(fake_server.seen_headers)[-1]["idempotency-key"].startswith("llmadapters-")


async def test_an_error_carries_the_attempts_of_its_call_and_a_deferred_429_comes_at_once(
    make_client: MakeClient,
) -> None:
    rec = Recorder()
    client = make_client(middleware=rec.stack(RetryPolicy(max_attempts=3)), headers={"x-fake-retry-after": "0"})
    with pytest.raises(la.ServerError) as failed:
        await client.call(client.request(messages=MESSAGES, model="local/fail-503"))
    assert failed.value.attempts == 3
    with pytest.raises(la.RateLimitError) as deferred:
        await client.call(client.request(messages=MESSAGES, model="local/fail-429"), defer_rate_limits=True)
    assert deferred.value.attempts == 1
    assert rec.sleeps == [0.5, 1.0]  # the 503's two waits; none for the deferred 429


async def test_retries_give_up_after_max_attempts(make_client: MakeClient) -> None:
    rec = Recorder()
    client = make_client(middleware=rec.stack(RetryPolicy(max_attempts=4)), headers={"x-fake-retry-after": "0"})
    with pytest.raises(la.ServerError):
        await _answer(client, "fail-503", stream=False)
    assert rec.records[-1]["attempts"] == 4
    assert rec.sleeps == [0.5, 1.0, 2.0]


@pytest.mark.parametrize("fault", ["fail-400", "fail-401", "fail-402"])
async def test_client_errors_are_not_retried(make_client: MakeClient, fault: str) -> None:
    rec = Recorder()
    with pytest.raises(la.APIStatusError):
        await _answer(make_client(middleware=rec.stack()), fault, stream=False)
    assert (rec.records[-1]["attempts"], rec.sleeps) == (1, [])


@pytest.mark.parametrize(
    ("reply_headers", "expected"),
    [
        ({"x-fake-reply-retry-after-ms": "1500"}, [1.5]),
        ({"x-fake-retry-after": "2.5"}, [2.5]),
        ({"x-fake-retry-after": "7"}, [7.0]),
        ({"x-fake-retry-after": "2.5", "x-fake-reply-retry-after-ms": "250"}, [0.25]),
    ],
)
async def test_retry_after_is_honoured(
    make_client: MakeClient, reply_headers: dict[str, str], expected: list[float]
) -> None:
    rec = Recorder()
    client = make_client(middleware=rec.stack(), headers={"x-fake-fail-times": "1", **reply_headers})
    assert await _answer(client, "echo+fail-429", stream=False) == "retry me"
    assert rec.sleeps == expected


async def test_retry_after_as_http_date(make_client: MakeClient) -> None:
    rec = Recorder()
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    client = make_client(middleware=rec.stack(), headers={"x-fake-fail-times": "1", "x-fake-retry-after": when})
    await _answer(client, "echo+fail-429", stream=False)
    assert len(rec.sleeps) == 1
    assert 27 < rec.sleeps[0] <= 30


async def test_retry_after_beyond_the_cap_is_not_waited_for(make_client: MakeClient) -> None:
    rec = Recorder()
    client = make_client(middleware=rec.stack(RetryPolicy(max_retry_after=60)), headers={"x-fake-retry-after": "600"})
    with pytest.raises(la.RateLimitError) as info:
        await _answer(client, "fail-429", stream=False)
    assert info.value.retry_after == 600
    assert rec.sleeps == []


@pytest.mark.parametrize(("fault", "header", "attempts"), [("fail-500", "false", 1), ("fail-400", "true", 2)])
async def test_x_should_retry_wins(make_client: MakeClient, fault: str, header: str, attempts: int) -> None:
    rec = Recorder()
    client = make_client(
        middleware=rec.stack(), headers={"x-fake-reply-x-should-retry": header, "x-fake-fail-times": "1"}
    )
    if attempts == 1:
        with pytest.raises(la.ServerError):
            await _answer(client, f"echo+{fault}", stream=False)
    else:
        assert await _answer(client, f"echo+{fault}", stream=False) == "retry me"
    assert rec.records[-1]["attempts"] == attempts


async def test_provider_verdict_comes_first(fake_server: FakeServer) -> None:
    """A provider can forbid retrying what the general rules would retry (a 429 that
    means 'out of quota'), and allow what they would not."""

    def verdict(exc: la.LLMAdapterError) -> bool | None:
        if isinstance(exc, la.RateLimitError) and exc.code == "rate_limit_exceeded":
            return False
        if isinstance(exc, la.APIStatusError) and exc.status == 402:
            return True
        return None

    registry = la.AsyncClient({}).registry
    spec = attrs.evolve(registry.providers["fake"], name="strict", launch=None, retryable=verdict)
    registry.add_providers([spec])
    rec = Recorder()
    providers = {"strict": {"base_url": fake_server.base_url, "headers": {"x-fake-fail-times": "1"}}}
    async with la.AsyncClient({}, providers=providers, registry=registry, middleware=rec.stack()) as client:
        with pytest.raises(la.RateLimitError):
            await client.chat.completions.create(model="strict/echo+fail-429", messages=MESSAGES)
        assert rec.records[-1]["attempts"] == 1
        reply = await client.chat.completions.create(model="strict/echo+fail-402", messages=MESSAGES)
        assert (reply.choices[0].message.content, rec.records[-1]["attempts"]) == ("retry me", 2)


async def test_deadline_stops_retrying(make_client: MakeClient) -> None:
    rec = Recorder()
    client = make_client(middleware=rec.stack(RetryPolicy(deadline=0.7)), headers={"x-fake-retry-after": "0"})
    with pytest.raises(la.ServerError):
        await _answer(client, "fail-500", stream=False)
    # The first backoff (0.5 s) fits in 0.7 s; the second (1 s) would end past it.
    assert rec.sleeps == [0.5]
    assert rec.records[-1]["attempts"] == 2


@pytest.mark.parametrize("fault", ["stall-mid-stream", "reset-mid-body", "stream-error", "malformed"])
async def test_a_stream_is_not_retried_after_its_first_chunk(make_client: MakeClient, fault: str) -> None:
    rec = Recorder()
    client = make_client(
        middleware=rec.stack(), timeout={"read": 0.3}, headers={"x-fake-stall-s": "3", "x-fake-fail-times": "5"}
    )
    stream = await client.chat.completions.create(model=f"local/echo+{fault}", messages=MESSAGES, stream=True)
    with pytest.raises((la.TransportError, la.StreamError)):
        async for _ in stream:
            pass
    assert rec.sleeps == []
    assert rec.records[-1]["attempts"] == 1
    assert rec.records[-1]["outcome"] in ("APITimeoutError", "TransportError", "StreamError")


async def test_attempt_timeout_is_retried_then_raised(make_client: MakeClient) -> None:
    rec = Recorder()
    client = make_client(middleware=rec.stack(None, TimeoutMiddleware(total=0.2)), headers={"x-fake-stall-s": "3"})
    started = asyncio.get_running_loop().time()
    with pytest.raises(
        la.APITimeoutError, match=r"^total timeout on .*: the attempt took over 0.2 s \(timeout\.total\)"
    ):
        await _answer(client, "stall", stream=False)
    assert rec.records[-1]["attempts"] == 3
    assert asyncio.get_running_loop().time() - started >= 3 * 0.2  # each attempt ran its 0.2 s (sleeps patched)


async def test_first_token_and_total_timeouts_on_a_slow_stream(make_client: MakeClient) -> None:
    slow = {"x-fake-ttft-ms": "400", "x-fake-tps": "20"}
    client = make_client(middleware=[TimeoutMiddleware(first_token=0.1)], headers=slow)
    with pytest.raises(la.APITimeoutError, match=r"^first token timeout on .* within 0.1 s"):
        await client.chat.completions.create(model="local/lorem", messages=MESSAGES, stream=True)

    client = make_client(middleware=[TimeoutMiddleware(total=0.8)], headers=slow)
    stream = await client.chat.completions.create(model="local/lorem", messages=MESSAGES, stream=True, max_tokens=40)
    received: list[la.ChatCompletionChunk] = []

    async def consume() -> None:
        async for chunk in stream:
            received.append(chunk)

    with pytest.raises(
        la.APITimeoutError, match=r"^total timeout on .*: the attempt took over 0.8 s \(timeout\.total\)"
    ):
        await consume()
    assert 1 < len(received) < 40


async def test_user_middleware_sees_the_wire_and_the_chunks(make_client: MakeClient, fake_server: FakeServer) -> None:
    async def tag(call: Call, call_next: CallNext) -> Reply:
        call.endpoint = call.endpoint.with_headers({"x-team": "search"})
        return await call_next(call)

    async def shout(call: Call, call_next: CallNext) -> Reply:
        reply = await call_next(call)
        if not isinstance(reply, ChatCompletionStream):
            return reply

        async def chunks() -> Any:
            async with reply:
                async for chunk in reply:
                    choices = tuple(
                        attrs.evolve(c, delta=attrs.evolve(c.delta, content=(c.delta.content or "").upper()))
                        for c in chunk.choices
                    )
                    yield attrs.evolve(chunk, choices=choices)

        return reply.with_chunks(chunks())

    client = make_client(middleware=[tag, shout])
    assert await _answer(client, "echo", stream=True) == "RETRY ME"
    assert fake_server.seen_headers[-1]["x-team"] == "search"


async def test_call_headers_reach_the_wire_and_each_attempt_starts_afresh(
    make_client: MakeClient, fake_server: FakeServer
) -> None:
    async def outer(call: Call, call_next: CallNext) -> Reply:
        call.headers["x-outer"] = "kept"
        return await call_next(call)

    async def inner(call: Call, call_next: CallNext) -> Reply:
        assert "x-inner" not in call.headers  # what the previous attempt added is gone
        call.headers["x-inner"] = str(call.attempt)
        return await call_next(call)

    rec = Recorder()
    stack = [outer, *rec.stack(None, inner)]
    client = make_client(middleware=stack, headers={"x-fake-fail-times": "1", "x-fake-retry-after": "0"})
    assert await _answer(client, "echo+fail-500", stream=False) == "retry me"
    first, second = list(fake_server.seen_headers)[-2:]
    assert (first["x-outer"], first["x-inner"]) == ("kept", "1")
    assert (second["x-outer"], second["x-inner"]) == ("kept", "2")
    assert first["idempotency-key"] == second["idempotency-key"]


async def test_each_attempt_carries_every_field_of_the_call_but_its_number_deadline_and_headers(
    make_client: MakeClient,
) -> None:
    seen: list[Call] = []
    outer_call: list[Call] = []

    async def outer(call: Call, call_next: CallNext) -> Reply:
        # A value unlike its default in every field, so that a field left out shows.
        call.key, call.defer_rate_limits, call.attempts = "k", False, 7
        call.metadata["from"] = "outer"
        call.endpoint = call.endpoint.with_headers({"x-e": "1"})
        outer_call.append(call)
        return await call_next(call)

    async def inner(call: Call, call_next: CallNext) -> Reply:
        seen.append(call)
        return await call_next(call)

    rec = Recorder()
    policy = RetryPolicy(deadline=60)
    client = make_client(
        middleware=[outer, *rec.stack(policy, inner)], headers={"x-fake-fail-times": "1", "x-fake-retry-after": "0"}
    )
    assert await _answer(client, "echo+fail-500", stream=False) == "retry me"
    (call,) = outer_call
    assert [attempt.attempt for attempt in seen] == [1, 2]
    for attempt in seen:
        assert attempt is not call
        assert attempt.deadline is not None
        assert attempt.headers["Idempotency-Key"] == call.idempotency_key
        for field in attrs.fields(Call):
            if field.name not in ("attempt", "deadline", "headers", "attempts"):
                assert getattr(attempt, field.name) is getattr(call, field.name), field.name
    assert seen[0].attempts == 7  # (the retry middleware counts them on its way back)


def test_idempotency_keys_differ_between_calls_and_processes() -> None:
    keys = {new_idempotency_key() for _ in range(1000)}
    assert len(keys) == 1000
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a forked child draws keys of its own, not the parent's next ones
        os.write(write, new_idempotency_key().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 200).decode()
    os.close(read)
    os.close(write)
    assert child.startswith("llmadapters-")
    assert len({child, new_idempotency_key()}) == 2


async def test_one_log_line_per_call(make_client: MakeClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="llmadapters")
    client = make_client(middleware=["logging"])
    await _answer(client, "echo", stream=False)
    await _answer(client, "echo", stream=True)
    with pytest.raises(la.RateLimitError):
        await _answer(client, "fail-429", stream=False)
    lines = [r for r in caplog.records if r.name == "llmadapters"]
    assert [(r.levelno, r.llmadapters["outcome"], r.llmadapters["stream"]) for r in lines] == [  # type: ignore[attr-defined]
        (logging.INFO, "ok", False),
        (logging.INFO, "ok", True),
        (logging.WARNING, "RateLimitError", False),
    ]
    assert "provider=local model=echo stream=False outcome=ok status=200 attempts=1" in lines[0].getMessage()
    assert lines[0].llmadapters["tokens_in"] == 6  # type: ignore[attr-defined]


async def test_middleware_by_name_in_config(fake_server: FakeServer) -> None:
    config = {"defaults": {"middleware": ["retry"], "retry": {"max_attempts": 2}}}
    providers = {"local": {"base_url": fake_server.base_url, "headers": {"x-fake-retry-after": "0"}}}
    async with la.AsyncClient(config, providers=providers) as client:
        with pytest.raises(la.ServerError):
            await client.chat.completions.create(model="local/fail-500", messages=MESSAGES)
        route = await client.route("local")
        assert [type(m).__name__ for m in route.middleware] == ["RetryMiddleware"]
        assert route.middleware[0].policy == RetryPolicy(max_attempts=2)  # type: ignore[attr-defined]
    with pytest.raises(
        la.ConfigError,
        match=r"providers.x.middleware: unknown middleware 'retyr' \(did you mean 'retry'\?\); "
        r"available: auth, cache, logging",
    ):
        la.AsyncClient({"providers": {"x": {"base_url": fake_server.base_url, "middleware": ["retyr"]}}})
    with pytest.raises(la.ConfigError, match=r"defaults.retry.max_attempts: expected a whole number >= 1, got 0"):
        la.AsyncClient({"defaults": {"retry": {"max_attempts": 0}}})


FAILURES = ["fail-400", "fail-401", "fail-429", "fail-500", "html-502", "reset", "malformed", "stream-error", "stall"]


@pytest.mark.parametrize("transport", ["httpx", "openai"])
async def test_key_never_in_logs_reprs_or_errors(
    fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, transport: str
) -> None:
    key = "sk-live-VERY-SECRET-4242"
    monkeypatch.setenv("LOCAL_KEY", key)
    caplog.set_level(logging.DEBUG)
    rec = Recorder()
    providers = {
        "local": {
            "base_url": fake_server.base_url,
            "api_key_env": "LOCAL_KEY",
            "headers": {"x-fake-stall-s": "2", "x-fake-retry-after": "0"},
            "timeout": {"read": 0.2},
        }
    }
    seen: list[str] = []
    async with la.AsyncClient({}, transport=transport, providers=providers, middleware=rec.stack()) as client:
        for fault in FAILURES:
            for stream in (False, True):
                try:
                    await _answer(client, f"echo+{fault}", stream)
                except la.LLMAdapterError as exc:
                    seen += [str(exc), repr(exc), repr(getattr(exc, "body", None)), repr(getattr(exc, "headers", None))]
        route = await client.route("local")
        seen += [repr(client), repr(route), repr(route.middleware), repr(route.endpoint)]
    assert fake_server.seen_headers[-1]["authorization"] == f"Bearer {key}"
    seen += [caplog.text, repr(rec.records)]
    assert len(seen) > 30
    for text in seen:
        assert key not in text


async def test_fallback_chain_answers_from_the_first_model_that_can(fake_server: FakeServer) -> None:
    rec = Recorder()
    providers = {
        "primary": {"base_url": fake_server.base_url, "headers": {"x-fake-retry-after": "0"}},
        "backup": {"base_url": fake_server.base_url},
    }
    async with la.AsyncClient({}, providers=providers, middleware=rec.stack()) as client:
        reply = await client.chat.completions.create(
            model=["primary/fail-503", "backup/fail-401", "backup/echo"], messages=MESSAGES
        )
        assert (reply.provider, reply.model, reply.choices[0].message.content) == ("backup", "echo", "retry me")
        # The first model used up its retries before the chain moved on.
        assert [(r["provider"], r["model"], r["attempts"]) for r in rec.records] == [
            ("primary", "fail-503", 3),
            ("backup", "fail-401", 1),
            ("backup", "echo", 1),
        ]
        stream = await client.chat.completions.create(
            model=["primary/reset", "backup/echo"], messages=MESSAGES, stream=True
        )
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "retry me"

        with pytest.raises(la.AuthenticationError) as failed:  # every model failed: the last error, and each
            await client.chat.completions.create(model=["primary/fail-500", "backup/fail-401"], messages=MESSAGES)
        assert str(failed.value) == (
            "every model of the fallback chain failed: primary/fail-500: HTTP 500 from primary: The server had an "
            "error (injected); backup/fail-401: HTTP 401 from backup: Incorrect API key provided (injected)"
        )
        assert (failed.value.status, failed.value.provider) == (401, "backup")
        cause = failed.value.__cause__
        assert isinstance(cause, la.ServerError)
        assert (cause.status, cause.provider) == (500, "primary")
        with pytest.raises(TypeError, match=r"^model must be a 'provider/model' string or a list of them"):
            await client.chat.completions.create(model=5, messages=MESSAGES)  # type: ignore[call-overload]
        with pytest.raises(la.ConfigError, match="unknown provider 'typo'"):  # a mistake is not a failure
            await client.chat.completions.create(model=["typo/echo", "backup/echo"], messages=MESSAGES)
        with pytest.raises(ValueError, match="empty list"):
            await client.chat.completions.create(model=[], messages=MESSAGES)
