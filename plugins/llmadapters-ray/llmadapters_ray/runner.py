"""``llmadapters batch IN -o OUT --on ray``: the job's requests answered on a Ray cluster.

The command reads and checks the input where it runs (its lines, numbers, ``--resume``
and ``--shard`` are the core's), and hands the requests to Ray Data as rows, each body
as JSON text, so that Arrow never has to find one schema for bodies of every shape. The
actors answer them with `BatchRecordsUDF` and send back each request's output record,
which the command writes as it writes the local engine's.
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any

from llmadapters.plugin import BatchItem, output_record

from .udf import ChatCompletionsUDF

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from llmadapters import BatchResult
    from llmadapters.plugin import BatchJob

__all__ = ["BATCH_SIZE", "BatchRecordsUDF", "run_on_ray"]

# Set to 0, Ray starts a single node on loopback (its own name: clusters are a Linux
# thing, and off by default on Windows and macOS).
LOCAL_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Rows per batch of an actor: what Ray sends again when an actor dies mid-batch.
BATCH_SIZE = 64


def item_row(item: BatchItem) -> dict[str, Any]:
    body = None if item.body is None else json.dumps(item.body)
    return {
        "index": item.index,
        "custom_id": item.custom_id,
        "body": body,
        "problem": item.problem,
        "line": item.line,
        "embeddings": item.embeddings,
    }


class BatchRecordsUDF(ChatCompletionsUDF):
    """`ChatCompletionsUDF` for rows made by `item_row`: each row's output is its
    OpenAI batch output record, as JSON text, in the column ``record``."""

    def items(self, batch: Mapping[str, Sequence[Any]]) -> list[BatchItem]:
        return [
            BatchItem(
                index=int(index),
                custom_id=str(custom_id),
                body=None if body is None else json.loads(body),
                problem=problem,
                line=None if line is None else int(line),
                embeddings=bool(embeddings),
            )
            for index, custom_id, body, problem, line, embeddings in zip(
                batch["index"],
                batch["custom_id"],
                batch["body"],
                batch["problem"],
                batch["line"],
                batch["embeddings"],
                strict=True,
            )
        ]

    def columns(self, batch: dict[str, Any], results: list[BatchResult]) -> dict[str, Any]:
        return {"record": [json.dumps(output_record(result)) for result in results]}


def actors_for(cpus: float, rows: int) -> int:
    """One actor per CPU of the cluster, and no more than there are batches."""
    return max(1, min(int(cpus), -(-rows // BATCH_SIZE)))


def run_on_ray(job: BatchJob) -> Iterator[dict[str, Any]]:
    """The `llmadapters.plugins.BatchRunner` named ``ray``: joins the cluster at
    ``job.address`` (else ``$RAY_ADDRESS``, else a local Ray it starts and stops), and
    yields each request's output record as its batch completes."""
    rows = [item_row(item) for item in job.items]
    if not rows:
        return
    if job.address is None and "RAY_ADDRESS" not in os.environ:
        # A Ray of this machine alone: its processes talk on 127.0.0.1, not on the
        # machine's network address (read when ray is imported).
        os.environ.setdefault(LOCAL_ONLY, "0")
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=job.address, log_to_driver=False, logging_level=logging.WARNING)
    # The command shows its own progress and summary: Ray Data's would interleave.
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
        actors = actors_for(resources.get("CPU", 1), len(rows))
        options: dict[str, Any] = {} if job.limits is None else {"limits": job.limits}
        answered = ray.data.from_items(rows).map_batches(
            BatchRecordsUDF,
            fn_constructor_kwargs={
                "config": job.config,
                "model": job.model,
                "actors": actors,
                "concurrency": job.concurrency,
                "line_deadline": job.line_deadline,
                "client_options": options,
            },
            compute=ray.data.ActorPoolStrategy(size=actors),
            batch_size=BATCH_SIZE,
        )
        for row in answered.iter_rows():
            yield json.loads(row["record"])
    finally:
        if started:
            ray.shutdown()
