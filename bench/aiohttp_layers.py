"""Where the aiohttp transport's time goes: the same call against nginx through plain
aiohttp, through `AiohttpTransport.send` alone, through a client with no middleware, and
through a client with the default stack; with ``--stream``, a streamed call of 50 chunks
(plain aiohttp's SSE loop, ``AiohttpTransport.stream``, the two clients).

    .venv/bin/python bench/aiohttp_layers.py            # C=256, 4,000 calls x 3 rounds
    .venv/bin/python bench/aiohttp_layers.py --stream
    .venv/bin/python bench/aiohttp_layers.py --uvloop   # every layer on uvloop's event loop

Figures are medians of requests/s and client CPU per call (getrusage of this process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from typing import Any

import aiohttp
import llmadapters_aiohttp
from common import drive
from llmadapters_aiohttp.transport import AiohttpTransport
from nginx import start_nginx

import llmadapters as la
from llmadapters.plugin import Endpoint, NetworkOptions
from llmadapters.plugins import Registry

BODY: dict[str, Any] = {"model": "echo", "messages": [{"role": "user", "content": "benchmark request"}]}
STREAM_BODY: dict[str, Any] = {**BODY, "stream": True}


LAYERS = ("plain aiohttp", "transport alone", "client, no middleware", "client, default stack")


async def _measure(layer: str, url: str, registry: Registry, args: argparse.Namespace) -> tuple[float, float]:
    """(req/s, CPU-us per call) of one layer, on a session or client of its own that is
    closed before the next layer runs: the open connections and objects of a layer
    measured before would slow the ones after (by a fifth, measured)."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024, limit_per_host=0))
    transport = AiohttpTransport(NetworkOptions())
    endpoint = Endpoint(base_url=url)
    providers = {"b": {"base_url": url}}
    middleware = [] if layer == "client, no middleware" else None
    client = la.AsyncClient({}, transport="aiohttp", providers=providers, registry=registry, middleware=middleware)

    async def plain() -> object:
        async with session.post(url + "/chat/completions", json=BODY) as response:
            return await response.json()

    async def plain_stream() -> object:
        # What a hand-written client does: read lines, decode each event, stop at [DONE].
        events = []
        async with session.post(url + "/chat/completions", json=STREAM_BODY) as response:
            async for line in response.content:
                if line.startswith(b"data: "):
                    data = line[6:].strip()
                    if data == b"[DONE]":
                        break
                    events.append(json.loads(data))
        return events

    async def send() -> object:
        if args.stream:
            return [item async for item in transport.stream(endpoint, STREAM_BODY)]
        return await transport.send(endpoint, BODY)

    async def through() -> object:
        if args.stream:
            stream = await client.chat.completions.create(model="b/echo", messages=BODY["messages"], stream=True)
            return [chunk async for chunk in stream]
        return await client.chat.completions.create(model="b/echo", messages=BODY["messages"])

    calls = {LAYERS[0]: plain_stream if args.stream else plain, LAYERS[1]: send}
    call = calls.get(layer, through)
    try:
        await drive(call, 500, args.concurrency)
        return await drive(call, args.n, args.concurrency)
    finally:
        await session.close()
        await transport.aclose()
        await client.aclose()


async def _run(args: argparse.Namespace) -> None:
    proc, unary_url, stream_url = start_nginx()
    url = stream_url if args.stream else unary_url
    registry = Registry.builtin()
    registry.add_transport("aiohttp", llmadapters_aiohttp.aiohttp_transport, supports=llmadapters_aiohttp.FEATURES)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in LAYERS}
    try:
        for round_ in range(args.rounds):
            # Every other round backwards, so that no layer always runs first.
            for name in LAYERS if round_ % 2 == 0 else LAYERS[::-1]:
                results[name].append(await _measure(name, url, registry, args))
    finally:
        proc.terminate()
        proc.wait()
    base = statistics.median(r[0] for r in results["plain aiohttp"])
    kind = ("streamed" if args.stream else "unary") + (", uvloop" if args.uvloop else "")
    print(f"nginx, {kind}, concurrency {args.concurrency}, {args.n} calls x {args.rounds} rounds (medians)")
    for name, runs in results.items():
        rate, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        print(f"  {name:24} {rate:7.0f} req/s  {cpu:5.0f} us CPU per call  {rate / base:4.2f}x plain aiohttp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=4000)
    parser.add_argument("-c", "--concurrency", type=int, default=256)
    parser.add_argument("-r", "--rounds", type=int, default=3)
    parser.add_argument("--stream", action="store_true", help="streamed calls (50 chunks each)")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.run(_run(args))
    else:
        asyncio.run(_run(args))


if __name__ == "__main__":
    main()
