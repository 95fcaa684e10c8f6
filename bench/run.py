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

Each contender runs in worker processes of its own each round (``measure.py SPEC``,
printing JSON): one for the throughput, streaming and latency figures, one for the
memory figure. So CPU and peak RSS are the contender's own, and no library's import side
effects touch another's figures. Rounds interleave the contenders, so that drift in the
machine hits all alike; each figure is the median over rounds (the memory figures: over
``--memory-rounds``, 1), and each comparison a ratio within one run.

The parts: bench/settings.py (the sizes of a run, one typed value), bench/measure.py
(the plan, the workers, the figures), bench/report.py (the page, from performance.json
alone, with the goals as data) and bench/plot.py; this file runs them in turn.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import resource
import shlex
import sys
import time
from pathlib import Path

from common import foreign_sections, start_fake_server
from contenders import CONTENDERS
from measure import batch_commands, import_times, log, machine, measure, versions
from nginx import start_nginx
from plot import plot
from report import Page
from settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# What a full run cannot do without (make bench installs them).
REQUIRED = ("litellm", "httpx", "matplotlib", "aiohttp", "llmadapters_aiohttp")


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
        "--batch-lines",
        type=lambda text: [int(n) for n in text.split(",")],
        help="line counts of the batch command's runs, comma-separated (10000,1000000)",
    )
    return parser


def settings(args: argparse.Namespace) -> Settings:
    """The full run's sizes, or --quick's, with what the command line set."""
    base = Settings.quick_run() if args.quick else Settings.full()
    return base.with_overrides(
        n=args.n,
        rounds=args.rounds,
        concurrency=args.concurrency,
        in_flight=args.in_flight,
        in_flight_wait=args.in_flight_wait,
        memory_rounds=args.memory_rounds,
        batch_lines=args.batch_lines,
    )


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
    s = settings(args)
    _check_installed(s.quick)
    _raise_file_limit(s.in_flight)
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    started = time.perf_counter()
    keys = [key for key, c in CONTENDERS.items() if importlib.util.find_spec(c.needs)]
    skipped = {key: "not installed" for key in CONTENDERS if key not in keys}
    nginx, unary_url, sse_url = start_nginx()
    latency_server, latency_url = start_fake_server(["--ttft-ms", str(s.latency_ttft_ms), "--tps", str(s.latency_tps)])
    urls = {"unary": unary_url, "sse": sse_url, "latency": latency_url}
    try:
        measured = measure(s, keys, urls, nginx.pid)
        batch = batch_commands(s, unary_url)
    finally:
        for proc in (nginx, latency_server):
            proc.terminate()
            proc.wait()
    log("import times")
    results = {
        "command": _command(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "versions": versions(),
        "settings": s.as_dict(),
        "contenders": list(CONTENDERS),
        "skipped": skipped,
        **measured,
        "batch": batch,
        "imports": import_times(s.import_repeat),
    }
    results["duration_min"] = (time.perf_counter() - started) / 60
    page = Page(results)
    results["goals"] = page.goals()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "performance.json").write_text(json.dumps(results, indent=1) + "\n")
    drawn = importlib.util.find_spec("matplotlib") is not None
    if drawn:
        plot(results, args.out / "performance.png")
    markdown = args.out / "performance.md"
    kept = foreign_sections(markdown.read_text()) if markdown.exists() else ""
    markdown.write_text(page.render(drawn) + kept)
    log(f"wrote {args.out / 'performance.md'} in {results['duration_min']:.1f} minutes")


if __name__ == "__main__":
    main()
