"""Embeddings at volume, ``llmadapters batch`` against the openai SDK:
``.venv/bin/python bench/embeddings.py``.

``--texts`` short texts (100,000 by default) are embedded by ``llmadapters fake-server``
(a process of its own, replying at once: the client side is what is measured; its model
``embed``, 64 dimensions) three ways, each in a process of its own so that its peak RSS is
its own (``os.wait4``):

- ``llmadapters batch`` on a JSONL file of ``--per-request`` texts a line;
- ``llmadapters batch --embed-chunk N`` on a file of 1,000 texts a line, split into
  requests of ``--per-request`` texts: the same requests, from fewer, larger lines;
- the openai SDK: ``AsyncOpenAI.embeddings.create`` with ``--per-request`` texts a call,
  ``--concurrency`` at once under a semaphore, each reply written as a JSON line.

All three send the same requests at the same concurrency, as base64 (the SDK's default,
and llmadapters' when no encoding is asked), and write floats. Throughput is texts per
second over each run's own wall time (interpreter start and imports left out), the median
of ``--rounds`` interleaved rounds. Writes ``docs/embeddings-performance.md`` (and
``.json``) and the section of ``docs/performance.md`` that links to it (kept between its
markers; ``make bench`` keeps such sections when it rewrites that page).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import start_fake_server, write_pages

ROOT = Path(__file__).resolve().parent.parent
LARGE_LINE = 1_000
CONTENDERS = ("llmadapters batch", "llmadapters batch --embed-chunk", "openai SDK")


def texts(n: int) -> list[str]:
    return [f"short text number {i} about item {i % 97}" for i in range(n)]


def write_input(path: Path, n: int, per_line: int) -> None:
    items = texts(n)
    with path.open("w") as f:
        for start in range(0, n, per_line):
            line = {"custom_id": f"t{start}", "model": "local/embed", "input": items[start : start + per_line]}
            f.write(json.dumps(line) + "\n")


def run_measured(command: list[str], env: dict[str, str] | None = None) -> int:
    """Run ``command`` to its end; its peak RSS in KiB (Linux ``ru_maxrss``)."""
    proc = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{command[:4]} exited with {proc.returncode}")
    return int(usage.ru_maxrss)


def llmadapters_batch(
    base_url: str, workdir: Path, source: Path, concurrency: int, chunk: int | None
) -> dict[str, float]:
    config = workdir / "llmadapters.toml"
    config.write_text(f'[providers.local]\nbase_url = "{base_url}"\n')
    out, summary = workdir / "out.jsonl", workdir / "summary.json"
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "llmadapters.cli", "batch", str(source), "-o", str(out)]
    command += ["--config", str(config), "-c", str(concurrency), "--summary-json", str(summary), "-q"]
    if chunk is not None:
        command += ["--embed-chunk", str(chunk)]
    rss = run_measured(command)
    figures = json.loads(summary.read_text())
    assert figures["errors"] == 0, figures
    return {"wall_s": figures["wall_s"], "rss_kib": rss}


async def _sdk_run(base_url: str, n: int, per_request: int, concurrency: int, out: Path) -> float:
    import openai

    items = texts(n)
    gate = asyncio.Semaphore(concurrency)
    async with openai.AsyncOpenAI(api_key="unused", base_url=base_url, max_retries=0) as client:
        with out.open("w") as f:

            async def one(start: int) -> None:
                async with gate:
                    reply = await client.embeddings.create(model="embed", input=items[start : start + per_request])
                f.write(json.dumps({"custom_id": f"t{start}", "body": reply.model_dump()}) + "\n")

            started = time.perf_counter()
            await asyncio.gather(*(one(start) for start in range(0, n, per_request)))
            return time.perf_counter() - started


def sdk(base_url: str, workdir: Path, n: int, per_request: int, concurrency: int) -> dict[str, float]:
    result = workdir / "sdk.json"
    command = [sys.executable, __file__, "--sdk-worker", base_url, "--texts", str(n)]
    command += ["--per-request", str(per_request), "--concurrency", str(concurrency), "--out", str(result)]
    rss = run_measured(command)
    return {"wall_s": json.loads(result.read_text())["wall_s"], "rss_kib": rss}


def measure(n: int, per_request: int, concurrency: int, rounds: int) -> dict[str, Any]:
    import openai

    server, base_url = start_fake_server()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in CONTENDERS}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            small, large = workdir / "small.jsonl", workdir / "large.jsonl"
            write_input(small, n, per_request)
            write_input(large, n, LARGE_LINE)
            for _ in range(rounds):
                runs[CONTENDERS[0]].append(llmadapters_batch(base_url, workdir, small, concurrency, None))
                runs[CONTENDERS[1]].append(llmadapters_batch(base_url, workdir, large, concurrency, per_request))
                runs[CONTENDERS[2]].append(sdk(base_url, workdir, n, per_request, concurrency))
    finally:
        server.terminate()
        server.wait(30)
    contenders = {}
    for name, each in runs.items():
        wall = statistics.median(run["wall_s"] for run in each)
        contenders[name] = {
            "texts_per_s": round(n / wall),
            "requests_per_s": round(n / per_request / wall),
            "peak_rss_mib": round(max(run["rss_kib"] for run in each) / 1024, 1),
            "wall_s": [round(run["wall_s"], 2) for run in each],
        }
    baseline = contenders["openai SDK"]["texts_per_s"]
    for figures in contenders.values():
        figures["vs_sdk"] = round(figures["texts_per_s"] / baseline, 2)
    return {
        "texts": n,
        "per_request": per_request,
        "concurrency": concurrency,
        "rounds": rounds,
        "contenders": contenders,
        "openai": openai.__version__,
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def page(results: dict[str, Any]) -> str:
    r = results
    rows = "\n".join(
        f"| {name} | {c['texts_per_s']:,} | {c['requests_per_s']:,} | {c['vs_sdk']}x | {c['peak_rss_mib']} | "
        f"{', '.join(map(str, c['wall_s']))} |"
        for name, c in r["contenders"].items()
    )
    return f"""# Embeddings, measured

