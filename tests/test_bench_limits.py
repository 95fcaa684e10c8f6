"""A smoke run of bench/limits.py (the hidden rate limits benchmark) with tiny N, so that
it keeps working: every scenario runs, llmadapters (on its default and its aiohttp
transport) and the hand-written aiohttp loop get figures, and the server counted their
requests. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parent.parent / "bench"
SCENARIOS = {"conc", "rpm", "tpm", "sporadic", "drop", "all"}


def test_the_limits_benchmark_runs_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "limits.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / "limits.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=BENCH,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    assert {scenario["name"] for scenario in results["scenarios"]} == SCENARIOS
    for scenario in results["scenarios"]:
        assert scenario["ideal_s"] > 0
        assert scenario["lines"] > 0
        for key in ("llmadapters", "llmadapters-aiohttp", "aiohttp"):
            run = scenario["runs"][key]
            where = f"{scenario['name']}, {key}: {run}"
            assert run["failed"] is None, where
            assert run["wall_s"] > 0, where
            assert run["goodput"] > 0, where
            assert run["requests"] >= scenario["lines"], where  # the server saw every line, at least once
            assert run["ok"] + run["errors"] == scenario["lines"], where
            assert run["records"] == scenario["lines"], where
    assert "### Summary: goodput / 429s per line" in done.stdout
    assert "| `all` |" in done.stdout
