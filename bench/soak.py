"""Soak: 30 minutes (by default) of a batch with random faults at concurrency 256
against the fake server in its own process; prints fd count, RSS and task count over
time, and the outcome counts (every request read accounted for).

    .venv/bin/python bench/soak.py                  # 30 minutes
    .venv/bin/python bench/soak.py --minutes 2 --every 10
"""

from __future__ import annotations

import argparse
import asyncio

from common import start_fake_server

from llmadapters.testing.soak import soak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("-c", "--concurrency", type=int, default=256)
    parser.add_argument("--every", type=float, default=60.0, help="seconds between samples")
    args = parser.parse_args()
    proc, base_url = start_fake_server(["--ttft-ms", "20"])
    try:
        report = asyncio.run(soak(base_url, seconds=args.minutes * 60, concurrency=args.concurrency, every=args.every))
    finally:
        proc.terminate()
        proc.wait()
    print(f"{'seconds':>8} {'done':>9} {'fds':>5} {'RSS MiB':>8} {'tasks':>6}")
    for s in report.samples:
        print(f"{s.seconds:8.0f} {s.done:9d} {s.open_fds:5d} {s.rss_mib:8.1f} {s.tasks:6d}")
    results = sum(report.outcomes.values())
    print(f"read {report.read}: {results} results + {report.dropped} never started; accounted: {report.accounted}")
    print("outcomes:", ", ".join(f"{k} {v}" for k, v in sorted(report.outcomes.items())))


if __name__ == "__main__":
    main()
