"""What both built-in transports share, since both move bytes through httpx2 (the
``openai`` SDK is built on it): the one mapping of native exceptions to ours, and the
conversion of `Timeouts`.

The mapping looks at the innermost recognised exception of the ``__cause__`` chain,
not the outermost: the SDK wraps its aiohttp client's errors in httpx2 classes through
a table that turns every ``aiohttp.ClientConnectionError`` (a DNS failure, a server
disconnect) into ``httpx2.ConnectTimeout``, which would make them timeouts here.
"""

from __future__ import annotations

import builtins
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING

import httpx2

from .. import errors

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .base import Timeouts

__all__ = ["httpx_timeout", "map_httpx_errors", "transport_error"]

_CONNECT = (httpx2.ConnectError, httpx2.ProxyError, httpx2.UnsupportedProtocol)
_MAX_CHAIN = 16


def _kind(exc: BaseException) -> type[errors.TransportError] | None:
    if isinstance(exc, httpx2.TimeoutException):
        return errors.TimeoutError
    if isinstance(exc, _CONNECT):
        return errors.ConnectError
    if type(exc).__module__.startswith("aiohttp."):
        import aiohttp  # only reached when aiohttp raised, so it is installed

        if isinstance(exc, aiohttp.ClientConnectorError):
            return errors.ConnectError
        if isinstance(exc, (aiohttp.ServerTimeoutError, builtins.TimeoutError)):
            return errors.TimeoutError
        return errors.TransportError
    if isinstance(exc, builtins.TimeoutError):
        return errors.TimeoutError
    if isinstance(exc, (httpx2.HTTPError, httpx2.InvalidURL)):
        return errors.TransportError
    return None


def transport_error(exc: BaseException, url: str) -> errors.TransportError:
    """Our error for a native one, classified by its innermost recognised cause."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(chain) < _MAX_CHAIN:
        chain.append(cause)
        cause = cause.__cause__
    for native in reversed(chain):
        kind = _kind(native)
        if kind is not None:
            break
    else:
        kind, native = errors.TransportError, exc
    detail = str(native) or type(native).__name__
    if kind is errors.ConnectError:
        return errors.ConnectError(f"cannot connect to {url}: {detail}")
    return kind(f"{type(native).__name__} on {url}: {detail}")


@contextmanager
def map_httpx_errors(url: str) -> Iterator[None]:
    try:
        yield
    except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
        raise transport_error(exc, url) from exc


@lru_cache(maxsize=64)
def httpx_timeout(timeouts: Timeouts) -> httpx2.Timeout:
    return httpx2.Timeout(connect=timeouts.connect, read=timeouts.read, write=timeouts.write, pool=timeouts.pool)
