"""Native exceptions to ours: one declarative table per HTTP library, one classifier.

A library's table (`ErrorTable`) lists its exception classes by name, most specific
first, with the class of ours each becomes and, for a timeout, the phase it tells, or
whether it means the server dropped the connection mid-answer. Names, not classes, so
that a table costs no import of its library: the aiohttp table is read for the openai
SDK's aiohttp client without importing aiohttp until one of its exceptions is seen.

`ErrorMap` joins the tables a transport can meet (the openai SDK wraps httpx2's or
aiohttp's exceptions in its own) and is the one context manager that raises them as
ours, ``raise ... from exc`` (as ``httpx._transports.default.map_httpcore_exceptions``
does, in a class rather than a generator since it is on every call's path).
`classify_transport_error` looks at the innermost exception of the ``__cause__`` chain
a table knows, not the outermost: wrappers re-label what they wrap (the SDK turns every
``aiohttp.ClientConnectionError``, a DNS failure or a disconnect, into
``httpx2.ConnectTimeout``).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Literal

import attrs

from ..errors import APITimeoutError, ConnectError, TransportError

if TYPE_CHECKING:
    from .base import Endpoint

__all__ = [
    "AIOHTTP_ERRORS",
    "BUILTIN_ERRORS",
    "HTTPX2_ERRORS",
    "OPENAI_ERRORS",
    "ErrorMap",
    "ErrorRule",
    "ErrorTable",
    "classify_transport_error",
    "timeout_error",
]

Phase = Literal["connect", "read", "write", "pool"]
_MAX_CHAIN = 16


@attrs.frozen
class ErrorRule:
    """One row of an `ErrorTable`.

    Attributes:
        native: ``library.ClassName`` (the library's top-level module, the class's own
            name: ``httpx2.ConnectTimeout``), matching that class and its subclasses;
            or ``library.*``, any exception defined in the library.
        error: our class for it.
        phase: for a timeout, the phase whose limit expired.
        lost: the server closed or reset the connection before the reply was whole.
        undecodable: the body did not decode as its ``content-encoding`` said.
    """

    native: str
    error: type[TransportError]
    phase: Phase | None = None
    lost: bool = False
    undecodable: bool = False


class ErrorTable:
    """A library's exceptions, most specific first: the first rule that matches wins."""

    __slots__ = ("rules",)

    def __init__(self, *rules: ErrorRule) -> None:
        self.rules = rules

    def __repr__(self) -> str:
        return f"ErrorTable{self.rules!r}"

    def match(self, exc: BaseException) -> ErrorRule | None:
        """The first rule for ``exc``, or None."""
        names = {_name(cls) for cls in type(exc).__mro__}
        library = _library(type(exc))
        for rule in self.rules:
            if rule.native in names or rule.native == f"{library}.*":
                return rule
        return None


_R = ErrorRule

# httpx2's, and httpcore2's (which httpx2 raises its own from, and which the httpx
# transport meets alone: it sends httpcore2 requests).
HTTPX2_ERRORS = ErrorTable(
    _R("httpx2.ConnectTimeout", APITimeoutError, "connect"),
    _R("httpx2.ReadTimeout", APITimeoutError, "read"),
    _R("httpx2.WriteTimeout", APITimeoutError, "write"),
    _R("httpx2.PoolTimeout", APITimeoutError, "pool"),
    _R("httpx2.TimeoutException", APITimeoutError),
    _R("httpx2.DecodingError", TransportError, undecodable=True),
    _R("httpx2.ConnectError", ConnectError),
    _R("httpx2.ProxyError", ConnectError),
    _R("httpx2.UnsupportedProtocol", ConnectError),
    _R("httpx2.RemoteProtocolError", TransportError, lost=True),
    _R("httpx2.HTTPError", TransportError),
    _R("httpx2.InvalidURL", TransportError),
    _R("httpcore2.ConnectTimeout", APITimeoutError, "connect"),
    _R("httpcore2.ReadTimeout", APITimeoutError, "read"),
    _R("httpcore2.WriteTimeout", APITimeoutError, "write"),
    _R("httpcore2.PoolTimeout", APITimeoutError, "pool"),
    _R("httpcore2.TimeoutException", APITimeoutError),
    _R("httpcore2.ConnectError", ConnectError),
    _R("httpcore2.ProxyError", ConnectError),
    _R("httpcore2.UnsupportedProtocol", ConnectError),
    _R("httpcore2.RemoteProtocolError", TransportError, lost=True),
    _R("httpcore2.ReadError", TransportError, lost=True),
    _R("httpcore2.WriteError", TransportError, lost=True),
    _R("httpcore2.*", TransportError),
)  # fmt: skip
# aiohttp's, raised alone (the aiohttp plugin) or under the openai SDK's aiohttp client;
# its C parser raises classes of aiohttp.http_exceptions, outside ClientError.
AIOHTTP_ERRORS = ErrorTable(
    _R("aiohttp.ConnectionTimeoutError", APITimeoutError, "connect"),
    _R("aiohttp.SocketTimeoutError", APITimeoutError, "read"),
    _R("aiohttp.ServerTimeoutError", APITimeoutError),
    _R("aiohttp.ClientConnectorError", ConnectError),
    _R("aiohttp.InvalidURL", ConnectError),
    _R("aiohttp.ContentEncodingError", TransportError, undecodable=True),  # (under a ClientPayloadError)
    _R("aiohttp.ClientPayloadError", TransportError, lost=True),
    _R("aiohttp.ServerDisconnectedError", TransportError, lost=True),
    _R("aiohttp.*", TransportError),
)  # fmt: skip
# The openai SDK's: what it wraps (httpx2's or aiohttp's) decides, when a table knows it.
OPENAI_ERRORS = ErrorTable(_R("openai.OpenAIError", TransportError))
# Python's own: a timeout from asyncio or a socket.
BUILTIN_ERRORS = ErrorTable(_R("builtins.TimeoutError", APITimeoutError))

