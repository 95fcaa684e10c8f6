"""The one exception hierarchy of llmadapters.

Every transport maps its native exceptions (httpx2, openai, aiohttp, ...) to these,
so callers catch one set of classes whatever moves the bytes::

    LLMAdapterError
     ├── ConfigError                 bad configuration, raised at load time
     ├── PluginError                 a plugin failed to load or registered badly
     ├── TransportError              the request did not get a complete HTTP answer
     │    ├── ConnectError           refused, DNS failure, TLS handshake, ...
     │    └── APITimeoutError        connect, read, write or pool timeout
     ├── APIStatusError              the server answered with a 4xx/5xx status
     │    ├── BadRequestError        400, 404, 405, 413, 415, 422
     │    ├── AuthenticationError    401, 403
     │    ├── RateLimitError         429 (has ``retry_after``)
     │    └── ServerError            >= 500
     ├── MalformedResponseError      a 2xx body that is not the JSON object expected
     ├── StructuredOutputError       a reply that is not the JSON its schema asked for
     └── StreamError                 a stream that broke: cut before its answer was
                                     complete (the connection too, once the first
                                     chunk was out), malformed, or an in-band
                                     ``{"error": ...}`` event

No message or repr built here contains request headers, so an API key never shows up
in an error. This module imports nothing of llmadapters.
"""

from __future__ import annotations

import datetime
import difflib
import email.utils
import math
import re
import reprlib
import time
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigError",
    "ConnectError",
    "LLMAdapterError",
    "MalformedResponseError",
    "PluginError",
    "PluginWarning",
    "RateLimitError",
    "SENSITIVE_HEADERS",
    "ServerError",
    "StreamError",
    "StructuredOutputError",
    "TransportError",
    "credentials",
    "parse_retry_after",
    "shown",
    "status_error",
    "unknown_name",
]

# Longest piece of a server's body quoted in an error message.
_BODY_SNIPPET = 300
# What a key is made of (OpenAI's ``sk-proj-...``, Zhipu's ``id.secret``, base64): an
# excerpt never ends inside a run of these, so that a key echoed by a server is either
# left out or quoted whole, where the auth middleware masks it.
_KEY_RUN = re.compile(r"[A-Za-z0-9._~+/=-]{1,1024}")
# The headers whose values are credentials (sent or received), in lower case: hidden in
# the repr of an endpoint's headers, left out of an `APIStatusError`'s ``headers``.
SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "api-key", "x-api-key", "cookie", "set-cookie"})


def credentials(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers of ``headers`` that carry credentials (`SENSITIVE_HEADERS`), and a value."""
    return {name: value for name, value in headers.items() if name.lower() in SENSITIVE_HEADERS and value}


class LLMAdapterError(Exception):
    """Root of every error llmadapters raises.

    Attributes:
        attempts: the attempts of the call that ended in this error, its last included
            (the retry middleware counts them; 1 without it, or for an error that no
            call made).
    """

    attempts: int = 1


class ConfigError(LLMAdapterError):
    """The configuration is invalid; the message names the source, key path and what is allowed."""


class PluginError(LLMAdapterError):
    """A plugin could not be loaded or registered something invalid."""


class PluginWarning(UserWarning):
    """An installed plugin was skipped, in whole or in part; the message names it and its
    distribution."""


class TransportError(LLMAdapterError):
    """The request did not get a complete HTTP response (connection dropped, protocol error)."""


class ConnectError(TransportError):
    """No connection could be made: refused, name resolution failed, TLS handshake failed."""


class APITimeoutError(TransportError):
    """A connect, read, write or pool-wait timeout expired (or the attempt's total or
    first-token timeout, enforced by the timeout middleware).

    It was ``TimeoutError`` until 0.1, a name that hid Python's own in every module
    that imported it: that name still works, with a `DeprecationWarning`, for one more
    release.
    """


def __getattr__(name: str) -> object:
    if name == "TimeoutError":
        warnings.warn(
            "llmadapters.TimeoutError is now llmadapters.APITimeoutError (the old name hid Python's own "
            "TimeoutError); the old name goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return APITimeoutError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class APIStatusError(LLMAdapterError):
    """The server answered with an error status.

    Attributes:
        status: the HTTP status code.
        provider: the name of the provider that answered, when known.
        request_id: the server's ``x-request-id``, when sent.
        body: the decoded JSON body (usually ``{"error": {...}}``), or the text when it
            was not JSON.
        headers: the response headers, names in lower case (``set-cookie`` left out);
            the retry middleware reads ``x-should-retry`` and ``retry-after`` here.
        code: the provider's error code, ``body["error"]["code"]`` as a string, or None.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        provider: str | None = None,
        request_id: str | None = None,
        body: object = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.provider = provider
        self.request_id = request_id
        self.body = body
        self.headers: dict[str, str] = {
            k.lower(): v for k, v in (headers or {}).items() if k.lower() not in SENSITIVE_HEADERS
        }

    @property
    def code(self) -> str | None:
        """The provider's error code (``body["error"]["code"]``) as a string, when present."""
        error = self.body.get("error") if isinstance(self.body, Mapping) else None
        code = error.get("code") if isinstance(error, Mapping) else None
        return None if code is None else str(code)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, provider={self.provider!r}, message={str(self)!r})"


