"""How well clients hold hidden provider rate limits: every contender against the same
local server (bench/limitserver.py, a process of its own), which enforces limits that
no client is told of, one scenario per provider behaviour.

    .venv/bin/python bench/limits.py                       # every scenario, ~6 minutes on 2 cores
    .venv/bin/python bench/limits.py --quick --json F      # a smoke run: tiny N, under a minute
    .venv-bench/bin/python bench/limits.py --oracle        # with LiteLLM, and the reference client

Scenarios (the defaults; L is the server's latency; each line costs a ``tpm`` route 100
tokens: a 240-character prompt, 64 tokens by the server's count, plus ``max_tokens``
36). Each is sized for 5 to 15 s of ideal time, at most ~320 requests/s per provider,
so that neither the server nor a client's CPU is what the figures measure:

- ``conc``: at most C = 16 requests at once, 429 with Zhipu's ``1302`` body beyond, no
  rate-limit header, no Retry-After; L = 100 ms, N = 1,500. Ideal: N·L/C (9.4 s).
- ``rpm``: 12,000 requests/min (200/s) as a bucket of one second's worth (burst 200),
  OpenAI's ``x-ratelimit-*`` headers on every reply, no Retry-After; L = 100 ms,
  N = 2,000. Ideal: max(0, N - burst)/rate + L (9.1 s).
- ``tpm``: 1,200,000 tokens/min (20,000/s) as a bucket of one second's worth, the same
  headers; L = 100 ms, N = 2,000. Ideal: max(0, N·100 - burst tokens)/token rate + L
  (9.1 s).
- ``sporadic``: no limit, but each request gets 429 with ``Retry-After: 1`` with
  probability 0.02; L = 200 ms, N = 1,500. Ideal: N·L/concurrency + Retry-After (5.7 s;
  the last line 429'd waits it out whatever the client does).
- ``drop``: ``conc`` with C = 32, dropping to 8 from 3 s to 8 s after the first
  request; L = 100 ms, N = 3,600. Ideal: the T at which ∫₀ᵀ cap(t) dt = N·L (15 s).
- ``all``: one input with the lines of all five, interleaved, at once (each provider
  its own route and state). Ideal: the largest of its parts' (15 s).

Each ideal is what a client told the limits could reach, less its round trips:
``--oracle`` adds such a client (the hand-written loop given the limits: a gate or a
bucket per provider, sleeping outside its slot), which measured 0.95 to 0.99 of them.
At L = 50 ms and 64 calls in flight (1,280 requests/s) even a client with no limit to
meet got only 0.75 to 0.86 of the ideal on 2 cores; hence the longer latencies.

Contenders, each at the same concurrency per provider (``-c``, 64), each in a process of
its own, the server's state reset before each run:

- ``llmadapters batch IN -o OUT --config CFG -q --summary-json S -c 64``, the config
  giving each provider its ``base_url`` and nothing else: no limit configured;
- the same with ``transport = "aiohttp"`` (the llmadapters-aiohttp plugin): about half
  the client CPU per call of the default httpx transport, which shows where calls come
  back together (a cap's slots run in step, and the last reply of a round waits for
  the others to be handled);
- ``AsyncOpenAI(max_retries=5)``, one ``chat.completions.create`` per line under an
  ``asyncio.Semaphore`` per provider;
- LiteLLM ``acompletion(num_retries=5)``, likewise (skipped when not importable);
- a hand-written aiohttp loop: on 429, sleep Retry-After when given, else 0.5 s doubling
  to 8 s with jitter, up to 10 attempts, sleeping inside its semaphore slot as most
  such loops do.

Figures: wall = the server's time from a run's first request to its last reply (so no
client's start-up counts); goodput = ideal / wall; 429s per line = the 429s the server
answered / the lines; error lines = lines that ended without a reply; client CPU = the
contender process's user + system CPU, start-up included. The server's own CPU share is
given for each scenario, to show it is not what limits the clients.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime
import importlib.util
import json
import math
import os
import random
import resource
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
PROMPT = ("Summarise this item in one short sentence, please: " * 6)[:240]
MAX_TOKENS = 36
GOAL_GOODPUT, GOAL_429 = 0.95, 0.02
BUSY = 0.8  # a client on the CPU this share of the wall time is marked as maybe CPU-bound
LOOPBACK_ENV = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
CONTENDERS = {
    "llmadapters": "llmadapters batch (no limits configured)",
    "llmadapters-aiohttp": "the same, on the aiohttp transport (llmadapters-aiohttp)",
    "openai": "AsyncOpenAI, max_retries=5",
    "litellm": "LiteLLM acompletion, num_retries=5",
    "aiohttp": "hand-written aiohttp loop, honours Retry-After",
    "oracle": "reference: hand loop told the hidden limits",
}
NEEDS = {
    "llmadapters": "llmadapters",
    "llmadapters-aiohttp": "llmadapters_aiohttp",
    "openai": "openai",
    "litellm": "litellm",
    "aiohttp": "aiohttp",
    "oracle": "aiohttp",
}


# -- scenarios ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One provider of a scenario: the server route ``route`` (its name is its mode and
    the provider's name), its parameters there, and its lines."""

    route: str
    n: int
    params: dict[str, Any]

    @property
    def latency(self) -> float:
        return float(self.params["latency_ms"]) / 1000

    def ideal(self, concurrency: int) -> float:
        p, n, lat = self.params, self.n, self.latency
        if self.route == "conc":
            return n * lat / p["cap"]
        if self.route == "rpm":
            rate = p["rpm"] / 60
            return max(0.0, n - p.get("burst", rate)) / rate + lat
        if self.route == "tpm":
            rate = p["tpm"] / 60
            return max(0.0, n * line_tokens() - p.get("burst", rate)) / rate + lat
        if self.route == "sporadic":
            return n * lat / concurrency + p["retry_after"]
        if self.route == "drop":
            return drop_time(n * lat, p["cap"], p.get("low_cap", p["cap"] // 4), p["t1"], p["t2"])
        raise ValueError(self.route)

    def describe(self, concurrency: int) -> str:
        p, ms = self.params, f"{self.params['latency_ms']:g} ms"
        ideal = f"{self.ideal(concurrency):.2f} s"
        if self.route == "conc":
            return (
                f"at most {p['cap']} requests at once, 429 beyond (Zhipu's 1302 body, no header, no Retry-After); "
                f"L = {ms}, N = {self.n:,}; ideal N·L/C = {ideal}"
            )
        if self.route == "rpm":
            burst = p.get("burst", p["rpm"] / 60)
            return (
                f"{p['rpm']:,} requests/min as a bucket of {burst:g} refilled continuously, OpenAI's "
                f"x-ratelimit-* headers, no Retry-After; L = {ms}, N = {self.n:,}; "
                f"ideal max(0, N - burst)/rate + L = {ideal}"
            )
        if self.route == "tpm":
            burst = p.get("burst", p["tpm"] / 60)
            return (
                f"{p['tpm']:,} tokens/min as a bucket of {burst:,g}, {line_tokens()} tokens a line "
                f"(prompt + max_tokens), OpenAI's headers, no Retry-After; L = {ms}, N = {self.n:,}; "
                f"ideal max(0, tokens - burst)/token rate + L = {ideal}"
            )
        if self.route == "sporadic":
            return (
                f"no limit; each request 429'd with probability {p['p']:g}, Retry-After: {p['retry_after']}; "
                f"L = {ms}, N = {self.n:,}; ideal N·L/concurrency + Retry-After = {ideal}"
            )
        low = p.get("low_cap", p["cap"] // 4)
        return (
            f"at most {p['cap']} at once, {low} from {p['t1']:g} s to {p['t2']:g} s after the first request, "
            f"429 beyond (Zhipu's body); L = {ms}, N = {self.n:,}; ideal T with ∫₀ᵀ cap = N·L: {ideal}"
        )


@dataclass(frozen=True)
class Scenario:
    name: str
    parts: tuple[Part, ...]

    def ideal(self, concurrency: int) -> float:
        return max(part.ideal(concurrency) for part in self.parts)

    @property
    def lines(self) -> int:
        return sum(part.n for part in self.parts)

    def server_config(self) -> dict[str, Any]:
        return {"routes": {part.route: dict(part.params) for part in self.parts}}


def line_body(route: str) -> dict[str, Any]:
    return {"model": f"{route}/m", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS}


def line_tokens() -> int:
    """What one line costs a tpm route, by the server's count."""
    from limitserver import request_tokens

    return request_tokens(line_body("tpm"))


def drop_time(work: float, cap: float, low: float, t1: float, t2: float) -> float:
    """The T at which ∫₀ᵀ cap(t) dt = ``work`` (slot-seconds), cap(t) being ``low`` on
    [t1, t2) and ``cap`` elsewhere."""
    if work <= cap * t1:
        return work / cap
    work -= cap * t1
    if work <= low * (t2 - t1):
        return t1 + work / low
    return t2 + (work - low * (t2 - t1)) / cap


def scenarios(quick: bool, latency_ms: float | None = None) -> list[Scenario]:
    """The scenarios: the full run's, or --quick's (tiny N, each under ~2 s);
    ``latency_ms``, when given, is every route's latency instead of its default."""

    def lat(default: float) -> dict[str, float]:
        return {"latency_ms": default if latency_ms is None else latency_ms}

    n = {"conc": 100, "rpm": 300, "tpm": 300, "sporadic": 200, "drop": 360} if quick else {}
    drop_window = {"t1": 0.3, "t2": 0.8} if quick else {"t1": 3.0, "t2": 8.0}
    parts = {
        "conc": Part("conc", n.get("conc", 1500), {**lat(100), "cap": 16}),
        "rpm": Part("rpm", n.get("rpm", 2000), {**lat(100), "rpm": 12_000, "burst": 200}),
        "tpm": Part("tpm", n.get("tpm", 2000), {**lat(100), "tpm": 1_200_000, "burst": 20_000}),
        "sporadic": Part("sporadic", n.get("sporadic", 1500), {**lat(200), "p": 0.02, "retry_after": 1, "seed": 7}),
        "drop": Part("drop", n.get("drop", 3600), {**lat(100), "cap": 32, "low_cap": 8, **drop_window}),
    }
    return [*(Scenario(name, (part,)) for name, part in parts.items()), Scenario("all", tuple(parts.values()))]


def write_input(scenario: Scenario, path: Path) -> None:
    """The scenario's lines, those of several parts interleaved evenly."""
    keyed = [((i + 0.5) / part.n, part.route, i) for part in scenario.parts for i in range(part.n)]
    keyed.sort()
    with path.open("w", encoding="utf-8") as f:
        for _, route, i in keyed:
            f.write(json.dumps({"custom_id": f"{route}-{i + 1}", "body": line_body(route)}) + "\n")


# -- the contenders, each in a worker process ---------------------------------------------

Send = Callable[[str, dict[str, Any]], Awaitable[None]]


class Refused(Exception):
    """A line that ended without a reply (its last status)."""


async def _openai(spec: dict[str, Any]) -> tuple[Send, Callable[[], Awaitable[None]]]:
    import openai

    clients = {r: openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=5) for r, url in spec["urls"].items()}

    async def send(route: str, body: dict[str, Any]) -> None:
        await clients[route].chat.completions.create(**{**body, "model": "m"})

    async def close() -> None:
        for client in clients.values():
            await client.close()

    return send, close


async def _litellm(spec: dict[str, Any]) -> tuple[Send, Callable[[], Awaitable[None]]]:
    connections = str(spec["concurrency"] * len(spec["urls"]))
    os.environ.setdefault("AIOHTTP_CONNECTOR_LIMIT", connections)
    os.environ.setdefault("AIOHTTP_CONNECTOR_LIMIT_PER_HOST", connections)
    import litellm

    litellm.suppress_debug_info = True

    async def send(route: str, body: dict[str, Any]) -> None:
        await litellm.acompletion(
            **{**body, "model": "openai/m"}, api_base=spec["urls"][route], api_key="x", num_retries=5
        )

    async def close() -> None:
        pass  # LiteLLM keeps its clients for the life of the process (see bench/contenders.py)

    return send, close


def _session(spec: dict[str, Any]) -> Any:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=spec["concurrency"] * len(spec["urls"]), limit_per_host=0)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120))


