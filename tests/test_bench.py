"""Smoke runs of the benchmarks with tiny N, so that they keep working: each contender
answers through nginx (Debian's nginx, which .ci/run installs) and gets a figure."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parent.parent / "bench"
LLMADAPTERS = [
    "llmadapters, aiohttp transport",
    "llmadapters, httpx transport",
    "llmadapters, openai transport (SDK on aiohttp)",
]


def run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=300, cwd=BENCH
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def figures(section: str, label: str) -> list[float]:
    """The numbers in the row of ``label`` of the section's table, each checked > 0."""
    row = re.search(rf"^\| {re.escape(label)} \|(.*)\|$", section, re.MULTILINE)
    assert row is not None, f"no row {label!r} in:\n{section}"
    values = [float(cell.replace(",", "")) for cell in re.findall(r"\d[\d,]*(?:\.\d+)?", row.group(1))]
    assert values, row.group(0)
    assert all(value > 0 for value in values), row.group(0)
    return values


def test_the_benchmark_writes_the_performance_page(tmp_path: Path) -> None:
    run("run.py", "--quick", "--out", str(tmp_path))
    results = json.loads((tmp_path / "performance.json").read_text())
    assert {stream["chunks_per_stream"] for stream in results["stream"].values()} == {50}  # each chunk counted
    page = (tmp_path / "performance.md").read_text()
    sections = {part.split("\n", 1)[0]: part for part in page.split("\n## ")}

    def section(title: str) -> str:
        return next(text for heading, text in sections.items() if heading.startswith(title))

    unary, cpu = section("Requests/s").split("### Client CPU-ms per 1,000 requests")
    for label in [*LLMADAPTERS, "llmadapters, aiohttp transport, no middleware", "plain aiohttp"]:
        assert len(figures(unary, label)) == 2, label  # concurrency 1 and 4
        assert len(figures(cpu, label)) == 2, label
    for title in ("Streaming", "Memory with 200 calls in flight", "Against a latency model"):
        for label in [*LLMADAPTERS, "plain aiohttp"]:
            figures(section(title), label)
    batch = section("Memory of the `llmadapters batch` command")
    assert len(figures(batch, "200")) == len(figures(batch, "2,000")) == 2  # peak RSS, req/s
    imports = section("Import time")
    figures(imports, "bare start-up, `python -c pass`")
    figures(imports, "`import llmadapters`, above that")


def test_the_layers_benchmark_measures_every_layer() -> None:
    out = run("aiohttp_layers.py", "-n", "30", "-r", "1", "-c", "4")
    rates = re.findall(r"(\d+) req/s", out)
    assert len(rates) == 4
    assert all(int(rate) > 0 for rate in rates)
