"""Recognisable keys for every installed provider, every failure kind, DEBUG logging on
everywhere: no key in logs, exception strings, reprs, batch output records or summaries."""

from __future__ import annotations

import io
import json
import logging
from typing import TYPE_CHECKING

from conftest import TRANSPORTS, test_registry

import llmadapters as la
from llmadapters.batch import BatchSummary, write_record
from llmadapters.plugins import Registry

if TYPE_CHECKING:
    import pytest

    from llmadapters.testing import FakeServer

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