def _retry_after(headers: Any) -> float | None:
    try:
        return float(headers["retry-after"])
    except (KeyError, ValueError):
        return None


async def _aiohttp(spec: dict[str, Any]) -> tuple[Send, Callable[[], Awaitable[None]]]:
    """What a competent user writes: one session, a semaphore per provider, and on 429
    (or 5xx) sleep Retry-After when the server gives one, else 0.5 s doubling to 8 s
    with jitter, up to 10 attempts. It sleeps while holding its semaphore slot, as most
    such loops do (the `async with sem:` wraps the whole call)."""
    session = _session(spec)
    slots = {route: asyncio.Semaphore(spec["concurrency"]) for route in spec["urls"]}
    urls = {route: url + "/chat/completions" for route, url in spec["urls"].items()}
    auth = {"Authorization": "Bearer x"}

    async def send(route: str, body: dict[str, Any]) -> None:
        async with slots[route]:  # held across the retries' sleeps, as most people write it
            for attempt in range(10):
                async with session.post(urls[route], json={**body, "model": "m"}, headers=auth) as response:
                    await response.read()
                    if response.status == 200:
                        return
                    if response.status != 429 and response.status < 500:
                        raise Refused(f"HTTP {response.status}")
                    wait = _retry_after(response.headers)
                if attempt == 9:
                    raise Refused(f"HTTP {response.status} after 10 attempts")
                if wait is None:
                    wait = min(0.5 * 2**attempt, 8.0) * random.uniform(0.75, 1.0)
                await asyncio.sleep(wait)

    return send, session.close


