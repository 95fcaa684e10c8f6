"""Embeddings lines in a batch (``/v1/embeddings``), alone and mixed with chat lines, split
by ``embed_chunk`` and joined back, against the fake server over loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

import llmadapters as la
from llmadapters.batch import BatchSummary, output_record
from llmadapters.plugin import EmbeddingsAPI, ProviderSpec
from llmadapters.testing.fake_server import embedding_of
from tests.conftest import test_registry

if TYPE_CHECKING:
    from pathlib import Path

    from llmadapters.testing import FakeServer

WORDS = [f"text number {i}" for i in range(7)]


def embed_line(custom_id: str, model: str, inputs: Any, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": model, "input": inputs, **body},
    }


def chat_line(custom_id: str, model: str = "local/echo") -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": custom_id}]}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


async def test_a_mixed_input_gives_chat_and_embeddings_records(fake_server: FakeServer) -> None:
    rows = [
        chat_line("chat"),
        embed_line("many", "local/embed", WORDS, dimensions=4),
        {"custom_id": "plain", "model": "local/embed", "input": "plain text", "dimensions": 3},
        embed_line("asked-base64", "local/embed", "b", dimensions=2, encoding_format="base64"),
    ]
    async with la.AsyncClient({}, providers={"local": {"base_url": fake_server.base_url}}) as client:
        results = {r.custom_id: r async for r in client.batch(rows, embed_chunk=3)}
    records = {custom_id: output_record(result) for custom_id, result in results.items()}
    assert all(record["error"] is None for record in records.values())
    assert records["chat"]["response"]["body"]["choices"][0]["message"]["content"] == "chat"
    body = records["many"]["response"]["body"]
    # Seven inputs in chunks of three: three requests, one record, indices over the whole input.
    assert [item["index"] for item in body["data"]] == list(range(7))
    assert [item["embedding"] for item in body["data"]] == [embedding_of(text, 4) for text in WORDS]
    assert body["usage"] == {"prompt_tokens": 21, "total_tokens": 21}
    assert records["plain"]["response"]["body"]["data"][0]["embedding"] == embedding_of("plain text", 3)
    assert isinstance(records["asked-base64"]["response"]["body"]["data"][0]["embedding"], str)
    assert [len(b["input"]) for b in fake_server.seen_bodies if b["model"] == "embed" and b.get("dimensions") == 4] == [
        3,
        3,
        1,
    ]
    assert results["many"].attempts == 1  # its chunks count as one call
    assert records["many"]["response"]["status_code"] == 200


async def test_a_chunk_answered_429_sends_only_the_chunks_not_yet_answered(fake_server: FakeServer) -> None:
    # Every chunk's first attempt is refused: the line is put aside after each, and each
    # time sends on from the chunk that was refused, never one already answered.
    refusing = {"x-fake-fail-times": "1", "x-fake-retry-after": "0"}
    providers = {"local": {"base_url": fake_server.base_url, "headers": refusing}}
    async with la.AsyncClient({}, providers=providers) as client:
        results = [r async for r in client.batch([embed_line("x", "local/embed+fail-429", WORDS)], embed_chunk=3)]
        limits = client.limits()["local"]
    assert results[0].ok, results[0].error
    assert limits["rate_limited"] == 3
    assert fake_server.requests_served == 6  # two sends of each of the three chunks
    assert [fake_server.answered[text] for text in (WORDS[0], WORDS[3], WORDS[6])] == [1, 1, 1]
    assert results[0].response is not None
    assert [item.index for item in results[0].response.data] == list(range(7))


async def test_the_providers_documented_limit_splits_an_input_without_being_asked(fake_server: FakeServer) -> None:
    registry = la.AsyncClient({}).registry
    async with la.AsyncClient({}, registry=registry) as client:
        fake = registry.providers["fake"]
        assert fake.embeddings is not None
        assert fake.embeddings.max_inputs == 2048
        inputs = [f"w{i}" for i in range(2050)]
        results = [r async for r in client.batch([embed_line("big", "fake/embed", inputs, dimensions=2)])]
    assert results[0].ok, results[0].error
    assert results[0].response is not None
    assert len(results[0].response.data) == 2050
    assert results[0].response.data[2049].index == 2049
    assert results[0].response.data[2049].embedding == embedding_of("w2049", 2)


async def test_an_input_over_the_providers_tokens_a_request_is_split_by_its_tokens(fake_server: FakeServer) -> None:
    """OpenAI takes 300,000 tokens a request summed over its inputs, whatever their
    count: an input of a few long texts goes as several requests, each within 4/5 of it."""
    registry = test_registry()
    limited = ProviderSpec(
        name="limited",
        base_url=fake_server.base_url,
        key_required=False,
        embeddings=EmbeddingsAPI(models=("embed",), max_inputs=2048, max_tokens=1000),
    )
    registry.add_providers([limited])
    texts = [f"{i} " + "word " * 100 for i in range(10)]  # about 126 tokens each, by the estimate
    async with la.AsyncClient({}, registry=registry) as client:
        results = [r async for r in client.batch([embed_line("long", "limited/embed", texts, dimensions=2)])]
    assert results[0].ok, results[0].error
    assert results[0].response is not None
    assert [item.embedding for item in results[0].response.data] == [embedding_of(text, 2) for text in texts]
    assert fake_server.requests_served == 2  # 6 texts (756 tokens, within 800) and then 4


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        (embed_line("x", "local/embed", []), "input must be a non-empty string"),
        ({"custom_id": "x", "url": "/v1/embeddings", "body": {"model": "local/embed"}}, "needs 'input'"),
        ({"custom_id": "x", "url": "/v1/moderations", "body": {}}, "/v1/chat/completions and /v1/embeddings"),
        (embed_line("x", "local/embed", "hi", encoding_format="int8"), "encoding_format must be"),
    ],
)
async def test_a_bad_embeddings_line_is_an_error_record_and_the_rest_go_on(
    fake_server: FakeServer, row: dict[str, Any], problem: str
) -> None:
    async with la.AsyncClient({}, providers={"local": {"base_url": fake_server.base_url}}) as client:
        results = {r.custom_id: r async for r in client.batch([row, embed_line("good", "local/embed", "fine")])}
    assert isinstance(results["x"].error, la.BadRequestError)
    assert problem in str(results["x"].error)
    assert results["x"].attempts == 0
    assert results["good"].ok
    assert fake_server.requests_served == 1


async def test_the_summary_counts_cache_hits_of_chat_and_embeddings(fake_server: FakeServer, tmp_path: Path) -> None:
    config = {
        "defaults": {"middleware": ["cache", "retry"], "cache": {"path": str(tmp_path / "c.sqlite")}},
        "providers": {"local": {"base_url": fake_server.base_url}},
    }
    rows = [chat_line("chat"), embed_line("embed", "local/embed", WORDS)]
    summaries = []
    for _ in range(2):
        summary = BatchSummary()
        async with la.AsyncClient(config) as client:
            async for result in client.batch(rows, embed_chunk=4):
                summary.add(result)
        summaries.append(summary.as_dict())
    assert [s["cached"] for s in summaries] == [0, 2]
    assert [s["ok"] for s in summaries] == [2, 2]
    assert fake_server.requests_served == 3  # the chat line and two chunks, once


def test_cli_batch_embeds_with_embed_chunk_and_prices_an_estimate(tmp_path: Path) -> None:
    rows = [embed_line(f"e{i}", "fake/embed", WORDS[: i + 1], dimensions=2) for i in range(5)]
    rows.append(chat_line("c", "fake/echo"))
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    run = subprocess.run(
        [sys.executable, "-m", "llmadapters.cli", "batch", "in.jsonl", "-o", "out.jsonl", "--embed-chunk", "2"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    out = {r["custom_id"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert len(out) == 6
    assert [item["index"] for item in out["e4"]["response"]["body"]["data"]] == [0, 1, 2, 3, 4]
    assert out["e4"]["response"]["body"]["data"][4]["embedding"] == embedding_of(WORDS[4], 2)
    assert out["c"]["response"]["body"]["choices"][0]["message"]["content"] == "c"
    assert "requests 6: 6 ok, 0 errors" in run.stderr
    assert "retries 0" in run.stderr
    estimate = subprocess.run(
        [sys.executable, "-m", "llmadapters.cli", "batch", "in.jsonl", "--estimate", "--summary-json", "e.json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert estimate.returncode == 0, estimate.stderr
    figures = json.loads((tmp_path / "e.json").read_text())
    assert figures["requests"] == 6
    assert figures["invalid"] == 0
    assert figures["by_model"]["fake/embed"]["output_tokens_bound"] == 0


def test_embeddings_lines_of_a_batch_api_job_are_refused_and_its_chat_lines_go(tmp_path: Path) -> None:
    rows = [embed_line("e", "fake/embed", "x"), chat_line("c", "fake/echo")]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    command = [sys.executable, "-m", "llmadapters.cli", "batch", "in.jsonl", "-o", "out.jsonl", "--via", "batch-api"]
    run = subprocess.run(
        [*command, "--poll-interval", "0.05"], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert run.returncode == 1, run.stderr  # one line ended in an error
    out = {r["custom_id"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert out["e"]["error"]["message"] == (
        "invalid request: line 1: an embeddings line is sent online (--via online), not in a Batch API job"
    )
    assert out["c"]["response"]["body"]["choices"][0]["message"]["content"] == "c"
    chunked = subprocess.run(
        [*command, "--embed-chunk", "2"], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert chunked.returncode == 2
    assert "--embed-chunk applies to online sending, not to --via batch-api" in chunked.stderr


@pytest.mark.parametrize("option", ["--embed-chunk", "-c"])
@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_a_count_below_one_is_a_usage_error_and_nothing_is_sent(tmp_path: Path, option: str, value: str) -> None:
    (tmp_path / "in.jsonl").write_text(json.dumps(embed_line("e", "fake/embed", "x")) + "\n")
    command = [sys.executable, "-m", "llmadapters.cli", "batch", "in.jsonl", "-o", "out.jsonl", option, value]
    run = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 2
    assert f"argument {option}" in run.stderr
    assert f"expected a whole number of 1 or more, got '{value}'" in run.stderr
    assert not (tmp_path / "out.jsonl").exists()
