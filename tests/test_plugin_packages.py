"""The plugin packages, installed with pip into a fresh venv together with the core, as a
new user would (the Makefile's .venv-e2e, built by `make test` before pytest runs)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
E2E_PYTHON = Path(os.environ.get("LLMADAPTERS_E2E_VENV", ROOT / ".venv-e2e")) / "bin" / "python"


def test_installed_plugins_serve_every_provider_through_every_transport(tmp_path: Path) -> None:
    assert E2E_PYTHON.exists(), f"{E2E_PYTHON} is missing: `make test` builds it (make .venv-e2e/.installed)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMADAPTERS_", "PYTHON"))}
    run = subprocess.run(
        [str(E2E_PYTHON), "-I", str(ROOT / "tests" / "e2e_plugins.py")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    # The installed copy, not this checkout.
    assert not results["llmadapters"].startswith(str(ROOT / "llmadapters"))
    calls = results["calls"]
    assert len(calls) == 5 * 3
    for call in calls:
        assert call["content"] == f"{call['provider']} via {call['transport']}"
        assert call["streamed"] == "streamed"
        expected = f"sk-{call['provider']}-e2e"
        assert call["auth"] == (expected if call["provider"] == "mimo" else f"Bearer {expected}")
    assert results["default_base_urls"] == {
        "deepseek": "https://api.deepseek.com",
        "zhipu": "https://open.bigmodel.cn/api/paas/v4",
        "mimo": "https://api.xiaomimimo.com/v1",
        "moonshot": "https://api.moonshot.cn/v1",
        "qwen": "https://dashscope.aliyuncs.com/compatible-mode/v1",
    }
    assert results["recorded"] == {
        "url": "https://api.deepseek.com/chat/completions",
        "auth": {"Authorization": "Bearer sk-deepseek-e2e"},
        "model": "deepseek-chat",
        "reply": "recorded",
    }
    listed = {line.split()[0]: line for line in results["plugins"].splitlines()[1:]}
    assert "batch_runner:ray" in listed.pop("ray")
    assert set(listed) == {"llmadapters", "aiohttp", "deepseek", "zhipu", "mimo", "moonshot", "otel", "qwen", "redis"}
    assert "llmadapters-deepseek  0.1.0    provider:deepseek" in listed["deepseek"]