class _Gate:
    """At most ``cap(seconds since the first acquire)`` holders at once, first come
    first served."""

    def __init__(self, cap: Callable[[float], int]) -> None:
        self.cap = cap
        self.active = 0
        self.start: float | None = None
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        if self.start is None:
            self.start = loop.time()
        waiter = loop.create_future()
        self.waiters.append(waiter)
        self._wake()
        await waiter

    def release(self) -> None:
        self.active -= 1
        self._wake()

    def _wake(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.start is not None
        while self.waiters and self.active < self.cap(loop.time() - self.start):
            self.active += 1
            self.waiters.popleft().set_result(None)
        if self.waiters and self.timer is None:  # the cap may rise with time: look again soon
            self.timer = loop.call_later(0.005, self._tick)

    def _tick(self) -> None:
        self.timer = None
        self._wake()


class _Pacer:
    """A client-side token bucket: ``rate`` per second, holding ``capacity``."""

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate, self.capacity, self.level = rate, capacity, capacity
        self.stamp: float | None = None
        self.lock = asyncio.Lock()

    async def take(self, cost: float) -> None:
        async with self.lock:  # FIFO: one waiter at a time
            loop = asyncio.get_running_loop()
            while True:
                now = loop.time()
                self.level = min(self.capacity, self.level + (now - (self.stamp or now)) * self.rate)
                self.stamp = now
                if self.level >= cost:
                    self.level -= cost
                    return
                await asyncio.sleep((cost - self.level) / self.rate)


async def _oracle(spec: dict[str, Any]) -> tuple[Send, Callable[[], Awaitable[None]]]:
    """The reference: the hand loop told each route's hidden limit (a concurrency gate
    following the cap's schedule, or a bucket at the server's rate holding 90% of its
    burst), which on 429 sleeps outside its slot. It shows what the ideal figures can be
    approached with."""
    from limitserver import request_tokens

    session = _session(spec)
    urls = {route: url + "/chat/completions" for route, url in spec["urls"].items()}
    slots: dict[str, _Gate] = {}
    pacers: dict[str, _Pacer] = {}
    for route, p in spec["limits"].items():
        if route in ("conc", "drop"):
            low = p.get("low_cap", p["cap"] // 4)
            # (the margins: the server's clock starts when our first request arrives)
            window = (p["t1"] - 0.005, p["t2"] + 0.1) if route == "drop" else (math.inf, math.inf)
            slots[route] = _Gate(lambda t, p=p, low=low, w=window: low if w[0] <= t < w[1] else p["cap"])
        else:
            slots[route] = _Gate(lambda t: spec["concurrency"])
        if route in ("rpm", "tpm"):
            rate = p[route] / 60
            pacers[route] = _Pacer(rate, 0.9 * p.get("burst", rate))

    async def send(route: str, body: dict[str, Any]) -> None:
        cost = 1 if route == "rpm" else request_tokens(body)
        for attempt in range(10):
            if route in pacers:
                await pacers[route].take(cost)
            await slots[route].acquire()
            try:
                async with session.post(urls[route], json={**body, "model": "m"}) as response:
                    await response.read()
                    status, wait = response.status, _retry_after(response.headers)
            finally:
                slots[route].release()
            if status == 200:
                return
            if status != 429 or attempt == 9:
                raise Refused(f"HTTP {status}")
            await asyncio.sleep(wait if wait is not None else 0.05)  # outside the slot

    return send, session.close


WORKERS = {"openai": _openai, "litellm": _litellm, "aiohttp": _aiohttp, "oracle": _oracle}


async def _work(spec: dict[str, Any], lines: list[dict[str, Any]]) -> dict[str, Any]:
    """One contender on the input's ``lines``: every line, at most ``concurrency`` in
    flight per provider; how many ended in an error, and of which kind."""
    send, close = await WORKERS[spec["contender"]](spec)
    slots = {route: asyncio.Semaphore(spec["concurrency"]) for route in spec["urls"]}
    errors: Counter[str] = Counter()

    async def one(body: dict[str, Any]) -> None:
        route = body["model"].split("/", 1)[0]
        try:
            if spec["contender"] in ("aiohttp", "oracle"):  # they hold their own slots
                await send(route, body)
            else:
                async with slots[route]:
                    await send(route, body)
        except Exception as exc:
            errors[type(exc).__name__] += 1

    start = time.perf_counter()
    try:
        await asyncio.gather(*(one(line["body"]) for line in lines))
    finally:
        await close()
    return {
        "lines": len(lines),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "client_wall_s": time.perf_counter() - start,
    }


# -- one run: a contender on a scenario ---------------------------------------------------


class Server:
    """bench/limitserver.py in a process of its own."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "limitserver.py"), "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **LOOPBACK_ENV},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("the limit server did not start")
        self.url = line.rsplit(" ", 1)[-1].strip()
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy

    def _call(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method="GET" if body is None else "POST")
        with self._opener.open(request, timeout=30) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result

    def reset(self, config: dict[str, Any]) -> None:
        self._call("/v1/reset", config)

    def stats(self) -> dict[str, Any]:
        return self._call("/v1/stats")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _last_line(text: str, returncode: int) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else f"exit status {returncode}"


def _run_llmadapters(
    scenario: Scenario,
    server: Server,
    work: Path,
    concurrency: int,
    timeout: float,
    env: dict[str, str],
    transport: str | None = None,
) -> dict[str, Any]:
    config = work / f"{scenario.name}.toml"
    config.write_text(
        (f'[defaults]\ntransport = "{transport}"\n\n' if transport else "")
        + "".join(f'[providers.{p.route}]\nbase_url = "{server.url}/{p.route}/v1"\n\n' for p in scenario.parts)
    )
    out, summary = work / f"{scenario.name}.llmadapters.out.jsonl", work / f"{scenario.name}.summary.json"
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "llmadapters.cli", "batch", str(work / f"{scenario.name}.jsonl")]
    command += ["-o", str(out), "--config", str(config), "-q", "--summary-json", str(summary), "-c", str(concurrency)]
    environ = {**os.environ, **LOOPBACK_ENV, **env}
    if transport:  # a plugin's: loaded whatever the caller's environment says
        environ.pop("LLMADAPTERS_DISABLE_PLUGIN_AUTOLOAD", None)
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environ, cwd=work)
    if done.returncode not in (0, 1):  # 1: some lines ended in an error, each with its record
        raise RuntimeError(_last_line(done.stderr, done.returncode))
    kinds: Counter[str] = Counter()
    records = 0
    with out.open(encoding="utf-8") as f:
        for line in f:
            records += 1
            error = json.loads(line).get("error")
            if error is not None:
                kinds[str(error.get("code") or error.get("type") or "error")] += 1
    figures = json.loads(summary.read_text())
    return {
        "lines": records,
        "errors": sum(kinds.values()),
        "error_kinds": dict(kinds),
        "client_wall_s": figures["wall_s"],
        "retries": figures["retries"],
    }


def _run_worker(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **LOOPBACK_ENV})
    if done.returncode != 0:
        raise RuntimeError(_last_line(done.stderr, done.returncode))
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run_one(
    scenario: Scenario,
    contender: str,
    server: Server,
    work: Path,
    concurrency: int,
    llmadapters_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Reset the server to the scenario's routes, run the contender, and read the
    server's counters. ``llmadapters_env``: more environment for the llmadapters
    command (see `checkout`)."""
    server.reset(scenario.server_config())
    server_cpu = server.stats()["server_cpu_s"]
    ideal = scenario.ideal(concurrency)
    timeout = max(120.0, 30 * ideal)
    cpu_before = _children_cpu()
    failed = None
    client: dict[str, Any] = {}
    try:
        if contender.startswith("llmadapters"):
            transport = contender.partition("-")[2] or None
            client = _run_llmadapters(scenario, server, work, concurrency, timeout, llmadapters_env or {}, transport)
        else:
            spec = {
                "contender": contender,
                "input": str(work / f"{scenario.name}.jsonl"),
                "urls": {p.route: f"{server.url}/{p.route}/v1" for p in scenario.parts},
                "limits": {p.route: p.params for p in scenario.parts},
                "concurrency": concurrency,
            }
            client = _run_worker(spec, timeout)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        failed = str(exc) if isinstance(exc, RuntimeError) else f"still running after {timeout:.0f} s"
    client_cpu = _children_cpu() - cpu_before
    stats = server.stats()
    routes = [stats["routes"][p.route] for p in scenario.parts]
    firsts = [r["first_at"] for r in routes if r["first_at"] is not None]
    lasts = [r["last_at"] for r in routes if r["last_at"] is not None]
    wall = max(lasts) - min(firsts) if firsts and lasts else 0.0
    rate_limited = sum(r["rate_limited"] for r in routes)
    avoidable = sum(stats["routes"][p.route]["rate_limited"] for p in scenario.parts if p.route != "sporadic")
    return {
        "failed": failed,
        "wall_s": wall,
        "ideal_s": ideal,
        "goodput": ideal / wall if wall > 0 and not failed else None,
        "lines": scenario.lines,
        "requests": sum(r["requests"] for r in routes),
        "ok": sum(r["ok"] for r in routes),
        "rate_limited": rate_limited,
        "share_429": rate_limited / scenario.lines,
        # what the goal counts: the sporadic route's 429s are the server's coin, which no client avoids
        "share_429_avoidable": avoidable / scenario.lines,
        "errors": client.get("errors"),
        "error_kinds": client.get("error_kinds", {}),
        "records": client.get("lines"),
        "retries": client.get("retries"),
        "client_wall_s": client.get("client_wall_s"),
        "client_cpu_s": client_cpu,
        "server_cpu_share": (stats["server_cpu_s"] - server_cpu) / wall if wall > 0 else None,
        "peak_active": {p.route: stats["routes"][p.route]["peak_active"] for p in scenario.parts},
        "timeline": {p.route: stats["routes"][p.route]["timeline"] for p in scenario.parts},
    }


def busy(run: dict[str, Any]) -> bool:
    """Whether the client's process was on the CPU most of the run's wall time."""
    return not run["failed"] and run["wall_s"] > 0 and run["client_cpu_s"] >= BUSY * run["wall_s"]


def met(run: dict[str, Any]) -> bool:
    """The goal: goodput >= 0.95, 429s <= 2% of the lines (not counting a sporadic
    route's, which the server answers by the toss of a coin whatever the client does:
    p/(1 - p) of the lines, 2.04%, on average), no error line."""
    return (
        not run["failed"]
        and run["goodput"] is not None
        and run["goodput"] >= GOAL_GOODPUT
        and run["share_429_avoidable"] <= GOAL_429
        and run["errors"] == 0
    )


# -- the write-up -------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]], align: str) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def _cell(run: dict[str, Any]) -> str:
    if run["failed"]:
        return "failed"
    return f"{run['goodput']:.2f} / {100 * run['share_429']:.1f}%"


def markdown(results: dict[str, Any]) -> str:
    """The section for the Performance page: what was run, a table per scenario, and a
    summary of goodput and 429s per scenario and contender."""
    labels = results["contenders"]
    settings = results["settings"]
    out = [
        "## Holding hidden rate limits",
        "",
        "Each client answers the same input against bench/limitserver.py (a process of its own), "
        "which enforces a limit no client is told of, one scenario per provider behaviour; "
        f"each client at concurrency {settings['concurrency']} per provider, llmadapters with no limit "
        "configured. Wall is the server's time from the run's first request to its last reply; "
        "goodput = ideal / wall, the ideal being what a client that knew the limit could reach; "
        "429s are counted by the server, per input line; error lines are lines that ended without a reply. "
        f"Goal for llmadapters: goodput ≥ {GOAL_GOODPUT} and 429s ≤ {GOAL_429:.0%} of lines and no error line. "
        "Client CPU is the client process's user + system CPU, start-up included.",
        "",
        f"This run: `{results['command']}`, {results['date']}, {results['minutes']} minutes"
        + (f"; llmadapters at commit {commit[:12]}." if (commit := settings.get("llmadapters_commit")) else "."),
    ]
    if results.get("skipped"):
        out += ["", "Not run: " + "; ".join(f"{labels[k]} ({why})" for k, why in results["skipped"].items()) + "."]
    for scenario in results["scenarios"]:
        out += ["", f"### `{scenario['name']}`: {scenario['lines']:,} lines, ideal {scenario['ideal_s']:.2f} s", ""]
        out += [f"- `{part['route']}`: {part['description']}" for part in scenario["parts"]]
        if len(scenario["parts"]) > 1:
            out += ["- ideal: the largest of its parts'"]
        rows = []
        shares = []
        for key, run in scenario["runs"].items():
            if run["server_cpu_share"] is not None:
                shares.append(run["server_cpu_share"])
            if run["failed"]:
                rows.append([labels[key], "failed: " + run["failed"].replace("|", "/")[:120], "", "", "", "", ""])
                continue
            kinds = ", ".join(f"{k} {v}" for k, v in run["error_kinds"].items())
            rows.append(
                [
                    labels[key],
                    f"{run['wall_s']:.2f}",
                    f"{run['ideal_s']:.2f}",
                    f"{run['goodput']:.2f}",
                    f"{100 * run['share_429']:.1f}%",
                    f"{run['errors']:,}" + (f" ({kinds})" if kinds else ""),
                    f"{run['client_cpu_s']:.1f}" + (" †" if busy(run) else ""),
                ]
            )
        header = ["client", "wall s", "ideal s", "goodput", "429s per line", "error lines", "client CPU s"]
        out += ["", _table(header, rows, "lrrrrrr")]
        if shares:
            out += ["", f"The server's CPU: at most {max(shares):.0%} of a core during these runs."]
        if any(busy(run) for run in scenario["runs"].values()):
            out[-1] += (
                f" †: the client's process was on the CPU for {BUSY:.0%} of the wall time or more, so its own "
                "speed, not only its handling of the limit, may be what held it back."
            )
    keys = [k for k in labels if any(k in s["runs"] for s in results["scenarios"])]
    judged = [k for k in keys if k.startswith("llmadapters")]
    rows = []
    for scenario in results["scenarios"]:
        runs = scenario["runs"]
        row = [f"`{scenario['name']}`", *(_cell(runs[k]) if k in runs else "" for k in keys)]
        row += [("met" if met(runs[k]) else "**missed**") if k in runs else "" for k in judged]
        rows.append(row)
    goal = f"goodput ≥ {GOAL_GOODPUT}, 429s ≤ {GOAL_429:.0%} of lines (sporadic's not counted), 0 error lines"
    out += [
        "",
        "### Summary: goodput / 429s per line",
        "",
        f"Goal: {goal}.",
        "",
        _table(
            ["scenario", *(labels[k] for k in keys), *(f"goal met: {k}" for k in judged)],
            rows,
            "l" + "r" * len(keys) + "l" * len(judged),
        ),
    ]
    return "\n".join(out) + "\n"


# -- the command --------------------------------------------------------------------------

PAGE_HEAD = """# Rate limits, measured

!!! note "Generated by `make bench-limits`"
    This page is written by bench/limits.py: do not edit it by hand. How the limiter
    learns each limit is in [Retries, rate limits, timeouts](guides/policies.md#rate-limits).

"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny N, each scenario under ~2 s: a smoke run")
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    parser.add_argument("--page", metavar="FILE", help="also write the figures as a docs page (docs/limits.md)")
    parser.add_argument("-c", "--concurrency", type=int, default=64, help="each client's calls in flight per provider")
    parser.add_argument("--latency-ms", type=float, default=None, help="every route's latency (default: each its own)")
    parser.add_argument("--scenarios", default=None, help="comma-separated, of conc,rpm,tpm,sporadic,drop,all")
    parser.add_argument("--contenders", default=None, help=f"comma-separated, of {','.join(CONTENDERS)}")
    parser.add_argument("--oracle", action="store_true", help="also run the reference client told the limits")
    parser.add_argument(
        "--llmadapters-rev",
        metavar="REV",
        help="run the llmadapters command from this git revision (e.g. HEAD) instead of the working tree",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def checkout(rev: str, into: Path) -> tuple[str, dict[str, str]]:
    """llmadapters and its plugins as of ``rev`` of this repository (``git archive``,
    which leaves the repository as it is), extracted under ``into``: its commit, and the
    PYTHONPATH that makes the llmadapters command import them instead of the working
    tree's (the venv's editable installs come after PYTHONPATH on sys.path)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", commit, "llmadapters", "plugins"], cwd=ROOT, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    paths = [str(into), *(str(p) for p in sorted((into / "plugins").glob("llmadapters-*")) if p.is_dir())]
    pythonpath = os.pathsep.join([*paths, *filter(None, [os.environ.get("PYTHONPATH")])])
    return commit, {"PYTHONPATH": pythonpath}


def _command() -> str:
    python = Path(sys.executable)
    shown = python.relative_to(ROOT) if python.is_relative_to(ROOT) else python
    return shlex.join([str(shown), "bench/limits.py", *sys.argv[1:]])


def _log(message: str) -> None:
    print(f"[limits] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    chosen = scenarios(args.quick, args.latency_ms)
    if args.scenarios:
        names = args.scenarios.split(",")
        chosen = [s for s in chosen if s.name in names]
    keys = args.contenders.split(",") if args.contenders else [k for k in CONTENDERS if k != "oracle" or args.oracle]
    skipped = {k: "not installed" for k in keys if importlib.util.find_spec(NEEDS[k]) is None}
    keys = [k for k in keys if k not in skipped]
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no run depends on the network
    started = time.perf_counter()
    server = Server()
    results: dict[str, Any] = {
        "command": _command(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "settings": {"concurrency": args.concurrency, "latency_ms": args.latency_ms, "quick": args.quick},
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
        "contenders": dict(CONTENDERS),
        "skipped": skipped,
        "scenarios": [],
    }
    try:
        with tempfile.TemporaryDirectory(prefix="llmadapters-limits-") as tmp:
            work = Path(tmp)
            llmadapters_env: dict[str, str] = {}
            if args.llmadapters_rev:
                commit, llmadapters_env = checkout(args.llmadapters_rev, work / "llmadapters-src")
                results["settings"]["llmadapters_commit"] = commit
            for scenario in chosen:
                write_input(scenario, work / f"{scenario.name}.jsonl")
                runs: dict[str, Any] = {}
                for key in keys:
                    _log(f"{scenario.name}: {key}")
                    runs[key] = run_one(scenario, key, server, work, args.concurrency, llmadapters_env)
                    r = runs[key]
                    _log(
                        f"  wall {r['wall_s']:.2f} s, ideal {r['ideal_s']:.2f} s, 429s {r['rate_limited']}, "
                        f"errors {r['errors']}" + (f", FAILED: {r['failed']}" if r["failed"] else "")
                    )
                results["scenarios"].append(
                    {
                        "name": scenario.name,
                        "lines": scenario.lines,
                        "ideal_s": scenario.ideal(args.concurrency),
                        "parts": [{**asdict(p), "description": p.describe(args.concurrency)} for p in scenario.parts],
                        "runs": runs,
                    }
                )
    finally:
        server.close()
    results["minutes"] = round((time.perf_counter() - started) / 60, 1)
    return results


def main() -> None:
    args = _parser().parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        lines = [json.loads(line) for line in Path(spec["input"]).read_text().splitlines() if line.strip()]
        print(json.dumps(asyncio.run(_work(spec, lines))))
        return
    results = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    if args.page:
        Path(args.page).write_text(PAGE_HEAD + markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
