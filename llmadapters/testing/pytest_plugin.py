"""The pytest plugin of llmadapters (entry point ``pytest11``), loaded wherever
llmadapters is installed: fixtures for testing code that calls LLM APIs.

- ``llmadapters_fake_server``: a `FakeServer` on loopback, running in a thread of its
  own, so that sync and async tests alike can point a provider at
  ``llmadapters_fake_server.base_url``.

For plugin authors, the conformance suites are in `llmadapters.testing.conformance`.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .fake_server import FakeServer

__all__ = ["llmadapters_fake_server"]


@pytest.fixture
def llmadapters_fake_server() -> Iterator[FakeServer]:
    from .fake_server import FakeServer

    loop = asyncio.new_event_loop()
    server = FakeServer()
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, name="llmadapters-fake-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.aclose(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
