"""The measurements of the benchmark (bench/run.py): the plan of each round, the worker
processes that run one contender each, and the figures taken from their samples.

    python bench/measure.py SPEC      # a worker: runs SPEC's jobs, prints their figures as JSON

Nothing here writes the page: its figures go to bench/report.py as performance.json.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common import cpu, start_fake_server
from contenders import CONTENDERS, MESSAGES, Contender
from settings import MAX_WAIT, NEW_CONNECTION_S, POOL

if TYPE_CHECKING:
    from collections.abc import Iterable

    from settings import Settings

# Distributions whose versions the page gives; the modules whose import time it gives.
PACKAGES = ("llmadapters", "llmadapters-aiohttp", "openai", "httpx2", "httpx", "aiohttp", "litellm")
IMPORTS = ("llmadapters", "openai", "aiohttp", "httpx2", "httpx", "litellm")

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
    command = [sys.executable, __file__, json.dumps(spec)]
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


def _requests(s: Settings, contender: Contender, concurrency: int) -> int:
    """Calls per measurement: fewer at concurrency 1, at least 3 per slot above, a slow
    contender's share of them."""
    if contender.sync:
        return int(s.sync_n)
    n: int = s.n
    base = n // 3 if concurrency == 1 else max(n, 3 * concurrency)
    return max(round(base * contender.share), 2 * concurrency)


def _throughput_spec(s: Settings, key: str, urls: dict[str, str]) -> dict[str, Any]:
    contender = CONTENDERS[key]
    levels = [1] if contender.sync else list(s.concurrency)
    jobs = [_job(f"unary-{c}", "unary", urls["unary"], _requests(s, contender, c), c, max(c, 20)) for c in levels]
    if contender.stream is not None:
        c = s.stream_concurrency
        streams = max(round(s.n // 5 * contender.share), 2 * c)
        jobs.append(_job("stream", "stream", urls["sse"], streams, c, c))
    if not contender.sync:
        jobs.append(_job("latency", "unary", urls["latency"], s.latency_n, s.latency_concurrency, 0))
    return {"contender": key, "connections": max(POOL, *levels), "jobs": jobs}


def _memory_wait(s: Settings, throughput: list[dict[str, Figures]]) -> float:
    """Seconds the fake server holds each reply in a contender's memory run: enough for it
    to start all its calls before the first one ends. Each call costs it about its CPU
    per call at the highest concurrency (in its latest throughput run), on a connection
    already open, plus ``NEW_CONNECTION_S`` to open one (measured here: starting 10,000
    calls took the aiohttp transport 8.6 s and the httpx one 15.5 s, at 0.21 and 0.8 ms of
    CPU per call at concurrency 1,024). Twice that, at least ``--in-flight-wait``, at
    most ``MAX_WAIT``."""
    least, calls = float(s.in_flight_wait), int(s.in_flight)
    if not throughput:
        return least
    top = throughput[-1][f"unary-{max(s.concurrency)}"]
    return min(MAX_WAIT, max(least, 2 * calls * (top["cpu_s"] / top["n"] + NEW_CONNECTION_S)))


def _memory_run(s: Settings, key: str, nginx_url: str, wait: float) -> dict[str, Figures]:
    """A few calls to nginx first (imports done, so that the RSS before the burst holds
    them), then ``--in-flight`` calls at once to a fake server of its own that holds each
    reply ``wait`` seconds."""
    server, url = start_fake_server(["--ttft-ms", str(round(wait * 1000))])
    jobs = [
        _job("imports", "unary", nginx_url, 20, 4, 0),
        _job("memory", "unary", url, s.in_flight, s.in_flight, 0),
    ]
    try:
        figures = _spawn({"contender": key, "connections": s.in_flight, "jobs": jobs})
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


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure(s: Settings, keys: list[str], urls: dict[str, str], nginx_pid: int) -> dict[str, Any]:
    """Every round of every contender; returns the medians, and the failures: a worker
    that fails is not run again, its contender's other worker is."""
    samples: dict[str, dict[str, list[dict[str, Figures]]]] = {
        part: {key: [] for key in keys} for part in ("throughput", "memory")
    }
    failed: dict[str, dict[str, str]] = {}
    server: list[Figures] = []
    capacity_n = max(s.n, 3 * 256)
    alone = _spawn(_aiohttp_spec(_job("alone", "unary", urls["latency"], 5, 1, 1)))["alone"]
    for round_ in range(s.rounds):
        nginx_cpu = _tree_cpu_s(nginx_pid)
        figures = _spawn(_aiohttp_spec(_job("capacity", "unary", urls["unary"], capacity_n, 256, 256)))["capacity"]
        server.append({**figures, "nginx_cpu_s": _tree_cpu_s(nginx_pid) - nginx_cpu, "requests": capacity_n + 256})
        for key in keys[round_ % len(keys) :] + keys[: round_ % len(keys)]:
            for part, part_samples in samples.items():
                if part in failed.get(key, {}):
                    continue
                if part == "memory" and (not CONTENDERS[key].memory or round_ >= s.memory_rounds):
                    continue
                started = time.perf_counter()
                try:
                    if part == "throughput":
                        part_samples[key].append(_spawn(_throughput_spec(s, key, urls)))
                    else:
                        wait = _memory_wait(s, samples["throughput"][key])
                        part_samples[key].append(_memory_run(s, key, urls["unary"], wait))
                except WorkerFailed as exc:
                    failed.setdefault(key, {})[part] = str(exc)
                    log(f"round {round_ + 1}/{s.rounds}: {key}, {part}: FAILED: {exc}")
                    continue
                log(f"round {round_ + 1}/{s.rounds}: {key}, {part} ({time.perf_counter() - started:.1f} s)")
    runs, memory = samples["throughput"], samples["memory"]
    return {
        "server": _server_figures(server),
        "unary": {key: _unary_figures(r) for key, r in runs.items() if r},
        "stream": {
            key: _stream_figures([sample["stream"] for sample in r])
            for key, r in runs.items()
            if r and "stream" in r[0]
        },
        "memory": {key: _memory_figures([sample["memory"] for sample in r]) for key, r in memory.items() if r},
        "latency": {
            "alone_s": alone["wall_s"] / alone["n"],
            "req_s": {
                key: _median(sample["latency"]["n"] / sample["latency"]["wall_s"] for sample in r)
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


def batch_commands(s: Settings, base_url: str) -> list[dict[str, Any]]:
    """The batch command's figures for each of ``--batch-lines``, or why it failed."""
    runs: list[dict[str, Any]] = []
    for lines in s.batch_lines:
        log(f"the batch command, {lines:,} lines")
        try:
            runs.append(_batch_command(lines, base_url, s.batch_concurrency))
        except WorkerFailed as exc:
            runs.append({"lines": lines, "failed": str(exc)})
    return runs


def import_times(repeat: int) -> dict[str, float]:
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


def machine() -> dict[str, str]:
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


def versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_work(json.loads(sys.argv[1])))))
