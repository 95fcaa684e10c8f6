"""What both built-in transports share, since both move bytes through httpx2 (the
``openai`` SDK is built on it): the one mapping of httpx2 exceptions to ours, most
specific first, and the conversion of `Timeouts`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import httpx2

from .. import errors
from .base import Timeouts

__all__ = ["httpx_timeout", "map_httpx_errors"]


@contextmanager
def map_httpx_errors(url: str) -> Iterator[None]:
    try:
        yield
    except httpx2.TimeoutException as exc:
        raise errors.TimeoutError(f"{type(exc).__name__} on {url}: {exc}") from exc
    except (httpx2.ConnectError, httpx2.ProxyError, httpx2.UnsupportedProtocol) as exc:
        raise errors.ConnectError(f"cannot connect to {url}: {exc}") from exc
    except httpx2.HTTPError as exc:
        raise errors.TransportError(f"{type(exc).__name__} on {url}: {exc}") from exc


@lru_cache(maxsize=64)
def httpx_timeout(timeouts: Timeouts) -> httpx2.Timeout:
    return httpx2.Timeout(connect=timeouts.connect, read=timeouts.read, write=timeouts.write, pool=timeouts.pool)
