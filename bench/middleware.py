"""Client CPU per call of the default middleware stack, against the bare transport.

    .venv/bin/python bench/middleware.py                  # httpx transport, C=64
    .venv/bin/python bench/middleware.py --transport openai -n 4000 -r 5

The same non-streamed call through one client with no middleware and one with the default
stack (logging -> retry -> ratelimit -> timeout, then auth with a key), against the fake
server in its own process; rounds alternate the two; figures are medians. The goal is a
stack that adds under 10% CPU per call.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics

from common import drive, start_fake_server

import llmadapters as la


async def _run(args: argparse.Namespace) -> None:
    proc, base_url = start_fake_server()
    os.environ["BENCH_KEY"] = "sk-bench-not-a-real-key"
    provider = {"base_url": base_url, "api_key_env": "BENCH_KEY", "timeout": {"total": 60, "first_token": 30}}
    stacks = {"bare transport": [], "default stack": None}
    cpu_us: dict[str, list[float]] = {name: [] for name in stacks}
    messages = [{"role": "user", "content": "benchmark request"}]
    try:
        for _ in range(args.rounds):
            for name, middleware in stacks.items():
                client = la.AsyncClient({}, transport=args.transport, providers={"b": provider}, middleware=middleware)

                async def call(client: la.AsyncClient = client) -> object:
                    return await client.chat.completions.create(model="b/echo", messages=messages)

                await drive(call, 300, args.concurrency)
                _, cpu_ms_per_1000 = await drive(call, args.n, args.concurrency)
                cpu_us[name].append(cpu_ms_per_1000)  # CPU-ms per 1,000 calls = CPU-us per call
                await client.aclose()
    finally:
        proc.terminate()
        proc.wait()
    bare, full = (statistics.median(cpu_us[name]) for name in stacks)
    print(f"transport {args.transport}, concurrency {args.concurrency}, {args.n} calls x {args.rounds} rounds")
    print(f"  bare transport: {bare:7.0f} us CPU per call")
    print(f"  default stack:  {full:7.0f} us CPU per call  (+{full - bare:.0f} us, {100 * (full / bare - 1):+.1f}%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=3000)
    parser.add_argument("-c", "--concurrency", type=int, default=64)
    parser.add_argument("-r", "--rounds", type=int, default=5)
    parser.add_argument("--transport", default="httpx")
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
