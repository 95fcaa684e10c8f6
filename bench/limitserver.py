"""An OpenAI-compatible server on loopback that enforces hidden rate limits, the way
real providers do, for bench/limits.py.

    python bench/limitserver.py --port 0                       # the five default routes
    python bench/limitserver.py --route conc:conc,cap=16 --route s:sporadic,p=0.1
    python bench/limitserver.py --config limits.json           # {"latency_ms": 50, "routes": {...}}

It prints ``limit server listening on http://127.0.0.1:PORT`` once it accepts
connections. Each *route* is a provider of its own, at ``/<name>/v1``, with its own
state and parameters (see `Route`): ``POST /<name>/v1/chat/completions`` answers a
non-streamed chat completion after the route's latency (``stream: true`` is refused with
400), or 429 when the route's limit says so. Shared endpoints:

- ``GET /v1/stats``: per route, requests, 200s, 429s, 400s, the peak of requests being
  served at once, the server times (``loop.time()``) of its first request and last
  reply, and a timeline: per 100 ms since the first request, the requests admitted and
  the 429s; and the server's CPU seconds.
- ``POST /v1/reset``: every route's state and counters back to zero; a JSON body
  (``{"latency_ms": ..., "routes": {...}}``, as ``--config``) replaces the routes.

Modes (``mode``, by default the route's name):

- ``conc``: at most ``cap`` requests served at once; one more gets 429 at once with
  Zhipu's body (code ``1302``), and no rate-limit header and no Retry-After
  (Zhipu's and DeepSeek's behaviour).
- ``rpm``: a bucket of ``burst`` requests (default one second's worth, ``rpm``/60),
  refilled continuously at ``rpm``/60 per second. A request takes one at admission, or
  gets 429 with OpenAI's body (``"type": "requests"``). Every reply, 200 or 429, carries
  OpenAI's ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``: limit is the
  per-minute figure, remaining the bucket's level after this request (rounded down),
  reset the time until the bucket is full again as a Go duration (``1s``, ``120ms``,
  ``6m0s``). The token family is there too, from a generous bucket (``tpm``, default
  100,000,000/min) that the requests never empty. ``retry_after: true`` adds
  ``retry-after`` (whole seconds, rounded up) and ``retry-after-ms`` to 429s: the time
  until one request is back in the bucket.
- ``tpm``: the same with a bucket of tokens (``tpm``/min, ``burst`` default one
  second's worth) and a generous one of requests (``rpm``, default 1,000,000/min). A
  request costs `request_tokens`, charged at admission like OpenAI; one costing more
  than the whole bucket always gets 429 ("Request too large").
- ``sporadic``: no real limit; each request independently gets, with probability
  ``p`` (default 0.02; a seeded RNG, ``seed``), 429 at once with ``Retry-After:
  <retry_after>`` (whole seconds, default 1) and OpenAI's body, no rate-limit header.
- ``drop``: ``conc`` whose cap is ``low_cap`` (default ``cap``/4) from ``t1`` to ``t2``
  seconds after the route's first request (default 3 to 8), ``cap`` before and after.

Every 200 reply's ``usage`` is ``prompt_tokens`` as `request_tokens` counts them and
``completion_tokens`` = the request's ``max_completion_tokens`` or ``max_tokens``, else
16. 429s are answered at once; only admitted requests wait the latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import random
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from aiohttp import web
from common import cpu

MODES = ("conc", "rpm", "tpm", "sporadic", "drop")
DEFAULT_COMPLETION_TOKENS = 16
TICK = 0.1  # seconds: the resolution of each route's timeline in /v1/stats
DEFAULT_ROUTES: dict[str, dict[str, Any]] = {
    "conc": {"cap": 16},
    "rpm": {"rpm": 12_000},
    "tpm": {"tpm": 1_200_000},
    "sporadic": {"p": 0.02, "retry_after": 1},
    "drop": {"cap": 32, "t1": 3.0, "t2": 8.0},
}
ZHIPU_1302 = {
    "error": {
        "code": "1302",
        "message": "High concurrency usage of this API, please reduce concurrency or contact customer service "
        "to increase limits",
    }
}


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: their text
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def prompt_tokens(body: dict[str, Any]) -> int:
    """Each message's text (its string content, or its text parts) counts
    ``ceil(characters / 4)`` tokens, plus 4 per message."""
    messages = body.get("messages") or []
    return sum(math.ceil(len(_text(m.get("content"))) / 4) + 4 for m in messages if isinstance(m, dict))


def completion_tokens(body: dict[str, Any]) -> int:
    """``max_completion_tokens``, else ``max_tokens``, else 16: what the reply's usage
    says it generated."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return DEFAULT_COMPLETION_TOKENS


def request_tokens(body: dict[str, Any]) -> int:
    """What a request costs a ``tpm`` route: `prompt_tokens` + `completion_tokens`."""
    return prompt_tokens(body) + completion_tokens(body)


