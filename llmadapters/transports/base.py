"""The Transport protocol and the values it is handed.

A transport has one job: move a JSON payload to an endpoint and bring back the JSON
reply, or the stream of JSON events. It knows no provider, middleware or config; the
route hands it an `Endpoint` with auth already in the headers. It maps its native
exceptions to `llmadapters.errors` and lets none escape.

What transports share once they have bytes (decoding, the stream's tail, the resend of
a request whose pooled connection was closed) is in `._kernel`; the tables of each HTTP
library's exceptions in `._errors`. Their names are re-exported here, where plugins
imported them from before `llmadapters.plugin` existed.
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from ..errors import SENSITIVE_HEADERS
from ..policies import Timeouts
from ..types import ResponseInfo
from ._errors import classify_transport_error, timeout_error
from ._kernel import (
    DEFAULT_MAX_CONNECTIONS,
    MAX_BODY_BYTES,
    closed_before_sending,
    decode_error_body,
    decode_json_body,
    decode_sse_json,
    drain,
    encode_json,
    raise_for_status,
    read_body,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
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
    "raise_for_status",
    "read_body",
    "redacted_repr",
    "timeout_error",
]


def redacted_repr(headers: Mapping[str, str]) -> str:
    """The repr of ``headers`` with the values of credential headers hidden."""
    return repr({k: ("<redacted>" if k.lower() in SENSITIVE_HEADERS else v) for k, v in headers.items()})


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

    Property and method:
        url: the full URL to send to, ``base_url`` + ``path``, the query included
            (``.../chat/completions?api-version=2024-10-21``).
        with_headers(headers): a copy that also sends ``headers`` (which win over
            the existing ones).
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
        # Every field named, not attrs.evolve, which looks them up: once per call that
        # carries headers of its own (the retry middleware's Idempotency-Key).
        return Endpoint(
            base_url=self.base_url,
            path=self.path,
            headers={**self.headers, **headers},
            query=self.query,
            timeouts=self.timeouts,
            provider=self.provider,
        )


@runtime_checkable
class Transport(Protocol):
    """Moves JSON to an OpenAI-compatible endpoint and back.

    - ``send`` POSTs ``payload`` and returns the decoded JSON object of a 2xx reply
      with the reply's `ResponseInfo` (status and headers).
    - ``stream`` POSTs ``payload`` (which asks for ``"stream": true``); once the status
      is known to be 2xx it yields the `ResponseInfo`, then each SSE event's JSON object
      until ``[DONE]``. Status errors are raised before anything is yielded.
    - ``aclose`` releases connections; the transport is unusable afterwards.

    Failures raise `llmadapters.errors` classes only: `ConnectError`, `APITimeoutError`,
    `TransportError`, `APIStatusError` subclasses (via `decode_error_body` and
    `errors.status_error`), `MalformedResponseError` and `StreamError`.
    """

    async def send(self, endpoint: Endpoint, payload: Mapping[str, Any]) -> tuple[dict[str, Any], ResponseInfo]: ...

    def stream(
        self, endpoint: Endpoint, payload: Mapping[str, Any]
    ) -> AsyncGenerator[ResponseInfo | dict[str, Any], None]: ...

    async def aclose(self) -> None: ...
