"""Smoke runs of the benchmarks with tiny N, so that they keep working: each contender
answers through nginx (Debian's nginx, which .ci/run installs) and gets a figure."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parent.parent / "bench"
# The contenders every smoke run has (the core's test dependencies install them).
LLMADAPTERS = ["la-aiohttp", "la-httpx", "la-openai"]
INSTALLED = [*LLMADAPTERS, "aiohttp", "httpx2", "openai-aiohttp", "openai-httpx2"]


def run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=300, cwd=BENCH
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_benchmark_measures_every_figure_and_judges_the_goals(tmp_path: Path) -> None:
    # A section that another benchmark (bench/ray_data.py) wrote into the page survives.
    foreign = "<!-- bench/other.py: begin -->\n## Other\n\nits figures\n<!-- bench/other.py: end -->\n"
    (tmp_path / "performance.md").write_text(f"# the page of an earlier run\n\n{foreign}")
    run("run.py", "--quick", "--out", str(tmp_path))
    results = json.loads((tmp_path / "performance.json").read_text())
    assert results["failed"] == {}
    levels = [str(c) for c in results["settings"]["concurrency"]]
    assert levels == ["1", "4"]
    for key in [*INSTALLED, "la-aiohttp-bare", "la-httpx-batch"]:
        for level in levels:
            figures = results["unary"][key][level]
            assert figures["req_s"] > 0, (key, level)
            assert figures["cpu_ms_per_1000"] > 0, (key, level)
    for key in INSTALLED:
        stream = results["stream"][key]
        assert stream["chunks_per_stream"] == 50, key  # each chunk counted
        assert stream["chunks_s"] > 0, key
        assert results["memory"][key]["peak_rss_mib"] > 0, key
        assert results["memory"][key]["runs"] == 1, key
        assert results["latency"]["req_s"][key] > 0, key
    assert [run["lines"] for run in results["batch"]] == [200, 2000]
    assert all(run["peak_rss_mib"] > 0 and run["req_s"] > 0 for run in results["batch"]), results["batch"]
    assert results["imports"]["python"] > 0
    assert "llmadapters" in results["imports"]
    # Every goal whose contenders are installed is judged from a figure of this run.
    goals = {goal["what"]: goal for goal in results["goals"]}
    judged = [what for what, goal in goals.items() if "LiteLLM" not in what]
    assert len(judged) == 9
    for what in judged:
        assert goals[what]["value"] is not None, what
        assert goals[what]["met"] is (
            goals[what]["value"] <= goals[what]["target"]
            if goals[what]["most"]
            else goals[what]["value"] >= goals[what]["target"]
        ), what
    page = (tmp_path / "performance.md").read_text()
    assert page.startswith("# Performance")  # the page is written from these figures
    assert page.endswith("\n\n" + foreign)
    assert "an earlier run" not in page


def test_the_layers_benchmark_measures_every_layer() -> None:
    out = run("aiohttp_layers.py", "-n", "30", "-r", "1", "-c", "4")
    rates = re.findall(r"(\d+) req/s", out)
    assert len(rates) == 4
    assert all(int(rate) > 0 for rate in rates)


def test_the_embeddings_benchmark_measures_each_contender_and_keeps_the_other_sections(tmp_path: Path) -> None:
    foreign = "<!-- bench/other.py: begin -->\n## Other\n<!-- bench/other.py: end -->\n"
    (tmp_path / "performance.md").write_text(f"# Performance\n\n{foreign}")
    for _ in range(2):  # the second run replaces its section, not appends another
        run("embeddings.py", "--texts", "300", "--rounds", "1", "--docs", str(tmp_path))
    results = json.loads((tmp_path / "embeddings-performance.json").read_text())
    assert set(results["contenders"]) == {"llmadapters batch", "llmadapters batch --embed-chunk", "openai SDK"}
    for figures in results["contenders"].values():
        assert figures["texts_per_s"] > 0
        assert figures["peak_rss_mib"] > 0
    assert results["contenders"]["openai SDK"]["vs_sdk"] == 1.0
    page = (tmp_path / "performance.md").read_text()
    assert foreign in page
    assert page.count("<!-- bench/embeddings.py: begin -->") == 1
    assert "## Embeddings" in page
    assert "| openai SDK |" in (tmp_path / "embeddings-performance.md").read_text()
