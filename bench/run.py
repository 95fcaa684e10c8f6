"""The benchmark: every client doing the same work against the same local servers, in one
run, written up as the Performance page.

    make bench                                               # the documented way
    .venv-bench/bin/python bench/run.py                      # what it runs, in .venv-bench
    .venv/bin/python bench/run.py --quick --out /tmp/perf    # a smoke run: tiny N, 1 round

``make bench`` makes the venv ``.venv-bench`` (the project, the aiohttp plugin and
bench/requirements.txt: LiteLLM, httpx 0.28, matplotlib) and runs the full benchmark,
about 45 minutes on 2 cores: a third of it the rounds of throughput, streaming and
latency figures, a third the memory runs (minutes each for the clients on one httpx
pool, with 10,000 calls in flight), a third the batch command on 1,000,000 lines. It
writes ``performance.md``, ``performance.png`` (requests/s against concurrency) and
``performance.json`` (every figure, raw) to ``--out`` (docs/).

What is measured, for each contender of bench/contenders.py:

- unary calls against nginx (bench/nginx.py) at concurrency 1, 64, 256 and 1,024:
  requests/s, and the client process's CPU (getrusage) per 1,000 requests;
- streamed calls against nginx (50 chunks each) at concurrency 64: chunks/s and CPU per chunk;
- 10,000 calls in flight at once against the fake server (holding each reply until the
  client has started them all): peak RSS;
- unary calls at concurrency 256 against the fake server with a latency model (300 ms to
  the first token, then 50 tokens/s): requests/s beside the ideal, concurrency / latency.

and, once: nginx's own capacity (plain aiohttp at concurrency 256), the ``llmadapters
batch`` command on 10,000 and 1,000,000 lines (peak RSS and requests/s), and the time
``import X`` adds to the interpreter's start-up.

Each contender runs in worker processes of its own each round (``run.py --worker SPEC``,
printing JSON): one for the throughput, streaming and latency figures, one for the
memory figure. So CPU and peak RSS are the contender's own, and no library's import side
effects touch another's figures. Rounds interleave the contenders, so that drift in the
machine hits all alike; each figure is the median over rounds (the memory figures: over
``--memory-rounds``, 1), and each comparison a ratio within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common import cpu, start_fake_server
from contenders import CONTENDERS, MESSAGES, Contender
from nginx import STREAM_CHUNKS, start_nginx

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

ROOT = Path(__file__).resolve().parent.parent
POOL = 1024  # connections each client may open, unless more calls are in flight
MAX_WAIT = 300.0  # seconds, at most, that the fake server holds a reply in the memory runs
NEW_CONNECTION_S = 0.0005  # a client's CPU to open a connection, about (see _memory_wait)
# Distributions whose versions the page gives; the modules whose import time it gives.
PACKAGES = ("llmadapters", "llmadapters-aiohttp", "openai", "httpx2", "httpx", "aiohttp", "litellm")
IMPORTS = ("llmadapters", "openai", "aiohttp", "httpx2", "httpx", "litellm")
# What a full run cannot do without (make bench installs them).
REQUIRED = ("litellm", "httpx", "matplotlib", "aiohttp", "llmadapters_aiohttp")

Figures = dict[str, float]


# -- the worker: one contender, in a process of its own -----------------------------------


def _rss_mib() -> float:
    """This process's resident set size now."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _work(spec: dict[str, Any]) -> dict[str, Figures]:
    """Run the spec's jobs one after another, each on a client of its own, and return
    each job's raw figures by its name."""
    contender = CONTENDERS[spec["contender"]]
    figures: dict[str, Figures] = {}
    for job in spec["jobs"]:
        run, close = await contender.open(job["kind"], job["url"], spec["connections"])
        try:
            if job["warmup"]:  # connections opened, lazy imports done
                await run(job["warmup"], min(job["warmup"], job["concurrency"]))
            rss_before = _rss_mib()
            cpu_start, start = cpu(), time.perf_counter()
            units = await run(job["n"], job["concurrency"])
            wall, used = time.perf_counter() - start, cpu() - cpu_start
        finally:
            await close()
        figures[job["name"]] = {
            "n": job["n"],
            "units": units,
            "wall_s": wall,
            "cpu_s": used,
            "rss_before_mib": rss_before,
            "peak_rss_mib": _peak_rss_mib(),
        }
    return figures


class WorkerFailed(Exception):
    """A worker process ended in an error; its message is the error's last line."""


