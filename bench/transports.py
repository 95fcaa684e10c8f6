"""Requests/s and client CPU per 1,000 requests, each llmadapters transport side by side
with plain aiohttp, httpx2 and AsyncOpenAI, against nginx (default) or the fake server,
each in its own process.

    .venv/bin/python bench/transports.py                      # nginx, C=64 and 256, 3 rounds
    .venv/bin/python bench/transports.py -c 256 -n 3000 -r 5
    .venv/bin/python bench/transports.py --server fake

Every contender makes the same non-streamed call; rounds interleave the contenders so
that drift in the machine hits all of them alike; figures are medians over rounds.
Client CPU is getrusage(RUSAGE_SELF) of this process, which holds no server.
The server's own capacity is measured first with plain aiohttp at C=256, so a reader can
see that the server is not what limits the clients. nginx comes from Debian
(``apt-get install nginx``; see bench/nginx.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from common import Call, drive, start_fake_server

BODY = {"model": "echo", "messages": [{"role": "user", "content": "benchmark request"}]}
Setup = Callable[[str], Awaitable[tuple[Call, Callable[[], Awaitable[None]]]]]


async def _llmadapters(transport: str, http_client: str | None = None, middleware: list[str] | None = None) -> Setup:
    """llmadapters through ``transport``, with the default middleware stack unless
    ``middleware`` is given."""

    async def setup(base_url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
        import llmadapters_aiohttp

        import llmadapters as la
        from llmadapters.plugins import Registry
        from llmadapters.transports.network import FEATURES
        from llmadapters.transports.openai_sdk import OpenAITransport

        registry = Registry.builtin()
        registry.add_transport("aiohttp", llmadapters_aiohttp.aiohttp_transport, supports=llmadapters_aiohttp.FEATURES)
        name = transport
        if http_client is not None:
            name = f"openai-{http_client}"

            def make(options: Any) -> Any:
                return OpenAITransport(options, http_client=http_client)  # type: ignore[arg-type]

            registry.add_transport(name, make, supports=FEATURES)
        providers = {"bench": {"base_url": base_url}}
        client = la.AsyncClient({}, transport=name, providers=providers, registry=registry, middleware=middleware)
        messages = BODY["messages"]

        async def call() -> object:
            return await client.chat.completions.create(model="bench/echo", messages=messages)

        return call, client.aclose

    return setup


async def _plain_httpx2(base_url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import httpx2

    client = httpx2.AsyncClient(limits=httpx2.Limits(max_connections=1024, max_keepalive_connections=1024))
    url = base_url + "/chat/completions"

    async def call() -> object:
        response = await client.post(url, json=BODY)
        response.raise_for_status()
        return response.json()

    return call, client.aclose


def _plain_openai(http_client: str) -> Setup:
    async def setup(base_url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
        import openai

        http = openai.DefaultAioHttpClient() if http_client == "aiohttp" else None
        client = openai.AsyncOpenAI(api_key="unused", base_url=base_url, max_retries=0, http_client=http)

        async def call() -> object:
            return await client.chat.completions.create(model="echo", messages=BODY["messages"])  # type: ignore[arg-type]

        return call, client.close

    return setup


async def _plain_aiohttp(base_url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024, limit_per_host=0))
    url = base_url + "/chat/completions"

    async def call() -> object:
        async with session.post(url, json=BODY) as response:
            response.raise_for_status()
            return await response.json()

    return call, session.close


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    contenders: dict[str, Setup] = {
        "plain aiohttp": _plain_aiohttp,
        "llmadapters aiohttp": await _llmadapters("aiohttp"),
        "llmadapters aiohttp, no middleware": await _llmadapters("aiohttp", middleware=[]),
        "llmadapters httpx": await _llmadapters("httpx"),
        "llmadapters openai (aiohttp)": await _llmadapters("openai", "aiohttp"),
        "llmadapters openai (httpx2)": await _llmadapters("openai", "httpx"),
        "plain httpx2.AsyncClient": _plain_httpx2,
        "plain AsyncOpenAI (httpx2)": _plain_openai("httpx"),
        "plain AsyncOpenAI (aiohttp)": _plain_openai("aiohttp"),
    }
    if args.server == "nginx":
        from nginx import start_nginx

        proc, base_url, _ = start_nginx()
    else:
        proc, base_url = start_fake_server()
    results: dict[str, Any] = {"server": args.server, "n": args.n, "rounds": args.rounds, "cpus": os.cpu_count()}
    try:
        call, close = await _plain_aiohttp(base_url)
        await drive(call, 200, 64)
        server_runs = [(await drive(call, args.n, 256))[0] for _ in range(3)]
        results["server_req_s_c256"] = round(statistics.median(server_runs))
        await close()
        for concurrency in args.concurrency:
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
            for _ in range(args.rounds):
                for name, setup in contenders.items():
                    call, close = await setup(base_url)
                    await drive(call, min(200, args.n), concurrency)  # warm up connections and imports
                    samples[name].append(await drive(call, args.n, concurrency))
                    await close()
            results[f"c{concurrency}"] = {
                name: {
                    "req_s": round(statistics.median(s[0] for s in runs)),
                    "cpu_ms_per_1000": round(statistics.median(s[1] for s in runs)),
                }
                for name, runs in samples.items()
            }
    finally:
        proc.terminate()
        proc.wait()
    return results


def _import_ms(statement: str, repeat: int = 5) -> float:
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    runs = [float(subprocess.check_output([sys.executable, "-c", code], text=True)) for _ in range(repeat)]
    return round(statistics.median(runs) * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="requests per contender and round")
    parser.add_argument("-c", "--concurrency", type=int, action="append", help="repeatable; default 64 and 256")
    parser.add_argument("-r", "--rounds", type=int, default=3)
    parser.add_argument("--server", choices=("nginx", "fake"), default="nginx")
    args = parser.parse_args()
    args.concurrency = args.concurrency or [64, 256]
    results = asyncio.run(_run(args))
    results["import_ms"] = {
        "import llmadapters": _import_ms("import llmadapters"),
        "llmadapters.AsyncClient (no transport yet)": _import_ms("import llmadapters; llmadapters.AsyncClient"),
        "import openai": _import_ms("import openai"),
        "import httpx2": _import_ms("import httpx2"),
    }
    print(json.dumps(results, indent=2))
    for key, table in results.items():
        if key.startswith("c") and isinstance(table, dict):
            server = f"{results['server']} with plain aiohttp: {results['server_req_s_c256']:.0f} req/s at C=256"
            print(f"\nconcurrency {key[1:]}  ({server})")
            aiohttp_base = table["plain aiohttp"]["req_s"]
            httpx2_base = table["plain httpx2.AsyncClient"]["req_s"]
            for name, row in table.items():
                req_s, cpu = row["req_s"], row["cpu_ms_per_1000"]
                ratios = f"{req_s / aiohttp_base:4.2f}x aiohttp  {req_s / httpx2_base:5.2f}x httpx2"
                print(f"  {name:36} {req_s:>6} req/s  {cpu:>6} CPU-ms/1000  {ratios}")


if __name__ == "__main__":
    main()
