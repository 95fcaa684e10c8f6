"""What both built-in transports share, since both move bytes through httpx2 (the
``openai`` SDK is built on it): the mapping of httpx2's exceptions to ours, and the
conversion of `Timeouts`.

The mapping looks at the innermost recognised exception of the ``__cause__`` chain
(`classify_transport_error`), not the outermost: the SDK wraps its aiohttp client's
errors in httpx2 classes through a table that turns every
``aiohttp.ClientConnectionError`` (a DNS failure, a server disconnect) into
``httpx2.ConnectTimeout``, which would make them timeouts here.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING

import httpx2

from .. import errors
from .base import classify_transport_error, native_error_kind

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .base import Timeouts

__all__ = ["httpx_timeout", "map_httpx_errors", "transport_error"]

_CONNECT = (httpx2.ConnectError, httpx2.ProxyError, httpx2.UnsupportedProtocol)


def _kind(exc: BaseException) -> type[errors.TransportError] | None:
    if isinstance(exc, httpx2.TimeoutException):
        return errors.TimeoutError
    if isinstance(exc, _CONNECT):
        return errors.ConnectError
    if isinstance(exc, (httpx2.HTTPError, httpx2.InvalidURL)):
        return errors.TransportError
    return native_error_kind(exc)


def transport_error(exc: BaseException, url: str) -> errors.TransportError:
    """Our error for an httpx2 one (or for what it wraps: aiohttp's, under the SDK)."""
    return classify_transport_error(exc, url, _kind)


@contextmanager
def map_httpx_errors(url: str) -> Iterator[None]:
    try:
        yield
    except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
        raise transport_error(exc, url) from exc


@lru_cache(maxsize=64)
def httpx_timeout(timeouts: Timeouts) -> httpx2.Timeout:
    return httpx2.Timeout(connect=timeouts.connect, read=timeouts.read, write=timeouts.write, pool=timeouts.pool)
