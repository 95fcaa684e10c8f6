"""Where the aiohttp transport's time goes: the same call against nginx through plain
aiohttp, through `AiohttpTransport.send` alone, through a client with no middleware, and
through a client with the default stack.

    .venv/bin/python bench/aiohttp_layers.py            # C=256, 4,000 calls x 3 rounds

Figures are medians of requests/s and client CPU per call (getrusage of this process).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

import aiohttp
import llmadapters_aiohttp
from common import drive
from llmadapters_aiohttp.transport import AiohttpTransport
from nginx import start_nginx

import llmadapters as la
from llmadapters.plugins import Registry
from llmadapters.transports.base import Endpoint
from llmadapters.transports.network import NetworkOptions

BODY: dict[str, Any] = {"model": "echo", "messages": [{"role": "user", "content": "benchmark request"}]}


LAYERS = ("plain aiohttp", "transport.send", "client, no middleware", "client, default stack")


async def _round(url: str, registry: Registry, args: argparse.Namespace) -> list[tuple[float, float]]:
    """One round: (req/s, CPU-us per call) of each layer."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024, limit_per_host=0))
    transport = AiohttpTransport(NetworkOptions())
    endpoint = Endpoint(base_url=url)
    providers = {"b": {"base_url": url}}
    bare = la.AsyncClient({}, transport="aiohttp", providers=providers, registry=registry, middleware=[])
    full = la.AsyncClient({}, transport="aiohttp", providers=providers, registry=registry)

    async def plain() -> object:
        async with session.post(url + "/chat/completions", json=BODY) as response:
            return await response.json()

    async def send() -> object:
        return await transport.send(endpoint, BODY)

    async def no_middleware() -> object:
        return await bare.chat.completions.create(model="b/echo", messages=BODY["messages"])

    async def default_stack() -> object:
        return await full.chat.completions.create(model="b/echo", messages=BODY["messages"])

    figures = []
    for call in (plain, send, no_middleware, default_stack):
        await drive(call, 500, args.concurrency)
        figures.append(await drive(call, args.n, args.concurrency))
    await session.close()
    await transport.aclose()
    await bare.aclose()
    await full.aclose()
    return figures


async def _run(args: argparse.Namespace) -> None:
    proc, url, _ = start_nginx()
    registry = Registry.builtin()
    registry.add_transport("aiohttp", llmadapters_aiohttp.aiohttp_transport, supports=llmadapters_aiohttp.FEATURES)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in LAYERS}
    try:
        for _ in range(args.rounds):
            for name, figures in zip(LAYERS, await _round(url, registry, args), strict=True):
                results[name].append(figures)
    finally:
        proc.terminate()
        proc.wait()
    base = statistics.median(r[0] for r in results["plain aiohttp"])
    print(f"nginx, concurrency {args.concurrency}, {args.n} calls x {args.rounds} rounds (medians)")
    for name, runs in results.items():
        rate, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        print(f"  {name:24} {rate:7.0f} req/s  {cpu:5.0f} us CPU per call  {rate / base:4.2f}x plain aiohttp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=4000)
    parser.add_argument("-c", "--concurrency", type=int, default=256)
    parser.add_argument("-r", "--rounds", type=int, default=3)
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
