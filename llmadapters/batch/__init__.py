"""The batch engine: many requests, bounded memory, results as they complete.

``client.batch(requests, concurrency=64)`` reads ``requests`` lazily (any iterable or
async iterable), routes each to its provider's *lane* and yields `BatchResult`s as they
complete. Each provider's lane has ``concurrency`` workers of its own. A request
answered 429 is put aside (for its ``Retry-After``, or a short backoff: the rate limiter
paces the lane) and sent again until its ``line_deadline``, without holding a worker,
so a 429 never ends a line early. Reading stops while every lane has enough lines
queued; while some lane has room it goes on, so that a slow or rate-limited provider's
lines do not hold up the lines of another behind them, until `MAX_HELD` lines are taken
and unfinished: memory is bounded, never growing with the input.

Requests are dicts in the OpenAI Batch API line format
(``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {...}}``, or
``"url": "/v1/embeddings"`` with an embeddings body) or plain ``{"model", "messages",
...}`` bodies (``{"model", "input", ...}`` for embeddings); one input may mix both.
An embeddings input larger than ``embed_chunk`` (or the provider's documented
``max_inputs``) is sent as several requests, sent one after another, whose replies make
one result. This module also reads and writes the JSONL files of
``llmadapters batch`` (`read_jsonl`, `output_record`, `completed_ids`) and keeps the
run's figures (`BatchSummary`).
"""

from __future__ import annotations

from .engine import MAX_HELD, BatchRun
from .jsonl import (
    BatchItem,
    Shard,
    completed_ids,
    duplicate_ids,
    duplicates_text,
    output_record,
    parse_item,
    read_jsonl,
    requests_of,
    set_aside_failed,
    write_record,
)
from .summary import BatchSummary, LatencyHistogram

__all__ = [
    "MAX_HELD",
    "BatchItem",
    "BatchRun",
    "BatchSummary",
    "LatencyHistogram",
    "Shard",
    "completed_ids",
    "duplicate_ids",
    "duplicates_text",
    "output_record",
    "parse_item",
    "read_jsonl",
    "requests_of",
    "set_aside_failed",
    "write_record",
]