# A reset, as an OSError of one of these numbers, is a connection lost in any library.
_LOST_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})


class ErrorMap:
    """The tables a transport can meet, in the order they are consulted.

    ``with errors(endpoint):`` (or ``async with``) raises any exception a table knows as
    ours, from it; anything else passes through.
    """

    __slots__ = ("tables",)

    def __init__(self, *tables: ErrorTable) -> None:
        self.tables = tables

    def rule(self, exc: BaseException) -> ErrorRule | None:
        """The rule of the first table that knows ``exc``, or None."""
        for table in self.tables:
            found = table.match(exc)
            if found is not None:
                return found
        return None

    def error(self, exc: BaseException, endpoint: Endpoint) -> TransportError:
        """Our error for ``exc`` (see `classify_transport_error`)."""
        return classify_transport_error(exc, endpoint, self)

    def __call__(self, endpoint: Endpoint) -> _Mapping:
        return _Mapping(self, endpoint)


class _Mapping:
    __slots__ = ("_endpoint", "_map")

    def __init__(self, errors: ErrorMap, endpoint: Endpoint) -> None:
        self._map = errors
        self._endpoint = endpoint

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        # Cancellation is no error to map; ours are in no table.
        if isinstance(exc, Exception) and self._map.rule(exc) is not None:
            raise self._map.error(exc, self._endpoint) from exc

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self.__exit__(kind, exc, tb)


def classify_transport_error(exc: BaseException, endpoint: Endpoint, errors: ErrorMap) -> TransportError:
    """Our error for a native one, classified by the innermost cause ``errors`` knows,
    in the same words whichever library raised it: a timeout names its phase and limit
    (`timeout_error`), a connection the server reset or closed mid-answer says so."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(chain) < _MAX_CHAIN:
        chain.append(cause)
        cause = cause.__cause__
    rules = [errors.rule(c) for c in chain]
    kind: type[TransportError] = TransportError
    native = exc
    for candidate, rule in zip(reversed(chain), reversed(rules), strict=True):
        if rule is not None:
            kind, native = rule.error, candidate
            break
    url = endpoint.url
    detail = str(native) or type(native).__name__
    if kind is ConnectError:
        return ConnectError(f"cannot connect to {url}: {detail}")
    if kind is APITimeoutError:
        phase = next((rule.phase for rule in reversed(rules) if rule is not None and rule.phase), None)
        if phase is not None:
            return timeout_error(phase, url, getattr(endpoint.timeouts, phase))
    elif any(rule is not None and rule.undecodable for rule in rules):
        # In the words of what failed to decode it (zlib's, ...), the library's own
        # wrapping left out (aiohttp's says the connection broke).
        innermost = _innermost(chain[-1])
        return kind(f"DecodingError on {url}: the body does not decode as its content-encoding says: {innermost}")
    elif any(_lost(c, rule) for c, rule in zip(chain, rules, strict=True)):
        return kind(f"connection lost on {url} before the response was complete: the server closed or reset it")
    return kind(f"{type(native).__name__} on {url}: {detail}")


def _innermost(exc: BaseException) -> BaseException:
    """The exception at the bottom of ``exc``'s causes and contexts."""
    for _ in range(_MAX_CHAIN):
        below = exc.__cause__ or exc.__context__
        if below is None:
            break
        exc = below
    return exc


def _lost(exc: BaseException, rule: ErrorRule | None) -> bool:
    return (rule is not None and rule.lost) or (isinstance(exc, OSError) and exc.errno in _LOST_ERRNOS)


def _library(cls: type) -> str:
    return cls.__module__.partition(".")[0]


def _name(cls: type) -> str:
    """``library.ClassName`` of ``cls``."""
    return f"{_library(cls)}.{cls.__name__}"


# Per phase of an attempt: what its timeout means, and the setting that sets it.
_TIMEOUT_TEXT = {
    "connect": ("no connection within {} s", "timeout.connect"),
    "write": ("the server took no data for {} s", "timeout.write"),
    "read": ("no data from the server for {} s", "timeout.read"),
    "pool": ("no free connection within {} s", "timeout.pool"),
    "first_token": ("no reply (or first chunk of a stream) within {} s", "timeout.first_token"),
    "total": ("the attempt took over {} s", "timeout.total"),
    "deadline": ("the call's deadline passed, {} s into this attempt", "retry.deadline"),
}


def timeout_error(phase: str, url: str, seconds: float | None) -> APITimeoutError:
    """The `APITimeoutError` of one phase of an attempt (``connect``, ``write``, ``read``,
    ``pool``, ``first_token``, ``total``, or the call's ``deadline``), in the same words
    on every transport: ``read timeout on URL: no data from the server for 30 s
    (timeout.read)``."""
    text, setting = _TIMEOUT_TEXT[phase]
    limit = "?" if seconds is None else f"{seconds:g}"
    return APITimeoutError(f"{phase.replace('_', ' ')} timeout on {url}: {text.format(limit)} ({setting})")
