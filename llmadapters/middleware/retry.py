"""Retry: openai-python's rules, made provider-aware, with a total deadline.

What is retried, in order:

1. the provider's own verdict (``ProviderSpec.retryable``): ``False`` is final (e.g.
   DeepSeek's 402 insufficient balance is never retried); without one, an error whose
   code says a quota or balance is spent (`KEY_SPENT_CODES`), or a 429 for a request
   larger than the whole limit, is final too;
2. an ``x-should-retry: true|false`` response header, which wins over a provider's
   ``True``;
3. the provider's ``True``;
4. statuses 408, 409, 429 and >= 500; connection errors, timeouts, a dropped or
   malformed response, a stream that broke before its first chunk.

A 429 of a call that defers rate limits (``Call.defer_rate_limits``, set by the batch
engine) is raised at once, for the caller to send again later.

The delay is the server's ``retry-after-ms`` / ``Retry-After`` (seconds or an HTTP date)
when it is in (0, ``max_retry_after``]; a longer one is not waited for, the error is
raised. Otherwise ``min(initial_delay * 2**(attempt-1), max_delay)`` less up to 25%
jitter. No attempt starts that could not begin before the call's deadline. Every attempt
carries the same ``Idempotency-Key`` header.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs

from ..errors import (
    APIStatusError,
    LLMAdapterError,
    MalformedResponseError,
    RateLimitError,
    StreamError,
    TransportError,
)
from ..errors import parse_retry_after as _parse_retry_after
from ..policies import RetryPolicy
from ..streaming import ChatCompletionStream

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..providers.base import ProviderSpec
    from .base import Call, CallNext, Reply

__all__ = [
    "KEY_SPENT_CODES",
    "RetryMiddleware",
    "RetryPolicy",
    "error_type",
    "provider_verdict",
    "quota_spent",
    "rate_limit_retryable",
    "too_large",
]

_RETRY_STATUSES = frozenset({408, 409, 429})
# Error codes (``error.code`` or ``error.type``) that say the money or quota of a key
# (or an account) is spent, whatever the status: OpenAI's 429 ``insufficient_quota``
# (platform.openai.com/docs/guides/error-codes), MiMo's 402 ``insufficient_balance``,
# Moonshot's ``exceeded_current_quota_error`` (platform.moonshot.ai/docs/api/chat),
# Zhipu's 1113 (arrears), 1304 (daily quota), 1308/1310 (usage caps) and 1309 (plan
# expired) (docs.bigmodel.cn/cn/api/api-code).
KEY_SPENT_CODES = frozenset(
    {
        "insufficient_quota",
        "insufficient_balance",
        "exceeded_current_quota_error",
        "1113",
        "1304",
        "1308",
        "1309",
        "1310",
    }
)
logger = logging.getLogger("llmadapters")


class RetryMiddleware:
    """Retries a call according to a `RetryPolicy`.

    ``sleep`` and ``random`` are there for tests that drive time themselves.
    """

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        random: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._random = random

    def __repr__(self) -> str:
        return f"RetryMiddleware({self.policy!r})"

    def delay(self, call: Call, exc: LLMAdapterError, attempt: int) -> float | None:
        """Seconds to wait before retrying after ``exc`` on ``attempt``, or None to give up."""
        verdict = provider_verdict(call.spec, exc)
        if verdict is False:
            return None
        if isinstance(exc, APIStatusError):
            # A 429's own, which auth shortens when another key can take the call.
            retry_after = exc.retry_after if isinstance(exc, RateLimitError) else _parse_retry_after(exc.headers)
            if retry_after is not None and retry_after > self.policy.max_retry_after:
                return None
            should = exc.headers.get("x-should-retry")
            if should == "false" or (
                verdict is None and should != "true" and exc.status not in _RETRY_STATUSES and exc.status < 500
            ):
                return None
            if retry_after is not None and retry_after > 0:
                return retry_after
        elif verdict is None and not isinstance(exc, (TransportError, MalformedResponseError, StreamError)):
            return None
        backoff = min(self.policy.initial_delay * 2.0 ** (attempt - 1), self.policy.max_delay)
        return backoff * (1 - 0.25 * self._random())

    async def __call__(self, call: Call, call_next: CallNext) -> Reply:
        deadline = call.deadline
        if self.policy.deadline is not None:
            own = asyncio.get_running_loop().time() + self.policy.deadline
            deadline = own if deadline is None else min(deadline, own)
        attempt = 1
        while True:
            headers = {**call.headers, "Idempotency-Key": call.idempotency_key}
            try:
                reply = await call_next(call.attempt_of(attempt, deadline, headers))
            except LLMAdapterError as exc:
                call.attempts = exc.attempts = attempt
                if call.defer_rate_limits and isinstance(exc, RateLimitError):
                    raise
                wait = self.delay(call, exc, attempt) if attempt < self.policy.max_attempts else None
                if wait is None or (deadline is not None and asyncio.get_running_loop().time() + wait >= deadline):
                    raise
                await self._sleep(wait)
                attempt += 1
            else:
                call.attempts = attempt
                return reply if attempt == 1 else _with_attempts(reply, attempt)


def _with_attempts(reply: Reply, attempts: int) -> Reply:
    """``reply``, its ``http.attempts`` set to ``attempts``."""
    if reply.http is None:
        return reply
    http = attrs.evolve(reply.http, attempts=attempts)
    if isinstance(reply, ChatCompletionStream):
        reply.http = http
        return reply
    return attrs.evolve(reply, http=http)


def error_type(exc: APIStatusError) -> str | None:
    """``body["error"]["type"]`` as a string (the code is `APIStatusError.code`)."""
    error = exc.body.get("error") if isinstance(exc.body, Mapping) else None
    value = error.get("type") if isinstance(error, Mapping) else None
    return None if value is None else str(value)


def quota_spent(exc: APIStatusError) -> bool:
    """Whether ``exc``'s code or type is one of `KEY_SPENT_CODES`."""
    return exc.code in KEY_SPENT_CODES or error_type(exc) in KEY_SPENT_CODES


