"""What the benchmarks share: driving calls at a fixed concurrency while measuring this
process's CPU, and the fake server in a process of its own."""

from __future__ import annotations

import asyncio
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

Call = Callable[[], Awaitable[object]]


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_calls(call: Call, n: int, concurrency: int) -> None:
    """Run ``n`` calls with at most ``concurrency`` in flight."""
    remaining = iter(range(n))

    async def worker() -> None:
        for _ in remaining:
            await call()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def drive(call: Call, n: int, concurrency: int) -> tuple[float, float]:
    """Run ``n`` calls with at most ``concurrency`` in flight; return (req/s, CPU-ms per 1,000)."""
    cpu_start, start = cpu(), time.perf_counter()
    await run_calls(call, n, concurrency)
    wall, used = time.perf_counter() - start, cpu() - cpu_start
    return n / wall, used * 1000 * 1000 / n


def start_fake_server(options: list[str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """``llmadapters fake-server`` in a process of its own; returns it and its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmadapters.cli", "fake-server", "--port", "0", *(options or [])],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, line.rsplit(" ", 1)[-1].strip()


def free_port() -> int:
    """A loopback port free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, seconds: float = 5.0) -> bool:
    """Whether something accepts connections on loopback ``port`` within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def with_section(text: str, new: str, markers: tuple[str, str]) -> str:
    """``text`` (a generated page) with the section between ``markers`` (a benchmark's own,
    kept when the page is rewritten) replaced by ``new``, or ``new`` appended."""
    begin, end = text.find(markers[0]), text.find(markers[1])
    if begin != -1 and end > begin:
        return text[:begin] + new + text[end + len(markers[1]) + 1 :]
    return text.rstrip("\n") + "\n\n" + new