!!! note "Generated by `bench/embeddings.py`"
    This page is written by `.venv/bin/python bench/embeddings.py`: do not edit it by hand.
    This run: {r["date"]}, {r["cores"]} cores, CPython {r["python"]}, openai {r["openai"]}. The
    raw figures are in [embeddings-performance.json](embeddings-performance.json).

{r["texts"]:,} short texts embedded by `llmadapters fake-server` (a process of its own,
replying at once, model `embed`, 64 dimensions), {r["per_request"]} texts a request, at
most {r["concurrency"]} requests in flight, through

- `llmadapters batch` on a JSONL file of {r["per_request"]} texts a line;
- `llmadapters batch --embed-chunk {r["per_request"]}` on a file of {LARGE_LINE:,} texts a
  line: the same requests, each line's split and joined back into one record;
- the openai SDK: `AsyncOpenAI.embeddings.create` under a semaphore, each reply written as
  a JSON line.

Each runs in a process of its own (its peak RSS is its own); all send base64 and write
floats. Texts per second are over each run's own wall time, the median of {r["rounds"]}
interleaved rounds; "vs SDK" is against the openai SDK in the same run.

| | texts/s | requests/s | vs SDK | peak RSS, MiB | wall time, s (each round) |
|---|---:|---:|---:|---:|---|
{rows}

Memory follows what is in flight, not the input: up to {r["concurrency"]} lines are being
answered at once, and as many answered ones wait to be written. With {LARGE_LINE:,} texts a
line, each holds {LARGE_LINE:,} vectors as Python floats (about 32 bytes a dimension)
until its record is written, which is what the `--embed-chunk` run's peak is made of;
fewer texts a line, or a lower `-c`, bring it down.

The fake server runs on the same cores as the client, and the machine is shared, so the
figures are for comparing the contenders with each other, not a ceiling: each round's time
is in the table.
"""


def section(results: dict[str, Any]) -> str:
    r = results
    c = r["contenders"]
    ours, sdk_figures = c[CONTENDERS[0]], c["openai SDK"]
    return f"""## Embeddings

{r["texts"]:,} short texts, {r["per_request"]} a request, through `llmadapters batch`:
{ours["texts_per_s"]:,} texts/s in {ours["peak_rss_mib"]} MiB at peak, against the openai SDK's
{sdk_figures["texts_per_s"]:,} texts/s in {sdk_figures["peak_rss_mib"]} MiB ({ours["vs_sdk"]}x). Written by
`bench/embeddings.py` on {r["date"]}; details on [Embeddings, measured](embeddings-performance.md).
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=100_000)
    parser.add_argument("--per-request", type=int, default=10, help=f"texts a request, at most {LARGE_LINE}")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="where the pages go (docs/)")
    parser.add_argument("--sdk-worker", metavar="BASE_URL", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sdk_worker:
        wall = asyncio.run(
            _sdk_run(args.sdk_worker, args.texts, args.per_request, args.concurrency, args.out.with_suffix(".jsonl"))
        )
        args.out.write_text(json.dumps({"wall_s": wall}))
        return
    results = measure(args.texts, args.per_request, args.concurrency, args.rounds)
    write_pages(args.docs, "embeddings.py", "embeddings-performance", results, page(results), section(results))


if __name__ == "__main__":
    main()
