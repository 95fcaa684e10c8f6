"""Smoke runs of the benchmarks with tiny N, so that they keep working: each contender
answers through nginx (Debian's nginx, which .ci/run installs) and gets a figure."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parent.parent / "bench"


def run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=300, cwd=BENCH
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_transports_benchmark_measures_every_contender() -> None:
    out = run("transports.py", "-n", "30", "-r", "1", "-c", "4")
    rows = re.findall(r"^  (.+?)\s+(\d+) req/s\s+(\d+) CPU-ms/1000", out, re.MULTILINE)
    names = {name.strip() for name, _, _ in rows}
    assert {"plain aiohttp", "llmadapters aiohttp", "llmadapters httpx", "llmadapters openai (aiohttp)"} <= names
    assert len(rows) == 9
    assert all(int(rate) > 0 for _, rate, _ in rows)
    assert "nginx with plain aiohttp" in out


def test_the_layers_benchmark_measures_every_layer() -> None:
    out = run("aiohttp_layers.py", "-n", "30", "-r", "1", "-c", "4")
    rates = re.findall(r"(\d+) req/s", out)
    assert len(rates) == 4
    assert all(int(rate) > 0 for rate in rates)