def _spawn(spec: dict[str, Any]) -> dict[str, Figures]:
    """Run a worker process on ``spec``; its figures, or WorkerFailed with its last line."""
    command = [sys.executable, __file__, "--worker", json.dumps(spec)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired as exc:
        raise WorkerFailed("still running after 30 minutes") from exc
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise WorkerFailed(lines[-1])
    result: dict[str, Figures] = json.loads(done.stdout)
    return result


# -- the plan -----------------------------------------------------------------------------


def _job(name: str, kind: str, url: str, n: int, concurrency: int, warmup: int) -> dict[str, Any]:
    return {"name": name, "kind": kind, "url": url, "n": n, "concurrency": concurrency, "warmup": warmup}


def _requests(args: argparse.Namespace, contender: Contender, concurrency: int) -> int:
    """Calls per measurement: fewer at concurrency 1, at least 3 per slot above, a slow
    contender's share of them."""
    if contender.sync:
        return int(args.sync_n)
    n: int = args.n
    base = n // 3 if concurrency == 1 else max(n, 3 * concurrency)
    return max(round(base * contender.share), 2 * concurrency)


def _throughput_spec(args: argparse.Namespace, key: str, urls: dict[str, str]) -> dict[str, Any]:
    contender = CONTENDERS[key]
    levels = [1] if contender.sync else args.concurrency
    jobs = [_job(f"unary-{c}", "unary", urls["unary"], _requests(args, contender, c), c, max(c, 20)) for c in levels]
    if contender.stream is not None:
        c = args.stream_concurrency
        streams = max(round(args.n // 5 * contender.share), 2 * c)
        jobs.append(_job("stream", "stream", urls["sse"], streams, c, c))
    if not contender.sync:
        jobs.append(_job("latency", "unary", urls["latency"], args.latency_n, args.latency_concurrency, 0))
    return {"contender": key, "connections": max(POOL, *levels), "jobs": jobs}


def _memory_wait(args: argparse.Namespace, throughput: list[dict[str, Figures]]) -> float:
    """Seconds the fake server holds each reply in a contender's memory run: enough for it
    to start all its calls before the first one ends. Each call costs it about its CPU
    per call at the highest concurrency (in its latest throughput run), on a connection
    already open, plus ``NEW_CONNECTION_S`` to open one (measured here: starting 10,000
    calls took the aiohttp transport 8.6 s and the httpx one 15.5 s, at 0.21 and 0.8 ms of
    CPU per call at concurrency 1,024). Twice that, at least ``--in-flight-wait``, at
    most ``MAX_WAIT``."""
    least, calls = float(args.in_flight_wait), int(args.in_flight)
    if not throughput:
        return least
    top = throughput[-1][f"unary-{max(args.concurrency)}"]
    return min(MAX_WAIT, max(least, 2 * calls * (top["cpu_s"] / top["n"] + NEW_CONNECTION_S)))


def _memory_run(args: argparse.Namespace, key: str, nginx_url: str, wait: float) -> dict[str, Figures]:
    """A few calls to nginx first (imports done, so that the RSS before the burst holds
    them), then ``--in-flight`` calls at once to a fake server of its own that holds each
    reply ``wait`` seconds."""
    server, url = start_fake_server(["--ttft-ms", str(round(wait * 1000))])
    jobs = [
        _job("imports", "unary", nginx_url, 20, 4, 0),
        _job("memory", "unary", url, args.in_flight, args.in_flight, 0),
    ]
    try:
        figures = _spawn({"contender": key, "connections": args.in_flight, "jobs": jobs})
    finally:
        server.terminate()
        server.wait()
    figures["memory"]["wait_s"] = wait
    return figures


def _aiohttp_spec(job: dict[str, Any]) -> dict[str, Any]:
    return {"contender": "aiohttp", "connections": POOL, "jobs": [job]}


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds used so far by process ``pid`` and its children (nginx's workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if int(stat.parent.name) == pid or int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _measure(args: argparse.Namespace, keys: list[str], urls: dict[str, str], nginx_pid: int) -> dict[str, Any]:
    """Every round of every contender; returns the medians, and the failures: a worker
    that fails is not run again, its contender's other worker is."""
    samples: dict[str, dict[str, list[dict[str, Figures]]]] = {
        part: {key: [] for key in keys} for part in ("throughput", "memory")
    }
    failed: dict[str, dict[str, str]] = {}
    server: list[Figures] = []
    capacity_n = max(args.n, 3 * 256)
    alone = _spawn(_aiohttp_spec(_job("alone", "unary", urls["latency"], 5, 1, 1)))["alone"]
    for round_ in range(args.rounds):
        nginx_cpu = _tree_cpu_s(nginx_pid)
        figures = _spawn(_aiohttp_spec(_job("capacity", "unary", urls["unary"], capacity_n, 256, 256)))["capacity"]
        server.append({**figures, "nginx_cpu_s": _tree_cpu_s(nginx_pid) - nginx_cpu, "requests": capacity_n + 256})
        for key in keys[round_ % len(keys) :] + keys[: round_ % len(keys)]:
            for part, part_samples in samples.items():
                if part in failed.get(key, {}):
                    continue
                if part == "memory" and (not CONTENDERS[key].memory or round_ >= args.memory_rounds):
                    continue
                started = time.perf_counter()
                try:
                    if part == "throughput":
                        part_samples[key].append(_spawn(_throughput_spec(args, key, urls)))
                    else:
                        wait = _memory_wait(args, samples["throughput"][key])
                        part_samples[key].append(_memory_run(args, key, urls["unary"], wait))
                except WorkerFailed as exc:
                    failed.setdefault(key, {})[part] = str(exc)
                    _log(f"round {round_ + 1}/{args.rounds}: {key}, {part}: FAILED: {exc}")
                    continue
                _log(f"round {round_ + 1}/{args.rounds}: {key}, {part} ({time.perf_counter() - started:.1f} s)")
    runs, memory = samples["throughput"], samples["memory"]
    return {
        "server": _server_figures(server),
        "unary": {key: _unary_figures(r) for key, r in runs.items() if r},
        "stream": {key: _stream_figures([s["stream"] for s in r]) for key, r in runs.items() if r and "stream" in r[0]},
        "memory": {key: _memory_figures([s["memory"] for s in r]) for key, r in memory.items() if r},
        "latency": {
            "alone_s": alone["wall_s"] / alone["n"],
            "req_s": {
                key: _median(s["latency"]["n"] / s["latency"]["wall_s"] for s in r)
                for key, r in runs.items()
                if r and "latency" in r[0]
            },
        },
        "failed": failed,
    }


# -- figures from samples -----------------------------------------------------------------


def _median(values: Iterable[float]) -> float:
    return float(statistics.median(values))


def _server_figures(runs: list[Figures]) -> Figures:
    """nginx's CPU comes in clock ticks (10 ms): summed over the rounds, not a median."""
    nginx_cpu_s, requests = sum(r["nginx_cpu_s"] for r in runs), sum(r["requests"] for r in runs)
    return {
        "req_s": _median(r["n"] / r["wall_s"] for r in runs),
        "client_cpu_ms_per_1000": _median(r["cpu_s"] / r["n"] * 1e6 for r in runs),
        "nginx_cpu_ms_per_1000": nginx_cpu_s / requests * 1e6,
    }


def _unary_figures(runs: list[dict[str, Figures]]) -> dict[str, Figures]:
    levels = [name.removeprefix("unary-") for name in runs[0] if name.startswith("unary-")]
    return {
        level: {
            "req_s": _median(r[f"unary-{level}"]["n"] / r[f"unary-{level}"]["wall_s"] for r in runs),
            "cpu_ms_per_1000": _median(r[f"unary-{level}"]["cpu_s"] / r[f"unary-{level}"]["n"] * 1e6 for r in runs),
        }
        for level in levels
    }


def _stream_figures(streams: list[Figures]) -> Figures:
    return {
        "chunks_s": _median(s["units"] / s["wall_s"] for s in streams),
        "cpu_us_per_chunk": _median(s["cpu_s"] / s["units"] * 1e6 for s in streams),
        "chunks_per_stream": _median(s["units"] / s["n"] for s in streams),
    }


def _memory_figures(runs: list[Figures]) -> Figures:
    """Medians, and in how many runs every call was in flight at the same moment: sure
    when all of them ended within twice the server's wait (no call can have started after
    the first one ended)."""
    return {
        "peak_rss_mib": _median(r["peak_rss_mib"] for r in runs),
        "kib_per_request": _median((r["peak_rss_mib"] - r["rss_before_mib"]) * 1024 / r["n"] for r in runs),
        "wall_s": _median(r["wall_s"] for r in runs),
        "wait_s": _median(r["wait_s"] for r in runs),
        "runs_all_at_once": sum(r["wall_s"] < 2 * r["wait_s"] for r in runs),
        "runs": len(runs),
    }


# -- the batch command and import times ---------------------------------------------------


def _batch_command(lines: int, base_url: str, concurrency: int) -> Figures:
    """``llmadapters batch`` on ``lines`` requests (OpenAI Batch API lines) in a process of
    its own: its peak RSS (wait4) and the requests/s of its own summary."""
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        work = Path(tmp)
        (work / "llmadapters.toml").write_text(f'[providers.bench]\nbase_url = "{base_url}"\n')
        body = json.dumps({"model": "bench/echo", "messages": MESSAGES})
        with (work / "requests.jsonl").open("w") as requests:
            for i in range(lines):
                line = (
                    f'{{"custom_id": "request-{i}", "method": "POST", "url": "/v1/chat/completions", "body": {body}}}'
                )
                requests.write(line + "\n")
        command = [sys.executable, "-m", "llmadapters.cli", "batch", str(work / "requests.jsonl")]
        command += ["-o", str(work / "results.jsonl"), "--config", str(work / "llmadapters.toml")]
        command += ["-c", str(concurrency), "-q", "--summary-json", str(work / "summary.json")]
        with (work / "stderr").open("w") as stderr:
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
            _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            last = (work / "stderr").read_text().strip().splitlines() or [f"exit status {proc.returncode}"]
            raise WorkerFailed(last[-1])
        summary = json.loads((work / "summary.json").read_text())
    if summary["ok"] != lines:
        raise WorkerFailed(f"{summary['ok']} of {lines} requests ok")
    return {"lines": lines, "peak_rss_mib": usage.ru_maxrss / 1024, "req_s": summary["requests_per_s"]}


def _batch_commands(args: argparse.Namespace, base_url: str) -> list[dict[str, Any]]:
    """The batch command's figures for each of ``--batch-lines``, or why it failed."""
    runs: list[dict[str, Any]] = []
    for lines in args.batch_lines:
        _log(f"the batch command, {lines:,} lines")
        try:
            runs.append(_batch_command(lines, base_url, args.batch_concurrency))
        except WorkerFailed as exc:
            runs.append({"lines": lines, "failed": str(exc)})
    return runs


def _import_times(repeat: int) -> dict[str, float]:
    """Milliseconds: the bare interpreter's start-up ("python -c pass"), and what each
    installed module's import adds to it; medians, the runs interleaved."""
    statements = {"python": "pass"}
    statements.update({m: f"import {m}" for m in IMPORTS if importlib.util.find_spec(m)})
    runs: dict[str, list[float]] = {name: [] for name in statements}
    for _ in range(repeat):
        for name, statement in statements.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", statement], check=True)
            runs[name].append(time.perf_counter() - start)
    bare = _median(runs.pop("python"))
    return {"python": bare * 1000, **{name: (_median(r) - bare) * 1000 for name, r in runs.items()}}


# -- the machine ----------------------------------------------------------------------------


def _machine() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    mem_kib = int(Path("/proc/meminfo").read_text().split("MemTotal:", 1)[1].split()[0])
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False).stderr.strip()
    return {
        "CPU": model,
        "cores": str(os.cpu_count()),
        "RAM": f"{mem_kib / 2**20:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "nginx": nginx.split("/", 1)[-1],
    }


def _versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# -- the page -------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def _table(header: list[str], rows: Iterable[list[str]], align: str = "") -> str:
    """A markdown table; ``align`` has an "l" or "r" a column (default: the first left)."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


class Page:
    """The markdown of the Performance page, from the results of one run."""

    def __init__(self, results: dict[str, Any]) -> None:
        self.r = results
        self.settings: dict[str, Any] = results["settings"]
        self.levels: list[str] = [str(c) for c in self.settings["concurrency"]]
        # The concurrency of the goals: 256, or the highest measured (--quick).
        self.goal_level = "256" if "256" in self.levels else self.levels[-1]

    def render(self, plot: bool) -> str:
        parts = [self.intro(), self.goals(), self.unary(plot), self.ratios(), self.streaming(), self.memory()]
        parts += [self.latency(), self.batch(), self.imports(), self.failures(), self.setup()]
        return "\n".join(part for part in parts if part)

    def keys(self, part: str) -> list[str]:
        """The contenders measured by ``part``: "unary", "stream", "memory" or "latency"."""
        measured: dict[str, Callable[[Contender], bool]] = {
            "unary": lambda c: True,
            "stream": lambda c: c.stream is not None,
            "memory": lambda c: c.memory,
            "latency": lambda c: not c.sync,
        }
        return [key for key in self.r["contenders"] if measured[part](CONTENDERS[key])]

    def row(self, key: str, part: str, measured: bool, cells: list[str]) -> list[str]:
        """A contender's row: its cells when ``measured``, else why it has no figures."""
        label = CONTENDERS[key].label
        if measured:
            return [label, *cells]
        why = "failed" if part in self.r["failed"].get(key, {}) else "not installed"
        return [label, why, *("" for _ in cells[1:])]

    def req_s(self, key: str, level: str) -> float | None:
        value: float | None = self.r["unary"].get(key, {}).get(level, {}).get("req_s")
        return value

    def chunks_s(self, key: str) -> float | None:
        value: float | None = self.r["stream"].get(key, {}).get("chunks_s")
        return value

    def intro(self) -> str:
        s, server = self.settings, self.r["server"]
        rounds = "1 round" if s["rounds"] == 1 else f"{s['rounds']} rounds"
        machine = _table(["", ""], ([k, v] for k, v in self.r["machine"].items()), "ll")
        versions = _table(["package", "version"], ([k, v] for k, v in self.r["versions"].items()), "ll")
        return f"""# Performance

!!! note "Generated by `make bench`"
    This page is written by bench/run.py: do not edit it by hand. This run:
    `{self.r["command"]}`, {self.r["date"]}, {self.r["duration_min"]:.1f} minutes. Every
    figure, raw, is in [performance.json](performance.json). Other measurements (the
    `httpx` transport's shard sweep, middleware overhead, a whole batch job, a 30-minute
    soak) are on [More measurements](more-measurements.md); how well clients hold
    providers' hidden rate limits is on [Rate limits, measured](limits.md).

Each client makes the same chat call against the same local server: nginx returning a
fixed reply (bench/nginx.py), or `llmadapters fake-server` where a slow server is needed.
Each contender runs in worker processes of its own each round, so that the CPU (getrusage
of the client process, user + system) and the peak RSS are its own. Each figure is the
median of {rounds} (the memory sections say how many runs theirs took); the rounds
interleave the contenders, and each ratio compares figures of this one run.

nginx is not what limits the clients: it answered {_num(server["req_s"])} requests/s to
plain aiohttp at concurrency 256, using {_num(server["nginx_cpu_ms_per_1000"])} CPU-ms per
1,000 requests where the client used {_num(server["client_cpu_ms_per_1000"])}.

## Machine

{machine}
{versions}"""

    def goals(self) -> str:
        g, imports, batch = self.goal_level, self.r["imports"], self.r["batch"]
        at = f"req/s at C={g}"
        unary = [
            ("aiohttp transport / plain aiohttp", "la-aiohttp", "aiohttp", 0.8),
            ("aiohttp transport / LiteLLM", "la-aiohttp", "litellm", 20),
            ("httpx transport / plain httpx2", "la-httpx", "httpx2", 3),
            ("openai transport / plain AsyncOpenAI on aiohttp", "la-openai", "openai-aiohttp", 1),
        ]
        streaming = [
            ("aiohttp transport / plain aiohttp SSE loop", "la-aiohttp", "aiohttp", 0.8),
            ("httpx transport / plain httpx2 SSE loop", "la-httpx", "httpx2", 0.8),
            ("aiohttp transport / plain AsyncOpenAI", "la-aiohttp", "openai-httpx2", 8),
            ("httpx transport / plain AsyncOpenAI", "la-httpx", "openai-httpx2", 8),
        ]
        rows = [_goal(f"{what}, {at}", _ratio(self.req_s(a, g), self.req_s(b, g)), t) for what, a, b, t in unary]
        rows += [
            _goal(f"streaming, {what}, chunks/s", _ratio(self.chunks_s(a), self.chunks_s(b)), t)
            for what, a, b, t in streaming
        ]
        rows.append(_goal("`import llmadapters` above bare start-up, ms", imports.get("llmadapters"), 50, most=True))
        lines = f"{batch[-1]['lines']:,} / {batch[0]['lines']:,} lines"
        rss = _ratio(batch[-1].get("peak_rss_mib"), batch[0].get("peak_rss_mib"))
        rows.append(_goal(f"`llmadapters batch`, peak RSS, {lines}", rss, 1.2, most=True))
        return "## Goals\n\n" + _table(["", "measured", "goal", ""], rows, "lrrl")

    def unary(self, plot: bool) -> str:
        s, header = self.settings, ["client", *(f"C={c}" for c in self.levels)]
        req_rows, cpu_rows = [], []
        for key in self.keys("unary"):
            figures = self.r["unary"].get(key)
            cells = [(figures or {}).get(c) for c in self.levels]
            req_rows.append(self.row(key, "throughput", bool(figures), [_num(f and f["req_s"]) for f in cells]))
            cpu_rows.append(
                self.row(key, "throughput", bool(figures), [_num(f and f["cpu_ms_per_1000"]) for f in cells])
            )
        shares = "; ".join(f"{c.label}: {c.share:.0%} of them" for c in CONTENDERS.values() if c.share != 1)
        picture = "![Requests/s against concurrency](performance.png)" if plot else "(No plot: matplotlib is missing.)"
        return f"""## Requests/s

Non-streamed calls against nginx, after a warm-up: {s["n"]:,} calls per client and
concurrency, {s["n"] // 3:,} at concurrency 1, at least three per slot above ({shares}). The
sync `OpenAI` client makes {s["sync_n"]:,} calls one after another, at concurrency 1 only.

{_table(header, req_rows)}
{picture}

### Client CPU-ms per 1,000 requests

{_table(header, cpu_rows)}"""

    def ratios(self) -> str:
        pairs = [
            ("aiohttp transport / plain aiohttp", "la-aiohttp", "aiohttp"),
            ("aiohttp transport, no middleware / plain aiohttp", "la-aiohttp-bare", "aiohttp"),
            ("aiohttp transport / LiteLLM", "la-aiohttp", "litellm"),
            ("httpx transport / plain httpx2", "la-httpx", "httpx2"),
            ("httpx transport, no middleware / plain httpx2", "la-httpx-bare", "httpx2"),
            ("openai transport / plain AsyncOpenAI on aiohttp", "la-openai", "openai-aiohttp"),
            ("openai transport, no middleware / plain AsyncOpenAI on aiohttp", "la-openai-bare", "openai-aiohttp"),
        ]
        rows = [
            [what, *(_num(_ratio(self.req_s(a, c), self.req_s(b, c)), 2) for c in self.levels)] for what, a, b in pairs
        ]
        return "## Ratios of requests/s\n\n" + _table(["llmadapters, ...", *(f"C={c}" for c in self.levels)], rows)

    def streaming(self) -> str:
        loops = {"la-aiohttp": "aiohttp", "la-httpx": "httpx2"}
        rows = []
        for key in self.keys("stream"):
            figures = self.r["stream"].get(key, {})
            chunks_s = figures.get("chunks_s")
            loop = _ratio(chunks_s, self.chunks_s(loops[key])) if key in loops else None
            sdk = _ratio(chunks_s, self.chunks_s("openai-httpx2"))
            cells = [_num(chunks_s), _num(figures.get("cpu_us_per_chunk"), 1), _num(loop, 2), _num(sdk, 2)]
            rows.append(self.row(key, "throughput", bool(figures), cells))
        header = ["client", "chunks/s", "CPU-µs per chunk", "vs that library's SSE loop", "vs plain AsyncOpenAI"]
        return f"""## Streaming

Streamed calls against nginx, {STREAM_CHUNKS} chunks each then `[DONE]`, at concurrency
{self.settings["stream_concurrency"]}. The plain aiohttp and httpx loops split the lines by
hand, decode each event's JSON and stop at `[DONE]`. "Plain AsyncOpenAI" is on its default
httpx2 client.

{_table(header, rows)}"""

    def memory(self) -> str:
        s = self.settings
        rows = []
        for key in self.keys("memory"):
            f = self.r["memory"].get(key, {})
            cells = ["", "", "", "", ""]
            if f:
                runs, at_once = f["runs"], f["runs_all_at_once"]
                every = "yes" if at_once == runs else "no" if at_once == 0 else f"in {at_once} of {runs} runs"
                cells = [_num(f["peak_rss_mib"], 1), _num(f["kib_per_request"], 1), _num(f["wait_s"], 1)]
                cells += [_num(f["wall_s"], 1), every]
            rows.append(self.row(key, "memory", bool(f), cells))
        header = ["client", "peak RSS, MiB", "KiB per call", "server wait, s", "seconds for all"]
        header.append("all in flight at once")
        n = s["memory_rounds"]
        medians = "One run each" if n == 1 else f"Medians of {n} runs"
        return f"""## Memory with {s["in_flight"]:,} calls in flight

{s["in_flight"]:,} calls started at once, each client's pool allowing as many
connections, against a fake server holding every reply long enough for the client to
start them all: {s["in_flight"]:,} x (its CPU per call at concurrency {max(s["concurrency"]):,}
+ {NEW_CONNECTION_S * 1000:g} ms to open a connection) x 2, at least {s["in_flight_wait"]:g} s and at
most {MAX_WAIT:g} s. When all
calls end within twice that wait, every one of them was in flight at the same moment.
Peak RSS is the worker process's (ru_maxrss); "KiB per call" is its rise above the RSS
before the calls (libraries imported, a few calls made), over {s["in_flight"]:,}.
{medians}. To keep the run short, the variants (no middleware, client.batch, SDK on httpx2)
are left out.

{_table(header, rows, "lrrrrl")}"""

    def latency(self) -> str:
        s, latency = self.settings, self.r["latency"]
        ideal = s["latency_concurrency"] / latency["alone_s"]
        rows = []
        for key in self.keys("latency"):
            req_s = latency["req_s"].get(key)
            share = _ratio(req_s, ideal)
            rows.append(self.row(key, "throughput", req_s is not None, [_num(req_s), _num(share and 100 * share)]))
        return f"""## Against a latency model

A real provider answers slowly. Here the fake server waits {s["latency_ttft_ms"]} ms to the
first token, then sends {s["latency_tps"]} tokens/s; one call alone took
{latency["alone_s"] * 1000:.0f} ms. So {s["latency_n"]:,} calls at concurrency
{s["latency_concurrency"]} can reach {ideal:,.0f} requests/s at best: concurrency, not CPU,
decides the throughput, as long as the client's CPU keeps up.

{_table(["client", "req/s", "% of the ideal"], rows)}"""

    def batch(self) -> str:
        rows = [
            [f"{b['lines']:,}", "failed: " + b["failed"].replace("|", "/"), ""]
            if "failed" in b
            else [f"{b['lines']:,}", _num(b["peak_rss_mib"], 1), _num(b["req_s"])]
            for b in self.r["batch"]
        ]
        return f"""## Memory of the `llmadapters batch` command

The command as a user runs it, `llmadapters batch requests.jsonl -o results.jsonl --config
llmadapters.toml -c {self.settings["batch_concurrency"]}` (default `httpx` transport and
middleware), on files of OpenAI Batch API lines, against nginx; one run each. Peak RSS is
the command's process's (wait4); requests/s are those of its own summary.

{_table(["lines", "peak RSS, MiB", "req/s"], rows)}"""

    def imports(self) -> str:
        times = self.r["imports"]
        rows = [["bare start-up, `python -c pass`", _num(times["python"], 1)]]
        rows += [[f"`import {name}`, above that", _num(times[name], 1)] for name in IMPORTS if name in times]
        return f"""## Import time

Wall time of `python -c "import X"` minus that of `python -c pass`, medians of
{self.settings["import_repeat"]} runs each. `import llmadapters` imports no HTTP library: a
transport's library loads when a route first needs it.

{_table(["", "ms"], rows)}"""

    def failures(self) -> str:
        rows = [
            [CONTENDERS[key].label, part, message.replace("|", "/")]
            for key, parts in self.r["failed"].items()
            for part, message in parts.items()
        ]
        return "## Failures\n\n" + _table(["client", "worker", "its last line"], rows, "lll") if rows else ""

    def setup(self) -> str:
        return """## How each client is set up

- Every client's pool may open as many connections as there are calls in flight (at
  least 1,024): `TCPConnector(limit=...)` for aiohttp; `Limits(max_connections=...,
  max_keepalive_connections=...)` for httpx2 and httpx, and on the SDK's own
  `DefaultAsyncHttpxClient` and `DefaultAioHttpClient` for `AsyncOpenAI`; the provider
  setting `max_connections` for llmadapters; `AIOHTTP_CONNECTOR_LIMIT` and
  `AIOHTTP_CONNECTOR_LIMIT_PER_HOST` for LiteLLM.
- llmadapters runs with its default middleware stack (logging, retry, ratelimit,
  timeout, auth) unless the row says "no middleware" (`middleware=[]`); "client.batch"
  rows hand the same calls to `client.batch`. Its `openai` transport runs the SDK on its
  aiohttp client, as it does by default when aiohttp is installed, unless the row says
  httpx2.
- `AsyncOpenAI` and `OpenAI` run with `max_retries=0`: no call fails, so none would retry.
- LiteLLM: `litellm.acompletion(model="openai/echo", api_base=..., api_key="unused")`,
  with `LITELLM_LOCAL_MODEL_COST_MAP=True`, so that no run depends on the network.
- The plain aiohttp, httpx2 and httpx SSE loops read the body to its end after
  `[DONE]`: httpx and aiohttp close a connection whose response was left unread, and a
  bare `break` cost a new connection per stream.
- The code of every contender is in bench/contenders.py.
"""


def _goal(what: str, value: float | None, target: float, most: bool = False) -> list[str]:
    """A row of the goals: ``value`` is to reach ``target``, or stay under it (``most``)."""
    if value is None:
        verdict = "not measured"
    else:
        verdict = "met" if (value <= target if most else value >= target) else "**missed**"
    return [what, _num(value, 1 if target >= 20 else 2), ("≤ " if most else "≥ ") + f"{target:g}", verdict]


# The plot's colour of each contender: that of the HTTP client it runs on, so that each
# llmadapters line stands beside its plain library's.
_COLORS = {
    "aiohttp": ("la-aiohttp", "la-aiohttp-bare", "la-aiohttp-batch", "aiohttp"),
    "httpx2": ("la-httpx", "la-httpx-bare", "la-httpx-batch", "httpx2"),
    "openai on aiohttp": ("la-openai", "la-openai-bare", "la-openai-batch", "openai-aiohttp"),
    "openai on httpx2": ("la-openai-httpx2", "openai-httpx2"),
    "httpx": ("httpx",),
    "sync openai": ("openai-sync",),
    "litellm": ("litellm",),
}


def _plot(results: dict[str, Any], path: Path) -> None:
    """Requests/s against concurrency, both on log scales: llmadapters solid (dotted with
    no middleware, dash-dotted through client.batch), the others dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator, ScalarFormatter

    color = {key: f"C{i}" for i, keys in enumerate(_COLORS.values()) for key in keys}
    fig, ax = plt.subplots(figsize=(11, 6))
    for key in results["contenders"]:
        figures = results["unary"].get(key)
        if not figures:
            continue
        levels = sorted(figures, key=int)
        style = ":" if key.endswith("-bare") else "-." if key.endswith("-batch") else "-"
        ax.plot(
            [int(c) for c in levels],
            [figures[c]["req_s"] for c in levels],
            style if key.startswith("la-") else "--",
            marker="o" if key.startswith("la-") else "s",
            color=color[key],
            label=CONTENDERS[key].label,
        )
    levels = results["settings"]["concurrency"]
    ax.set_xscale("log")
    ax.set_xticks(levels, [str(c) for c in levels])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xlabel("concurrency (calls in flight)")
    ax.set_ylabel("requests/s")
    ax.set_title("Non-streamed calls against nginx")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


# -- main -----------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    names = "n rounds concurrency stream_concurrency in_flight in_flight_wait memory_rounds latency_concurrency"
    names += " latency_n latency_ttft_ms latency_tps batch_lines batch_concurrency import_repeat sync_n"
    return {name: getattr(args, name) for name in names.split()}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: tiny N, 1 round, concurrency 1 and 4; skips what is not installed",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs", help="where performance.md, .png and .json go (docs/)"
    )
    parser.add_argument("-n", type=int, help="calls per client and concurrency (3,000)")
    parser.add_argument("-r", "--rounds", type=int, help="rounds; figures are their medians (3)")
    parser.add_argument("-c", "--concurrency", type=int, action="append", help="repeatable (1, 64, 256, 1024)")
    parser.add_argument("--in-flight", type=int, help="calls in flight at once for the memory figures (10,000)")
    parser.add_argument(
        "--in-flight-wait",
        type=float,
        help="the least seconds the fake server holds each of those calls' reply (10); longer for a client that "
        "takes longer to start them all, by its CPU per call",
    )
    parser.add_argument(
        "--memory-rounds",
        type=int,
        help="rounds with a memory run (1): peak RSS varies little, and the clients on one httpx pool "
        "take minutes for 10,000 calls in flight",
    )
    parser.add_argument(
        "--batch-lines", help="line counts of the batch command's runs, comma-separated (10000,1000000)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def _defaults(args: argparse.Namespace) -> None:
    """Fill in what the command line left unset: the full run's values, or --quick's."""
    quick = args.quick
    full_or_quick: dict[str, tuple[Any, Any]] = {
        "n": (3000, 60),
        "rounds": (3, 1),
        "concurrency": ([1, 64, 256, 1024], [1, 4]),
        "in_flight": (10_000, 200),
        "in_flight_wait": (10.0, 0.3),
        "memory_rounds": (1, 1),
        "batch_lines": ("10000,1000000", "200,2000"),
    }
    for name, values in full_or_quick.items():
        if getattr(args, name) is None:
            setattr(args, name, values[quick])
    args.batch_lines = [int(n) for n in str(args.batch_lines).split(",")]
    args.concurrency = sorted(set(args.concurrency))
    args.stream_concurrency = 4 if quick else 64
    args.latency_ttft_ms, args.latency_tps = 300, 50
    args.latency_concurrency, args.latency_n = (16, 16) if quick else (256, 1024)
    args.batch_concurrency = 256
    args.import_repeat = 3 if quick else 7
    args.sync_n = 20 if quick else 200


def _check_installed(quick: bool) -> None:
    missing = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
    if missing and not quick:
        raise SystemExit(
            f"not installed here: {', '.join(missing)}. Run `make bench`: it makes .venv-bench with "
            "bench/requirements.txt and runs this benchmark there (or use --quick to skip them)."
        )


def _raise_file_limit(in_flight: int) -> None:
    """Let this process and its children (each worker, the fake server) open a socket for
    each call in flight, and some files."""
    needed = in_flight + 1000
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"{in_flight:,} calls in flight need {needed:,} file descriptors; ulimit -Hn is {hard:,}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _command() -> str:
    python = Path(sys.executable)
    shown = python.relative_to(ROOT) if python.is_relative_to(ROOT) else python
    return shlex.join([str(shown), "bench/run.py", *sys.argv[1:]])


def main() -> None:
    args = _parser().parse_args()
    if args.worker:
        print(json.dumps(asyncio.run(_work(json.loads(args.worker)))))
        return
    _defaults(args)
    _check_installed(args.quick)
    _raise_file_limit(args.in_flight)
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    started = time.perf_counter()
    keys = [key for key, c in CONTENDERS.items() if importlib.util.find_spec(c.needs)]
    skipped = {key: "not installed" for key in CONTENDERS if key not in keys}
    nginx, unary_url, sse_url = start_nginx()
    latency_server, latency_url = start_fake_server(
        ["--ttft-ms", str(args.latency_ttft_ms), "--tps", str(args.latency_tps)]
    )
    urls = {"unary": unary_url, "sse": sse_url, "latency": latency_url}
    try:
        measured = _measure(args, keys, urls, nginx.pid)
        batch = _batch_commands(args, unary_url)
    finally:
        for proc in (nginx, latency_server):
            proc.terminate()
            proc.wait()
    _log("import times")
    results = {
        "command": _command(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": _machine(),
        "versions": _versions(),
        "settings": _settings(args),
        "contenders": list(CONTENDERS),
        "skipped": skipped,
        **measured,
        "batch": batch,
        "imports": _import_times(args.import_repeat),
    }
    results["duration_min"] = (time.perf_counter() - started) / 60
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "performance.json").write_text(json.dumps(results, indent=1) + "\n")
    plot = importlib.util.find_spec("matplotlib") is not None
    if plot:
        _plot(results, args.out / "performance.png")
    (args.out / "performance.md").write_text(Page(results).render(plot))
    _log(f"wrote {args.out / 'performance.md'} in {results['duration_min']:.1f} minutes")


if __name__ == "__main__":
    main()
