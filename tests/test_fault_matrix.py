"""Every fault, through every transport, unary and streamed: the documented error class
(each attempt ended by its total timeout at the latest); then the next 100 calls
succeed (the pool recovered); and once the client is closed, no file descriptor or
asyncio task is left behind."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import pytest

import llmadapters as la
from llmadapters.testing import BEHAVIOURS
from tests.conftest import TRANSPORTS, test_registry

if TYPE_CHECKING:
    from llmadapters.testing import FakeServer

READ_TIMEOUT = 0.5
# A drip never lets the read timeout expire: only the total timeout of an attempt ends it.
# Other faults get room to push 50 MB through four transports at once.
DRIP_TOTAL_TIMEOUT = 1.5
TOTAL_TIMEOUT = 15.0

# fault -> (error when unary, error when streamed); None: the fault has no unary form.
FAULTS: dict[str, tuple[type[Exception] | None, type[Exception]]] = {
    "connect-refused": (la.ConnectError, la.ConnectError),
    "dns-failure": (la.ConnectError, la.ConnectError),
    "tls-to-plain-http": (la.ConnectError, la.ConnectError),
    "stall": (la.APITimeoutError, la.APITimeoutError),
    "stall-mid-stream": (None, la.APITimeoutError),
    "reset": (la.TransportError, la.TransportError),
    "reset-mid-body": (la.TransportError, la.StreamError),
    "truncate": (la.MalformedResponseError, la.StreamError),
    "malformed": (la.MalformedResponseError, la.StreamError),
    "stream-error": (None, la.StreamError),
    "html-502": (la.ServerError, la.ServerError),
    "empty": (la.MalformedResponseError, la.StreamError),
    "error-200": (la.MalformedResponseError, la.StreamError),
    "huge-body": (la.MalformedResponseError, la.StreamError),
    "gzip-bomb": (la.MalformedResponseError, la.StreamError),
    "huge-header": (la.TransportError, la.TransportError),
    "drip": (la.APITimeoutError, la.APITimeoutError),
}


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _base_url(fault: str, server: FakeServer, dns_name: str) -> str:
    if fault == "connect-refused":
        return f"http://127.0.0.1:{_closed_port()}/v1"
    if fault == "dns-failure":
        return f"http://{dns_name}/v1"
    if fault == "tls-to-plain-http":
        return server.base_url.replace("http://", "https://")
    return server.base_url


async def _settled(expected: int, measure: Any, seconds: float = 5.0) -> int:
    """Wait for the count to come back (the server side closes its end a little later)."""
    deadline = time.monotonic() + seconds
    while (count := measure()) > expected and time.monotonic() < deadline:  # noqa: ASYNC110 - polling the OS
        await asyncio.sleep(0.05)
    return int(count)


async def _call(client: la.AsyncClient, model: str, stream: bool, prompt: str) -> str:
    messages = [{"role": "user", "content": prompt}]
    if not stream:
        reply = await client.chat.completions.create(model=model, messages=messages)
        return reply.choices[0].message.content or ""
    chunks = await client.chat.completions.create(model=model, messages=messages, stream=True)
    return "".join([c.choices[0].delta.content or "" async for c in chunks])


async def _matrix(server: FakeServer, dns_name: str, transport: str, stream: bool) -> list[str]:
    """Every fault through one transport; returns the faults tried."""
    tried = []
    for fault, expected in FAULTS.items():
        error = expected[1] if stream else expected[0]
        if error is None:
            continue
        behaviour = fault if fault in BEHAVIOURS else "echo"
        total = DRIP_TOTAL_TIMEOUT if fault == "drip" else TOTAL_TIMEOUT
        providers = {
            "faulty": {
                "base_url": _base_url(fault, server, dns_name),
                "headers": {"x-fake-stall-s": "1.5"},
                "timeout": {"read": READ_TIMEOUT, "total": total},
            },
            "healthy": {"base_url": server.base_url},
        }
        client = la.AsyncClient(
            {}, transport=transport, providers=providers, middleware=["timeout"], registry=test_registry()
        )
        async with client:
            with pytest.raises(error):
                await _call(client, f"faulty/echo+{behaviour}", stream, "fault")
            tried.append(fault)
            # The same client, the same transport: the pool must serve the next calls.
            prompts = [f"after {fault} {i}" for i in range(100)]
            answers = await asyncio.gather(*(_call(client, "healthy/echo", stream, p) for p in prompts))
            assert answers == prompts, (transport, fault)
    return tried


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_fault_matrix(fake_server: FakeServer, failing_dns: str, stream: bool) -> None:
    fds, tasks = _open_fds(), len(asyncio.all_tasks())
    # The transports run side by side, each through every fault, to keep the wall time low.
    tried = await asyncio.gather(*(_matrix(fake_server, failing_dns, t, stream) for t in TRANSPORTS))
    assert [len(faults) for faults in tried] == [17 if stream else 15] * len(TRANSPORTS)
    assert await _settled(tasks, lambda: len(asyncio.all_tasks())) == tasks
    assert await _settled(fds, _open_fds) == fds


# The same fault, the same words, whichever transport met it: the phase and limit of a
# timeout, and a connection the server dropped (issue 20).
READ = "read timeout on {url}: no data from the server for 0.3 s (timeout.read)"
WORDED: dict[str, tuple[bool, dict[str, float], str]] = {
    "stall": (False, {"read": 0.3}, READ),
    "stall-mid-stream": (True, {"read": 0.3}, READ),
    "reset": (False, {}, "connection lost on {url} before the response was complete: the server closed or reset it"),
    "reset-mid-body": (
        True,
        {},
        "stream from local broke after its first chunk: connection lost on {url} before the response was complete: "
        "the server closed or reset it",
    ),
    "stall+first": (
        False,
        {"first_token": 0.3},
        "first token timeout on {url}: no reply (or first chunk of a stream) within 0.3 s (timeout.first_token)",
    ),
    "stall-mid-stream+total": (
        True,
        {"total": 0.3},
        "total timeout on {url}: the attempt took over 0.3 s (timeout.total)",
    ),
    "stall+pool": (False, {"pool": 0.3}, "pool timeout on {url}: no free connection within 0.3 s (timeout.pool)"),
}


async def _worded(server: FakeServer, transport: str) -> dict[str, str]:
    said = {}
    url = f"{server.base_url}/chat/completions"
    for case, (stream, timeout, _) in WORDED.items():
        fault = case.partition("+")[0]
        headers = {"x-fake-stall-s": "3", "x-case": f"{transport} {case}"}
        local = {"base_url": server.base_url, "headers": headers, "timeout": timeout}
        if case == "stall+pool":
            local["max_connections"] = 1
        client = la.AsyncClient(
            {}, transport=transport, providers={"local": local}, middleware=["timeout"], registry=test_registry()
        )
        async with client:
            if case == "stall+pool":  # the one connection is held by a stalled call
                held = asyncio.ensure_future(_call(client, "local/echo+stall", False, "hold"))
                while not any(seen.get("x-case") == headers["x-case"] for seen in server.seen_headers):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)  # until the server has it
            with pytest.raises((la.TransportError, la.StreamError)) as caught:
                await _call(client, f"local/echo+{fault}", stream, "fault")
            said[case] = str(caught.value).replace(url, "{url}")
            if case == "stall+pool":
                held.cancel()
                await asyncio.gather(held, return_exceptions=True)
    return said


async def test_timeouts_and_dropped_connections_are_worded_alike_on_every_transport(fake_server: FakeServer) -> None:
    said = await asyncio.gather(*(_worded(fake_server, t) for t in TRANSPORTS))
    expected = {case: words for case, (_, _, words) in WORDED.items()}
    for transport, words in zip(TRANSPORTS, said, strict=True):
        assert words == expected, transport
