"""Ray Data against the local engine, on the same job: ``.venv/bin/python bench/ray_data.py``.

The same N chat requests go to ``llmadapters fake-server`` (a process of its own,
answering at once, so that what is measured is the client side) through

- the local engine: ``AsyncClient.batch`` in this process, as ``llmadapters batch`` runs it;
- Ray Data on a local Ray of 2 CPUs: ``ChatCompletionsUDF`` on an actor pool of 2, one
  batch of 64 rows at a time per actor call, as the ``ray`` runner sets it up.

Each is timed from the first request to the last result, the median of ``--rounds``
rounds (interleaved); Ray's start (``ray.init``) is not counted, and its actors' start is
measured apart, as the wall time of a one-batch job. The overhead per row is the Ray
run's wall time less the local engine's, over the rows. Writes ``docs/ray-performance.md``
(and ``.json``), and the section of ``docs/performance.md`` that links to it (kept
between its markers; ``make bench`` rewrites that page without it, so run this after).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from common import start_fake_server, write_pages

ROOT = Path(__file__).resolve().parent.parent
BATCH_SIZE = 64
CONCURRENCY = 64


def rows(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "prompt": f"summarise item {i}"} for i in range(n)]


def local_engine(base_url: str, n: int) -> float:
    """Seconds for the local engine to answer ``n`` requests."""
    import llmadapters as la

    requests = [{"model": "local/echo", "messages": [{"role": "user", "content": r["prompt"]}]} for r in rows(n)]

    async def run() -> float:
        async with la.AsyncClient({"providers": {"local": {"base_url": base_url}}}) as client:
            started = time.perf_counter()
            answered = [result async for result in client.batch(requests, concurrency=CONCURRENCY) if result.ok]
            wall = time.perf_counter() - started
        assert len(answered) == n, f"{n - len(answered)} requests failed"
        return wall

    return asyncio.run(run())


def on_ray(ray: Any, base_url: str, n: int, actors: int) -> float:
    """Seconds for Ray Data to answer ``n`` rows (actors' start included)."""
    from llmadapters_ray import ChatCompletionsUDF

    kwargs = {
        "config": {"providers": {"local": {"base_url": base_url}}},
        "model": "local/echo",
        "prompt_column": "prompt",
        "actors": actors,
        "concurrency": CONCURRENCY,
    }
    dataset = ray.data.from_items(rows(n)).map_batches(
        ChatCompletionsUDF,
        fn_constructor_kwargs=kwargs,
        compute=ray.data.ActorPoolStrategy(size=actors),
        batch_size=BATCH_SIZE,
    )
    started = time.perf_counter()
    answered = sum(1 for row in dataset.iter_rows() if row["error"] is None)
    wall = time.perf_counter() - started
    assert answered == n, f"{n - answered} rows failed"
    return wall


def measure(n: int, rounds: int) -> dict[str, Any]:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # one node, on 127.0.0.1
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray

    server, base_url = start_fake_server()
    walls: dict[str, list[float]] = {"local": [], "ray": [], "ray_one_batch": []}
    try:
        started = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        init_s = time.perf_counter() - started
        ray.data.DataContext.get_current().enable_progress_bars = False
        for _ in range(rounds):
            walls["local"].append(local_engine(base_url, n))
            walls["ray"].append(on_ray(ray, base_url, n, actors=2))
            walls["ray_one_batch"].append(on_ray(ray, base_url, BATCH_SIZE, actors=1))
        ray_version = ray.__version__
        ray.shutdown()
    finally:
        server.terminate()
        server.wait(30)
    median = {name: statistics.median(values) for name, values in walls.items()}
    return {
        "rows": n,
        "rounds": rounds,
        "batch_size": BATCH_SIZE,
        "concurrency": CONCURRENCY,
        "ray_init_s": round(init_s, 2),
        "wall_s": {name: [round(v, 3) for v in values] for name, values in walls.items()},
        "local_rows_per_s": round(n / median["local"], 1),
        "ray_rows_per_s": round(n / median["ray"], 1),
        "ray_vs_local": round(median["local"] / median["ray"], 2),
        "ray_one_batch_s": round(median["ray_one_batch"], 3),
        "overhead_us_per_row": round((median["ray"] - median["local"]) / n * 1e6),
        "marginal_overhead_us_per_row": round(
            ((median["ray"] - median["ray_one_batch"]) / (n - BATCH_SIZE) - median["local"] / n) * 1e6
        ),
        "ray": ray_version,
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def page(results: dict[str, Any]) -> str:
    r = results
    return f"""# Ray Data, measured

!!! note "Generated by `bench/ray_data.py`"
    This page is written by `.venv/bin/python bench/ray_data.py`: do not edit it by hand.
    This run: {r["date"]}, {r["cores"]} cores, CPython {r["python"]}, Ray {r["ray"]}. The
    raw figures are in [ray-performance.json](ray-performance.json).

The same {r["rows"]:,} chat requests, answered by `llmadapters fake-server` (a process of
its own, replying at once: the client side is what is measured), through the local engine
(`AsyncClient.batch`, concurrency {r["concurrency"]}, in one process) and through Ray Data on
a local Ray of 2 CPUs (`ChatCompletionsUDF` on 2 actors, batches of {r["batch_size"]} rows,
concurrency {r["concurrency"]} per batch). Medians of {r["rounds"]} interleaved rounds;
Ray's own start (`ray.init`, {r["ray_init_s"]} s here) is left out.

| | rows/s | wall time, s (each round) |
|---|---:|---|
| local engine | {r["local_rows_per_s"]:,} | {", ".join(map(str, r["wall_s"]["local"]))} |
| Ray Data, 2 actors | {r["ray_rows_per_s"]:,} | {", ".join(map(str, r["wall_s"]["ray"]))} |

- Ray Data against the local engine: **{r["ray_vs_local"]}x** the throughput.
- Overhead per row: **{r["overhead_us_per_row"]} µs** (Ray's wall time less the local
  engine's, over the rows; negative when Ray's second process buys more than it costs).
- A job of one batch ({r["batch_size"]} rows, one actor) takes {r["ray_one_batch_s"]} s:
  the fixed cost of starting a pipeline and its actors. Without it, each further row
  costs **{r["marginal_overhead_us_per_row"]} µs** more on Ray than on the local engine.

On one machine the fake server, the actors and Ray's own processes share the same 2 cores,
so this is the price of Ray, not a speed-up: the local engine alone answers more calls a
second than most provider accounts allow. The machine is shared, so rounds vary: each
round's time is in the table. Ray pays off when the rows
already live in a Ray Data pipeline, or are spread over a cluster's nodes (see
[Scaling out with Ray](guides/ray.md)).
"""


def section(results: dict[str, Any]) -> str:
    r = results
    return f"""## Ray Data

{r["rows"]:,} requests on a local Ray of 2 CPUs (2 actors) against the local engine, same
fake server: {r["ray_rows_per_s"]:,} rows/s against {r["local_rows_per_s"]:,}
({r["ray_vs_local"]}x), {r["overhead_us_per_row"]} µs of overhead per row, and
{r["ray_one_batch_s"]} s for a one-batch job. Written by `bench/ray_data.py` on {r["date"]};
details on [Ray Data, measured](ray-performance.md).
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000, help=f"rows per run, more than {BATCH_SIZE}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the pages go (docs/)")
    args = parser.parse_args(argv)
    results = measure(args.rows, args.rounds)
    write_pages(args.out, "ray_data.py", "ray-performance", results, page(results), section(results))


if __name__ == "__main__":
    main()
