"""A whole batch job: llmadapters' `client.batch` against the openai-cookbook way
(``AsyncOpenAI`` + ``asyncio.Semaphore`` + ``asyncio.gather`` over every request), same
requests, same fake server, each in a process of its own so that peak RSS is its own.

    .venv/bin/python bench/batch.py                   # N=20,000, C=256
    .venv/bin/python bench/batch.py -n 2000 -c 64     # quicker

Figures: wall-clock requests/s and the worker process's peak RSS (ru_maxrss), median of
the rounds; the fake server runs in a third process with a 20 ms time to first token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import time

from common import start_fake_server


def _requests(n: int) -> object:
    return ({"model": "bench/echo", "messages": [{"role": "user", "content": f"request {i}"}]} for i in range(n))


async def _llmadapters(base_url: str, n: int, concurrency: int) -> int:
    import llmadapters as la

    ok = 0
    providers = {"bench": {"base_url": base_url}}
    async with la.AsyncClient({}, providers=providers) as client:
        async for result in client.batch(_requests(n), concurrency=concurrency):  # type: ignore[arg-type]
            ok += result.ok
    return ok


async def _cookbook(base_url: str, n: int, concurrency: int) -> int:
    """The usual hand-written job: one task per request up front, a semaphore, gather."""
    import openai

    client = openai.AsyncOpenAI(api_key="unused", base_url=base_url, max_retries=2)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> bool:
        async with semaphore:
            try:
                await client.chat.completions.create(
                    model="echo", messages=[{"role": "user", "content": f"request {i}"}]
                )
            except openai.OpenAIError:
                return False
            return True

    results = await asyncio.gather(*(one(i) for i in range(n)))
    await client.close()
    return sum(results)


def worker(kind: str, base_url: str, n: int, concurrency: int) -> None:
    run = _llmadapters if kind == "llmadapters" else _cookbook
    started = time.perf_counter()
    ok = asyncio.run(run(base_url, n, concurrency))
    wall = time.perf_counter() - started
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"ok": ok, "req_s": n / wall, "peak_rss_mib": rss_mib}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("-c", "--concurrency", type=int, default=256)
    parser.add_argument("-r", "--rounds", type=int, default=3)
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "BASE_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], args.n, args.concurrency)
        return
    proc, base_url = start_fake_server(["--ttft-ms", "20"])
    runs: dict[str, list[dict[str, float]]] = {"llmadapters client.batch": [], "AsyncOpenAI + semaphore + gather": []}
    try:
        for _ in range(args.rounds):
            for name, kind in zip(runs, ("llmadapters", "cookbook"), strict=True):
                command = [sys.executable, __file__, "-n", str(args.n), "-c", str(args.concurrency)]
                out = subprocess.run([*command, "--worker", kind, base_url], capture_output=True, text=True, check=True)
                runs[name].append(json.loads(out.stdout))
    finally:
        proc.terminate()
        proc.wait()
    print(f"N={args.n}, concurrency {args.concurrency}, {args.rounds} rounds (medians)")
    for name, samples in runs.items():
        ok = min(s["ok"] for s in samples)
        req_s = statistics.median(s["req_s"] for s in samples)
        rss = statistics.median(s["peak_rss_mib"] for s in samples)
        print(f"  {name:34} {req_s:7.0f} req/s   peak RSS {rss:6.1f} MiB   ok {ok:.0f}/{args.n}")


if __name__ == "__main__":
    main()
