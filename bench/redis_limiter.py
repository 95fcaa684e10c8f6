"""Per-call cost of the shared (Redis) rate limiter, against the local one and none.

    .venv/bin/python bench/redis_limiter.py              # C=64, 3,000 calls x 5 rounds
    .venv/bin/python bench/redis_limiter.py -c 1 -n 500  # latency, one call at a time

The same non-streamed call through three clients, each with only the ratelimit
middleware or none: none; local limits; limits shared through a redis-server (started
here on loopback, from Debian's redis-server package). The limits (max_concurrency and
an rpm far above the rate reached) never make a call wait, so the difference is the
limiter's own cost: client CPU per call, and the mean latency added per call. The fake
server runs in its own process; rounds alternate the clients; figures are medians.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess

import llmadapters_redis
from common import drive, free_port, start_fake_server, wait_for_port

import llmadapters as la
from llmadapters.plugins import Registry


def _start_redis() -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    if not wait_for_port(port):
        proc.kill()
        raise SystemExit("redis-server did not start")
    return proc, f"redis://127.0.0.1:{port}/0"


async def _run(args: argparse.Namespace) -> None:
    server, base_url = start_fake_server()
    redis_proc, redis_url = _start_redis()
    registry = Registry.builtin()
    llmadapters_redis.register_middleware(registry.add_middleware)
    loose = {"max_concurrency": 100_000, "rpm": 1e9}
    setups = {
        "no limiter": ([], {}),
        "local limiter": (["ratelimit"], loose),
        "redis limiter": (["ratelimit"], {**loose, "backend": "redis", "url": redis_url}),
    }
    cpu_us: dict[str, list[float]] = {name: [] for name in setups}
    latency_ms: dict[str, list[float]] = {name: [] for name in setups}
    messages = [{"role": "user", "content": "benchmark request"}]
    try:
        for _ in range(args.rounds):
            for name, (middleware, limits) in setups.items():
                provider = {"base_url": base_url, "limits": limits}
                client = la.AsyncClient({}, providers={"b": provider}, middleware=middleware, registry=registry)

                async def call(client: la.AsyncClient = client) -> object:
                    return await client.chat.completions.create(model="b/echo", messages=messages)

                await drive(call, 300, args.concurrency)
                rate, cpu_ms_per_1000 = await drive(call, args.n, args.concurrency)
                cpu_us[name].append(cpu_ms_per_1000)  # CPU-ms per 1,000 calls = CPU-us per call
                latency_ms[name].append(1000 * args.concurrency / rate)  # mean time per call in flight
                await client.aclose()
    finally:
        server.terminate()
        redis_proc.terminate()
        server.wait()
        redis_proc.wait()
    print(f"concurrency {args.concurrency}, {args.n} calls x {args.rounds} rounds (medians)")
    base_cpu, base_latency = statistics.median(cpu_us["no limiter"]), statistics.median(latency_ms["no limiter"])
    for name in setups:
        used, latency = statistics.median(cpu_us[name]), statistics.median(latency_ms[name])
        print(
            f"  {name:14} {used:6.0f} us CPU per call (+{used - base_cpu:4.0f})"
            f"  {latency:7.2f} ms per call (+{latency - base_latency:5.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=3000)
    parser.add_argument("-c", "--concurrency", type=int, default=64)
    parser.add_argument("-r", "--rounds", type=int, default=5)
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
