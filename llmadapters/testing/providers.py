"""Helpers for testing a provider plugin against the fake server standing in for the
provider's API: which headers reach it, and which of its errors are retried.

    async def test_balance_errors_are_final():
        outcome = await answer_after_error("deepseek", 402, {"error": {"message": "Insufficient Balance"}})
        assert outcome.attempts == 1 and isinstance(outcome.error, la.APIStatusError)
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import attrs

from ..client import AsyncClient
from ..errors import LLMAdapterError
from ..middleware.retry import RetryMiddleware, RetryPolicy
from ..plugins import Registry
from .fake_server import FakeServer

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from ..types import ChatCompletion

__all__ = ["Outcome", "answer_after_error", "environment", "headers_sent"]

_MESSAGES = [{"role": "user", "content": "probe"}]


@attrs.frozen
class Outcome:
    """How one call went: the requests the server saw, and the reply or the error."""

    attempts: int
    reply: ChatCompletion | None
    error: LLMAdapterError | None


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration, then put back what was there."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


async def _no_wait(seconds: float) -> None:
    return None


async def _call(
    provider: str, headers: Mapping[str, str], api_key: str | None = None, model: str = "echo"
) -> tuple[Outcome, FakeServer]:
    async with FakeServer() as server:
        settings: dict[str, Any] = {"base_url": server.base_url, "headers": dict(headers)}
        if api_key is not None:
            settings["api_key"] = api_key
        retry = RetryMiddleware(RetryPolicy(max_attempts=3), sleep=_no_wait)
        registry = Registry.load(autoload=True)
        client = AsyncClient({}, providers={provider: settings}, middleware=[retry], registry=registry)
        reply = error = None
        async with client:
            try:
                reply = await client.chat.completions.create(model=f"{provider}/{model}", messages=_MESSAGES)
            except LLMAdapterError as exc:
                error = exc
        return Outcome(attempts=server.requests_served, reply=reply, error=error), server


async def answer_after_error(provider: str, status: int, body: object) -> Outcome:
    """Call the installed provider ``provider``, whose API (the fake server) answers the
    first attempt with ``status`` and ``body`` and then succeeds; the retry middleware
    makes up to 3 attempts without waiting."""
    headers = {"x-fake-error-status": str(status), "x-fake-error-body": json.dumps(body), "x-fake-fail-times": "1"}
    outcome, _ = await _call(provider, headers, api_key="sk-probe")
    return outcome


async def headers_sent(provider: str, env: Mapping[str, str]) -> dict[str, str]:
    """The headers the installed provider ``provider`` sends, with ``env`` set (its key)."""
    with environment(env):
        outcome, server = await _call(provider, {})
    if outcome.error is not None:
        raise outcome.error
    return server.seen_headers[-1]
