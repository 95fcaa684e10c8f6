"""A standing property test of the batch engine, through the batch command: random JSONL
lines (wrong types at every key, missing keys, huge and odd strings, invalid UTF-8, lone
surrogates, duplicate ids, not JSON at all) mixed with good ones, against one fake
server over loopback. Every run ends with exactly one record per line, and every good
line answered."""

from __future__ import annotations

import io
import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmadapters.batch_cli import run
from llmadapters.cli import _parser

if TYPE_CHECKING:
    import pytest

    from llmadapters.testing import FakeServer

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
ODD_TEXT = st.sampled_from(
    ["", " ", "\x00", "\u202e evil", "\U0001f600", "a" * 200_000, "line\nbreak", '"quoted"', "\\", "local", "/"]
)
# Models that stay on loopback: the test's own provider, unknown or malformed names,
# and fallback chains. (No key is set for a built-in provider, so a name that reaches
# one is refused before anything is sent.)
MODELS = st.sampled_from(
    ["local/echo", "local", "nosuch/echo", "/", "local/", "local/echo+fail-400", "local/echo+malformed"]
)
CHAINS = st.lists(MODELS, max_size=3)
VALUES = JSON | ODD_TEXT | MODELS | CHAINS
BODY_KEYS = ["model", "messages", "stream", "provider", "temperature", "max_tokens", "tools", "n", "custom_id"]
LINE_KEYS = ["custom_id", "method", "url", "body"]


def good(i: int, text: str) -> dict[str, Any]:
    content = f"good {i} {text}"
    return {"custom_id": f"good-{i}", "model": "local/echo", "messages": [{"role": "user", "content": content}]}


@st.composite
def bad_line(draw: st.DrawFn, i: int) -> bytes:
    """One line that is wrong in some way (or, by chance, right: a line is never assumed bad)."""
    kind = draw(st.sampled_from(["retype", "drop", "batch-api", "raw", "not-utf8", "surrogate", "duplicate"]))
    line: Any = good(i, draw(st.text(max_size=10)))
    line["custom_id"] = f"bad-{i}"
    if kind == "retype":
        line[draw(st.sampled_from(BODY_KEYS))] = draw(VALUES)
    elif kind == "drop":
        for key in draw(st.sets(st.sampled_from(["custom_id", "model", "messages"]), min_size=1)):
            del line[key]
    elif kind == "batch-api":
        body = {k: v for k, v in line.items() if k != "custom_id"}
        line = {"custom_id": line["custom_id"], "method": "POST", "url": "/v1/chat/completions", "body": body}
        key = draw(st.sampled_from(LINE_KEYS))
        if draw(st.booleans()):
            line[key] = draw(VALUES)
        else:
            del line[key]
    elif kind == "raw":
        return draw(st.sampled_from([b"{not json", b"[]", b"5", b'"text"', b"null", b"{}", b"   ", b""]))
    elif kind == "not-utf8":
        return json.dumps(line).encode()[:-2] + draw(st.binary(min_size=1, max_size=4).filter(_not_utf8)) + b"}"
    elif kind == "surrogate":
        return json.dumps(line).replace(f"good {i}", "\\ud800 lone").encode()
    else:
        line["custom_id"] = draw(st.sampled_from(["good-0", "bad-0", "line-1"]))
    return json.dumps(line).encode()


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return b"\n" not in data
    return False


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[bytes], dict[int, str]]:
    """The lines of one input, and the good ones' prompts by line index."""
    lines: list[bytes] = []
    prompts: dict[int, str] = {}
    for i in range(draw(st.integers(min_value=1, max_value=25))):
        if draw(st.booleans()):
            row = good(i, draw(st.text(max_size=30) | ODD_TEXT))
            prompts[i] = row["messages"][0]["content"]
            lines.append(json.dumps(row, ensure_ascii=draw(st.booleans())).encode())
        else:
            lines.append(draw(bad_line(i)))
    return lines, prompts


def _config(base_url: str, folder: Path) -> Path:
    config = folder / "llmadapters.toml"
    config.write_text(
        "[defaults]\n"
        'middleware = ["retry", "timeout"]\n'
        "retry = { max_attempts = 2, initial_delay = 0.01, max_delay = 0.02 }\n"
        "timeout = { total = 30 }\n"
        f'[providers.local]\nbase_url = "{base_url}"\n'
    )
    return config


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=batches())
def test_every_line_gets_one_record_and_every_good_line_an_answer(
    llmadapters_fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch, batch: tuple[list[bytes], dict[int, str]]
) -> None:
    lines, prompts = batch
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    data = b"".join(line + b"\n" for line in lines)
    with tempfile.TemporaryDirectory() as folder:
        config = _config(llmadapters_fake_server.base_url, Path(folder))
        output = Path(folder) / "out.jsonl"
        args = _parser().parse_args(
            ["batch", "-", "-o", str(output), "--config", str(config), "--quiet", "--line-deadline", "2"]
        )
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
        status = run(args)
        records = [json.loads(text) for text in output.read_bytes().split(b"\n") if text]
    assert status in (0, 1)
    # The engine numbers the lines that are not blank; each has exactly one record.
    numbered = [i for i, line in enumerate(lines) if line.strip()]
    assert sorted(r["id"] for r in records) == sorted(f"batch_req_{n}" for n in range(len(numbered)))
    by_line = {numbered[int(r["id"].removeprefix("batch_req_"))]: r for r in records}
    for i, prompt in prompts.items():
        record = by_line[i]
        assert record["error"] is None, record
        assert record["custom_id"] == f"good-{i}"
        assert record["response"]["body"]["choices"][0]["message"]["content"] == prompt
    assert all(isinstance(r["custom_id"], str) and r["custom_id"] for r in records)
    assert status == (1 if any(r["error"] for r in records) else 0)
