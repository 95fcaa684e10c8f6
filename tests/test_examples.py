"""Every example script runs (they are what the docs include)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(name: str, tmp_path: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_quickstart_async(tmp_path: Path) -> None:
    assert run("quickstart_async.py", tmp_path) == "Summarise item 0 10 fake\nstreamed word by word\n"


def test_quickstart_sync(tmp_path: Path) -> None:
    assert run("quickstart_sync.py", tmp_path) == "hi\n50 of 50 answered\n"


def test_cost_middleware(tmp_path: Path) -> None:
    # 11 calls of 5 prompt + 16 completion tokens at $0.002 per 1,000.
    assert run("cost_middleware.py", tmp_path) == "spent on fake: $0.0005\n"


def test_tool_calls(tmp_path: Path) -> None:
    assert run("tool_calls.py", tmp_path) == "tool_calls get_weather {'input': 'Paris'}\na short answer\n"


def test_fan_out(tmp_path: Path) -> None:
    assert run("fan_out.py", tmp_path) == "alpha what is 2 + 2\nbeta what is 2 + 2\nanswered by beta\n"


def test_batch_resume(tmp_path: Path) -> None:
    source, target = str(EXAMPLES / "prompts.jsonl"), str(tmp_path / "results.jsonl")
    first = subprocess.run(
        [sys.executable, str(EXAMPLES / "batch_resume.py"), source, target], capture_output=True, text=True, timeout=120
    )
    assert (first.returncode, first.stdout) == (0, "0 already done; 300 answered now\n"), first.stderr
    again = subprocess.run(
        [sys.executable, str(EXAMPLES / "batch_resume.py"), source, target], capture_output=True, text=True, timeout=120
    )
    assert again.stdout == "300 already done; 0 answered now\n"


def test_tool_loop(tmp_path: Path) -> None:
    answers = "['Paris', 'Rome', 'Oslo']"
    assert run("tool_loop.py", tmp_path) == "".join(
        f"fake/echo{profile} {answers}\n"
        for profile in (
            "",
            "+deepseek-thinking",
            "+qwen-thinking",
            "+zhipu-thinking",
            "+moonshot-thinking",
            "+mimo-thinking",
        )
    )


def test_response_cache(tmp_path: Path) -> None:
    assert run("response_cache.py", tmp_path) == (
        "first run: 0 of 20 answered from the cache\nsecond run: 20 of 20 answered from the cache\n"
    )
    assert (tmp_path / "responses.sqlite").exists()


def test_cost_and_budget(tmp_path: Path) -> None:
    # 7 prompt tokens at 0.50 and 3 completion tokens at 2.00 per million; each call of
    # the batch costs the same and is estimated at 7 x 0.50 + 5 x 2.00: the tenth leaves
    # 9.5e-05 spent, and an eleventh would pass 0.0001.
    assert run("cost_and_budget.py", tmp_path) == (
        "7 in, 3 out: 9.5e-06 USD\n"
        "a model with no price: None\n"
        "10 answered; budget reached: spent 9.5e-05 USD of 0.0001 USD; the next call would pass it\n"
    )


def test_batch_api(tmp_path: Path) -> None:
    assert run("batch_api.py", tmp_path) == (
        "exit status 0 - 5 answers, in the online mode's format:\nq0 question 0\nstate file left: False\n"
    )


def test_embeddings(tmp_path: Path) -> None:
    assert run("embeddings.py", tmp_path) == (
        "3 vectors of 32 floats; 18 tokens\n"
        "same text: 1.000; other text: True\n"
        "doc-0 -> 25 vectors, indexes 0 to 24\n"
        "doc-1 -> 25 vectors, indexes 0 to 24\n"
        "embedding models: ['embed', 'embed-large']\n"
    )