def go_duration(seconds: float) -> str:
    """A duration as Go prints it (OpenAI's reset headers), to the millisecond: ``0s``,
    ``120ms``, ``1s``, ``1.5s``, ``6m0s``, ``1h2m3s``."""
    ms = max(0, math.ceil(seconds * 1000 - 1e-6))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


class Bucket:
    """``per_minute``/60 per second, refilled continuously, holding at most ``capacity``."""

    def __init__(self, per_minute: float, capacity: float | None, now: float) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = capacity if capacity is not None else self.rate
        self.level = self.capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def headers(self, kind: str) -> dict[str, str]:
        return {
            f"x-ratelimit-limit-{kind}": str(int(self.per_minute)),
            f"x-ratelimit-remaining-{kind}": str(max(0, math.floor(self.level))),
            f"x-ratelimit-reset-{kind}": go_duration((self.capacity - self.level) / self.rate),
        }


@dataclass
class Params:
    """A route's parameters; each mode reads its own (see the module docstring)."""

    mode: str
    latency_ms: float = 50.0
    cap: int = 16  # conc, drop
    low_cap: int | None = None  # drop: default cap // 4
    t1: float = 3.0  # drop
    t2: float = 8.0  # drop
    rpm: float | None = None  # rpm: the limit; tpm: the generous requests budget
    tpm: float | None = None  # tpm: the limit; rpm: the generous tokens budget
    burst: float | None = None  # rpm, tpm: the bucket's capacity (default: one second's worth)
    retry_after: float | bool = False  # rpm: send Retry-After on 429s; sporadic: its seconds
    p: float = 0.02  # sporadic
    seed: int = 1  # sporadic

    @classmethod
    def parse(cls, name: str, raw: dict[str, Any], latency_ms: float) -> Params:
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"route {name!r}: unknown parameters {sorted(unknown)}")
        values = {"mode": name, "latency_ms": latency_ms, **raw}
        if values["mode"] not in MODES:
            raise ValueError(f"route {name!r}: mode must be one of {MODES}, got {values['mode']!r}")
        if values["mode"] == "sporadic" and values.get("retry_after") is False:
            values["retry_after"] = 1
        return cls(**values)


@dataclass
class Stats:
    requests: int = 0
    ok: int = 0
    rate_limited: int = 0
    bad: int = 0
    peak_active: int = 0
    first_at: float | None = None
    last_at: float | None = None
    # per TICK seconds since the first request: [replies begun (admitted), 429s]
    timeline: list[list[int]] = field(default_factory=list)

    def mark(self, now: float, column: int) -> None:
        assert self.first_at is not None
        tick = int((now - self.first_at) / TICK)
        while len(self.timeline) <= tick:
            self.timeline.append([0, 0])
        self.timeline[tick][column] += 1