class BadRequestError(APIStatusError):
    """The request was rejected as invalid (400, 404, 405, 413, 415, 422)."""


class AuthenticationError(APIStatusError):
    """The credentials were missing, wrong, or not allowed (401, 403)."""


class RateLimitError(APIStatusError):
    """429 Too Many Requests.

    Attributes:
        retry_after: seconds the server asked to wait (from ``retry-after-ms`` or
            ``Retry-After``), or None when it did not say; less when the provider has
            another API key that can take the call sooner.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(APIStatusError):
    """The server failed (>= 500)."""


class MalformedResponseError(LLMAdapterError):
    """A successful status, but the body is not the chat completion the API promises.

    Attributes:
        body: the decoded body when it was JSON (e.g. an ``{"error": ...}`` object sent
            with status 200), else None.
    """

    def __init__(self, message: str, *, body: object = None) -> None:
        super().__init__(message)
        self.body = body


class StreamError(LLMAdapterError):
    """A streamed response broke: it ended before its answer was complete, carried an
    event that is not JSON, or carried an in-band ``{"error": ...}`` event (then in
    ``body``). A connection that broke after the first chunk (a reset, a body cut
    mid-chunk) is this too, with the `TransportError` as its ``__cause__``, so that
    ``except StreamError`` catches every stream that broke after output began; one that
    stalled past its read timeout stays a `APITimeoutError`.

    Attributes:
        ended_early: the body ended, cleanly, before ``[DONE]``; a stream whose every
            choice had its ``finish_reason`` (and its usage, when asked for) is complete
            all the same, and is not raised.
    """

    def __init__(self, message: str, *, body: object = None, ended_early: bool = False) -> None:
        super().__init__(message)
        self.body = body
        self.ended_early = ended_early


class StructuredOutputError(LLMAdapterError):
    """A reply's content is not JSON, or not the JSON its schema describes (raised by
    `llmadapters.parse_json`, when asked to check)."""


_SHOWN = reprlib.Repr()
_SHOWN.maxstring = 80
_SHOWN.maxother = 80


def shown(value: object) -> str:
    """``repr(value)``, cut short enough to quote in a one-line message."""
    return _SHOWN.repr(value)


def unknown_name(where: str, kind: str, name: str, known: Iterable[str]) -> ConfigError:
    """The error for a name nobody registered, with the closest known name and the list."""
    choices = sorted(known)
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{where}: unknown {kind} {shown(name)}{hint}; available: {', '.join(choices)}")


_BAD_REQUEST = frozenset({400, 404, 405, 413, 415, 422})


def _finite(value: str | None) -> float | None:
    """``float(value)`` when it is a finite number ("nan" and "inf" are not)."""
    try:
        number = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` first, then ``Retry-After`` (seconds or an
    HTTP date), as openai-python reads them. None when absent or unparseable.

    ``headers`` must look names up case-insensitively (httpx2/aiohttp header objects do;
    a plain dict must have lower-case keys).
    """
    ms = _finite(headers.get("retry-after-ms"))
    if ms is not None:
        return max(ms / 1000.0, 0.0)
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _finite(value)
    if seconds is not None:
        return max(seconds, 0.0)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # HTTP dates are always GMT, even when they fail to say so
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def _message_of(body: object) -> str:
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, Mapping) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        return str(body["message"])
    return snippet(body if isinstance(body, str) else repr(body))


def snippet(text: str, limit: int = _BODY_SNIPPET) -> str:
    """``text`` for a message: its runs of whitespace made one space, then cut as
    `excerpt` cuts it."""
    return excerpt(" ".join(text.split()), limit)


def excerpt(text: str, limit: int) -> str:
    """The first ``limit`` characters of ``text``, and the rest of a word cut at the limit
    (up to 1 KiB more): a key the server echoed is never cut in two, which would leave
    its first part where the auth middleware, matching whole keys, cannot mask it."""
    if len(text) <= limit:
        return text
    run = _KEY_RUN.match(text, limit)  # the word the limit falls in, if it falls in one
    if run is None or limit == 0 or _KEY_RUN.match(text, limit - 1) is None:
        return text[:limit]
    return text[: run.end()]


def status_error(
    status: int,
    headers: Mapping[str, str],
    body: object,
    *,
    provider: str | None = None,
) -> APIStatusError:
    """Build the APIStatusError subclass for an error response.

    ``body`` is the decoded JSON when the server sent JSON, else its text. Every transport
    calls this, so the same bytes give the same class, message and fields.
    """
    where = f" from {provider}" if provider else ""
    detail = _message_of(body)
    message = f"HTTP {status}{where}: {detail}" if detail else f"HTTP {status}{where}"
    common: dict[str, Any] = {
        "status": status,
        "provider": provider,
        "request_id": headers.get("x-request-id"),
        "body": body,
        "headers": headers,
    }
    if status == 429:
        return RateLimitError(message, retry_after=parse_retry_after(headers), **common)
    if status in (401, 403):
        return AuthenticationError(message, **common)
    if status in _BAD_REQUEST:
        return BadRequestError(message, **common)
    if status >= 500:
        return ServerError(message, **common)
    return APIStatusError(message, **common)
