"""The documentation site, as ``make lint`` builds it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_site_shows_code_on_its_landing_page_and_publishes_no_build_hook(tmp_path: Path) -> None:
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    assert not list(site.rglob("*.py"))
    landing = (site / "index.html").read_text()
    assert "AsyncClient" in landing
    assert landing.count('<div class="highlight"') == 2  # the example, then the make commands
