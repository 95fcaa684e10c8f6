"""The command line runs on uvloop when it is installed (a dependency on Linux and
macOS), and leaves the process's event loop policy as it found it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmadapters import cli

if TYPE_CHECKING:
    from collections.abc import Coroutine

    import pytest


def test_the_command_line_runs_its_loop_on_uvloop_and_then_restores_the_policy(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    loops: list[str] = []
    real_run = asyncio.run

    def observed_run(main: Coroutine[Any, Any, Any], **kwargs: Any) -> Any:
        async def observe() -> Any:
            loops.append(type(asyncio.get_running_loop()).__module__)
            return await main

        return real_run(observe(), **kwargs)

    monkeypatch.setattr(asyncio, "run", observed_run)
    policy = asyncio.get_event_loop_policy()
    assert cli.main(["chat", "--no-stream", "-m", "fake/echo", "on uvloop"]) == 0
    assert capsys.readouterr().out == "on uvloop\n"
    assert loops == ["uvloop"], "uvloop (a dependency) was not used"
    assert asyncio.get_event_loop_policy() is policy


def test_the_documented_opt_in_runs_the_library_on_uvloop(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "on_uvloop.py"
    done = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert (done.returncode, done.stdout) == (0, "hi uvloop\n"), done.stderr