# OpenAI's 429 for a request larger than a whole limit: "Request too large for gpt-4o ...
# on tokens per min (TPM): Limit 30000, Requested 36278. The input or output tokens must be
# reduced ..." (as users met it: Aider-AI/aider#1880, continuedev/continue#11717).
_TOO_LARGE = re.compile(r"Limit ([\d,]+), Requested ([\d,]+)")


def too_large(exc: APIStatusError) -> bool:
    """Whether ``exc`` is a 429 for a request larger than the whole limit it names, which
    no wait can make fit."""
    found = _TOO_LARGE.search(str(exc)) if exc.status == 429 else None
    return found is not None and int(found[2].replace(",", "")) > int(found[1].replace(",", ""))


def provider_verdict(spec: ProviderSpec, exc: LLMAdapterError) -> bool | None:
    """The provider's ``retryable(exc)``: False never to retry, True to retry, None to
    leave it to the general rules (also when the provider's code raises). When the
    provider has no verdict, an error whose code says the quota or balance is spent
    (`KEY_SPENT_CODES`), or a 429 for a request larger than the whole limit (`too_large`),
    is False: sent again, it would be refused again (with a key or without: a gateway that
    holds the key answers so too)."""
    verdict = None
    if spec.retryable is not None:
        try:
            verdict = spec.retryable(exc)
        except Exception:  # a provider plugin's bug must not turn a call's error into another
            logger.warning("provider %r: its retryable() raised; general rules used", spec.name, exc_info=True)
    if verdict is None and isinstance(exc, APIStatusError) and (quota_spent(exc) or too_large(exc)):
        return False
    return verdict


def rate_limit_retryable(spec: ProviderSpec, exc: RateLimitError) -> bool:
    """Whether a 429 may be sent again: not when the provider says never (a quota or
    balance used up) or the server says ``x-should-retry: false``."""
    return provider_verdict(spec, exc) is not False and exc.headers.get("x-should-retry") != "false"
