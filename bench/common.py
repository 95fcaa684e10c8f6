"""What the benchmarks share: driving calls at a fixed concurrency while measuring this
process's CPU, the fake server in a process of its own, and the sections that
benchmarks other than bench/run.py write into docs/performance.md."""

from __future__ import annotations

import asyncio
import json
import re
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

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


# The section a benchmark writes into docs/performance.md (bench/run.py writes the rest
# and keeps these), between markers that name the script.
_SECTION = re.compile(r"^<!-- (bench/[\w.]+): begin -->\n.*?^<!-- \1: end -->\n", re.MULTILINE | re.DOTALL)


def _markers(script: str) -> tuple[str, str]:
    return f"<!-- bench/{script}: begin -->", f"<!-- bench/{script}: end -->"


def with_section(text: str, script: str, body: str) -> str:
    """``text`` (the performance page) with ``script``'s section replaced by ``body``
    between its markers, or appended."""
    begin_marker, end_marker = _markers(script)
    new = f"{begin_marker}\n{body.strip()}\n{end_marker}\n"
    begin, end = text.find(begin_marker), text.find(end_marker)
    if begin != -1 and end > begin:
        return text[:begin] + new + text[end + len(end_marker) + 1 :]
    return text.rstrip("\n") + "\n\n" + new


def foreign_sections(page: str) -> str:
    """The sections of ``page`` that benchmarks other than bench/run.py wrote, each with
    its markers, for bench/run.py to keep when it writes the page again."""
    return "".join("\n" + match.group(0) for match in _SECTION.finditer(page))


def write_pages(docs: Path, script: str, stem: str, results: dict[str, Any], page: str, section: str) -> None:
    """A benchmark's own figures (``docs/STEM.json``), its page (``docs/STEM.md``) and
    its section of docs/performance.md; the figures printed."""
    (docs / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (docs / f"{stem}.md").write_text(page)
    performance = docs / "performance.md"
    performance.write_text(with_section(performance.read_text() if performance.exists() else "", script, section))
    print(json.dumps(results, indent=2))