@dataclass
class Route:
    """One provider: its parameters, its limit's state, its counters."""

    name: str
    params: Params
    stats: Stats = field(default_factory=Stats)
    active: int = 0
    requests: Bucket | None = None
    tokens: Bucket | None = None
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        p = self.params
        now = asyncio.get_running_loop().time()
        self.rng = random.Random(p.seed)
        if p.mode == "rpm":
            self.requests = Bucket(p.rpm or 12_000, p.burst, now)
            self.tokens = Bucket(p.tpm or 100_000_000, None, now)
        elif p.mode == "tpm":
            self.requests = Bucket(p.rpm or 1_000_000, None, now)
            self.tokens = Bucket(p.tpm or 1_200_000, p.burst, now)

    def cap(self, now: float) -> int:
        p = self.params
        if p.mode == "drop" and self.stats.first_at is not None and p.t1 <= now - self.stats.first_at < p.t2:
            return p.low_cap if p.low_cap is not None else max(1, p.cap // 4)
        return p.cap

    def admit(self, body: dict[str, Any], now: float) -> tuple[web.Response | None, dict[str, str]]:
        """(None, the reply's headers) when the request may be served now (its cost
        taken), else (the 429, its headers)."""
        p = self.params
        if p.mode in ("conc", "drop"):
            if self.active >= self.cap(now):
                return web.json_response(ZHIPU_1302, status=429), {}
            return None, {}
        if p.mode == "sporadic":
            if self.rng.random() < p.p:
                wait = max(0, math.ceil(float(p.retry_after)))
                message = f"Rate limit reached. Please try again in {wait}s."
                headers = {"retry-after": str(wait)}
                return web.json_response(_openai_error(message, "requests"), status=429, headers=headers), headers
            return None, {}
        assert self.requests is not None
        assert self.tokens is not None
        self.requests.refill(now)
        self.tokens.refill(now)
        cost = request_tokens(body)
        short: tuple[str, Bucket, float] | None = None
        if self.requests.level < 1:
            short = ("requests", self.requests, 1)
        elif self.tokens.level < cost:
            short = ("tokens", self.tokens, cost)
        else:
            self.requests.level -= 1
            self.tokens.level -= cost
        headers = {**self.requests.headers("requests"), **self.tokens.headers("tokens")}
        if short is None:
            return None, headers
        kind, bucket, need = short
        if need > bucket.capacity:
            message = f"Request too large for {kind} per min: Limit {int(bucket.per_minute)}, Requested {need}."
        else:
            message = (
                f"Rate limit reached for {kind} per min ({'RPM' if kind == 'requests' else 'TPM'}): "
                f"Limit {int(bucket.per_minute)}, Used {round(bucket.capacity - bucket.level)}, Requested {need}."
            )
            if p.retry_after is True:
                wait = (need - bucket.level) / bucket.rate
                headers["retry-after"] = str(max(1, math.ceil(wait)))
                headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
        return web.json_response(_openai_error(message, kind), status=429, headers=headers), headers


def _openai_error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": "rate_limit_exceeded"}}


class LimitServer:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.routes: dict[str, Route] = {}
        self.ids = itertools.count(1)

    def configure(self, config: dict[str, Any]) -> None:
        latency_ms = float(config.get("latency_ms", 50.0))
        routes = config.get("routes", DEFAULT_ROUTES)
        parsed = {name: Params.parse(name, dict(raw), latency_ms) for name, raw in routes.items()}
        self.config = config
        self.routes = {name: Route(name, params) for name, params in parsed.items()}

    async def chat(self, request: web.Request) -> web.StreamResponse:
        route = self.routes.get(request.match_info["route"])
        if route is None:
            return web.json_response(
                {"error": {"message": "no such route", "type": "invalid_request_error"}}, status=404
            )
        loop = asyncio.get_running_loop()
        now = loop.time()
        stats = route.stats
        stats.requests += 1
        if stats.first_at is None:
            stats.first_at = now
        try:
            body = json.loads(await request.read())
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                raise ValueError("expected a JSON object with a list of messages")
            if body.get("stream"):
                raise ValueError("streaming is not supported by this server")
        except ValueError as exc:
            stats.bad += 1
            error = {"error": {"message": str(exc), "type": "invalid_request_error", "param": None, "code": None}}
            return web.json_response(error, status=400)
        refusal, headers = route.admit(body, now)
        if refusal is not None:
            stats.rate_limited += 1
            stats.mark(now, 1)
            stats.last_at = loop.time()
            return refusal
        stats.mark(now, 0)
        route.active += 1
        stats.peak_active = max(stats.peak_active, route.active)
        try:
            await asyncio.sleep(route.params.latency_ms / 1000)
        finally:
            route.active -= 1
        prompt, completion = prompt_tokens(body), completion_tokens(body)
        reply = {
            "id": f"chatcmpl-{next(self.ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "m"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }
        stats.ok += 1
        stats.last_at = loop.time()
        return web.json_response(reply, headers=headers)

    async def stats(self, request: web.Request) -> web.Response:
        routes = {name: vars(route.stats) for name, route in self.routes.items()}
        total = {key: sum(r[key] for r in routes.values()) for key in ("requests", "ok", "rate_limited", "bad")}
        return web.json_response(
            {"routes": routes, "total": total, "server_cpu_s": cpu(), "now": asyncio.get_running_loop().time()}
        )

    async def reset(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            self.configure(json.loads(raw) if raw.strip() else self.config)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": {"message": str(exc), "type": "invalid_request_error"}}, status=400)
        return web.json_response({"routes": {name: vars(route.params) for name, route in self.routes.items()}})


def _route_arg(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME:MODE[,key=value...]``, values read as JSON when they parse (numbers, true)."""
    name, _, rest = text.partition(":")
    mode, *pairs = rest.split(",") if rest else [name]
    params: dict[str, Any] = {"mode": mode or name}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return name, params


async def serve(config: dict[str, Any], port: int) -> None:
    server = LimitServer(config)
    server.configure(config)
    app = web.Application(client_max_size=16 * 2**20)
    app.router.add_get("/v1/stats", server.stats)
    app.router.add_post("/v1/reset", server.reset)
    app.router.add_post("/{route}/v1/chat/completions", server.chat)
    runner = web.AppRunner(app, access_log=None, handle_signals=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"limit server listening on http://127.0.0.1:{bound}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=0, help="0: any free port (the default)")
    parser.add_argument("--config", help='a JSON file: {"latency_ms": 50, "routes": {"NAME": {"mode": ..., ...}}}')
    parser.add_argument("--latency-ms", type=float, default=None, help="every route's latency (default 50)")
    parser.add_argument("--route", action="append", default=[], metavar="NAME:MODE[,k=v...]", help="a route (repeat)")
    args = parser.parse_args(argv)
    config: dict[str, Any] = json.loads(Path(args.config).read_text()) if args.config else {}
    if args.route:
        config["routes"] = dict(map(_route_arg, args.route))
    if args.latency_ms is not None:
        config["latency_ms"] = args.latency_ms
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config, args.port))


if __name__ == "__main__":
    main()
