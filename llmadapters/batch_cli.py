"""``llmadapters batch IN.jsonl -o OUT.jsonl``: the command around `llmadapters.batch`.

Output is appended and flushed record by record, so a killed run loses no completed
result; ``--resume`` skips the custom_ids already in the output (repairing a last line
cut short by the kill), so it sends no completed request again. ``--shard I/N`` answers
one shard of the input (split by custom_id), so that N workers share one input, each
with its own output (and its own ``--resume``); concatenated, the outputs hold every
request once. A request answered 429 is sent again until ``--line-deadline``; one that
ended in an error is sent again by ``--resume --retry-failed``, which first moves the
error records to ``OUT.retried``, so the output keeps one record per custom_id. The first Ctrl-C lets
the requests in flight finish and be written, then prints the summary; the second stops
at once. Exit status: 0 when every request succeeded, 1 when some ended in an error
(each has its error record), 2 for a usage problem (a bad argument, file or config:
nothing sent, no output made), 130 when interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .batch import (
    BatchSummary,
    Shard,
    completed_ids,
    duplicate_ids,
    duplicates_text,
    read_jsonl,
    set_aside_failed,
    write_record,
)
from .client import AsyncClient
from .errors import ConfigError
from .plugins import BatchJob

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator

    from .batch import BatchItem, BatchRun
    from .plugins import BatchRunner

__all__ = ["add_parser", "run"]


class UsageProblem(Exception):
    """A problem with the command's arguments or files: reported, nothing sent."""


def add_parser(commands: Any) -> None:
    batch = commands.add_parser("batch", help="answer every request of a JSONL file, writing OpenAI batch output")
    batch.add_argument("input", help="JSONL requests (OpenAI Batch API lines or plain bodies); '-' for stdin")
    batch.add_argument("-o", "--output", required=True, help="where to append results (JSONL); '-' for stdout")
    batch.add_argument("-m", "--model", default=None, help="provider/model for requests that name none")
    batch.add_argument("-c", "--concurrency", type=int, default=64, help="calls in flight per provider (64)")
    batch.add_argument("--rpm", type=float, default=None, help="requests per minute, per provider")
    batch.add_argument("--tpm", type=float, default=None, help="tokens per minute, per provider")
    batch.add_argument("--resume", action="store_true", help="skip the custom_ids already in the output")
    batch.add_argument(
        "--retry-failed",
        action="store_true",
        help="with --resume, send again the requests whose records are errors (their records move to OUT.retried)",
    )
    batch.add_argument(
        "--line-deadline",
        type=_seconds,
        default=3600.0,
        metavar="SECONDS",
        help="how long a request answered 429 is sent again, from its first attempt (3600)",
    )
    batch.add_argument(
        "--shard",
        type=_shard,
        default=None,
        metavar="I/N",
        help="answer only shard I of N (split by custom_id), for N workers on one input, each with its own output",
    )
    batch.add_argument("--config", default=None, help="a TOML config file")
    batch.add_argument(
        "--on",
        default=None,
        metavar="RUNNER",
        help="answer the requests with a plugin's batch runner (ray: on a Ray cluster) instead of in this process",
    )
    batch.add_argument("--address", default=None, help="with --on, the address of the runner's cluster")
    batch.add_argument("--summary-json", default=None, metavar="FILE", help="also write the summary as JSON")
    batch.add_argument(
        "--progress",
        choices=("auto", "bar", "json", "none"),
        default="auto",
        help="a bar on a terminal (auto), JSON lines on stderr each second (json), or none",
    )
    batch.add_argument("-q", "--quiet", action="store_true", help="no progress and no summary on stderr")


def _seconds(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _shard(text: str) -> Shard:
    import argparse

    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _lines(path: str) -> Iterator[bytes]:
    """The input's lines, as bytes: `read_jsonl` decodes each, so that one that is not
    UTF-8 costs its own line, not the run."""
    if path == "-":
        yield from sys.stdin.buffer
        return
    with open(path, "rb") as f:
        yield from f


def _check_input(args: argparse.Namespace) -> int | None:
    """Count the requests of a file and refuse duplicate ids; None for stdin."""
    if args.input == "-":
        return None
    path = Path(args.input)
    if not path.is_file():
        raise UsageProblem(f"cannot read {args.input}: no such file")
    duplicates, count = duplicate_ids(lambda: _lines(args.input), args.shard)
    if duplicates:
        raise UsageProblem(f"{args.input}: {duplicates_text(duplicates, 'lines')}")
    return count


def _open_output(args: argparse.Namespace) -> tuple[IO[str], set[str]]:
    if args.output == "-":
        return sys.stdout, set()
    path = Path(args.output)
    done: set[str] = set()
    if args.retry_failed and not args.resume:
        raise UsageProblem("--retry-failed continues an output file: add --resume")
    if path.exists() and path.stat().st_size > 0:
        if not args.resume:
            raise UsageProblem(f"{args.output} exists: add --resume to continue it, or choose another file")
        try:
            done = set_aside_failed(path) if args.retry_failed else completed_ids(path)
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageProblem(f"{args.output}: not a batch output file ({exc!r})") from None
        except OSError as exc:
            raise UsageProblem(f"cannot rewrite {args.output}: {exc.strerror or exc}") from None
    try:
        return open(path, "a", encoding="utf-8"), done
    except OSError as exc:
        raise UsageProblem(f"cannot write {args.output}: {exc.strerror or exc}") from None


class _Progress:
    """The bar on a terminal, JSON lines, or nothing."""

    def __init__(self, mode: str, total: int | None, summary: BatchSummary) -> None:
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "none"
        self.mode = mode
        self.summary = summary
        self.total = total
        self.limits: Callable[[], dict[str, dict[str, Any]]] = dict
        self._last = 0.0
        self._bar: Any = None
        if mode == "bar":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("[bold]batch"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TextColumn("[red]{task.fields[errors]} errors"),
                TextColumn("{task.fields[retries]} retries"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[limits]}"),
                transient=False,
            )
            self._task = self._bar.add_task("batch", total=total, rate="", errors=0, retries=0, limits="")
            self._bar.start()

    def update(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < (0.1 if self.mode == "bar" else 1.0):
            return
        self._last = now
        s = self.summary
        wall = max(now - s.started, 1e-9)
        if self._bar is not None:
            rate = f"{s.done / wall:.0f} req/s {s.tokens_out / wall:.0f} tok/s"
            limits = "  ".join(f"{name}: {_limits_text(stats)}" for name, stats in self.limits().items())
            self._bar.update(self._task, completed=s.done, rate=rate, errors=s.errors, retries=s.retries, limits=limits)
        elif self.mode == "json":
            record: dict[str, Any] = {"done": s.done, "total": self.total, "errors": s.errors, "retries": s.retries}
            record["requests_per_s"] = round(s.done / wall, 1)
            record["limits"] = self.limits()
            print(json.dumps(record), file=sys.stderr, flush=True)

    def close(self) -> None:
        self.update(final=True)
        if self._bar is not None:
            self._bar.stop()


def _limits_text(stats: dict[str, Any]) -> str:
    """One provider's limits, short: ``c=32 rpm=600 429s=4 waited 1.2s``."""
    retired = stats.get("retired_keys", {})
    gone = f" (retired: {', '.join(f'{key} {why}' for key, why in retired.items())})" if retired else ""
    for group in ("keys", "models"):
        if group in stats:
            return ", ".join(f"{name} {_limits_text(each)}" for name, each in stats[group].items()) + gone
    shown = [f"{key}={stats[key]}" for key in ("concurrency", "rpm", "tpm") if stats.get(key) is not None]
    counts = [f"429s={stats.get('rate_limited', 0)}", f"waited {stats.get('waited_s', 0)}s"]
    return " ".join([*shown, *counts]) + gone


def _print_summary(figures: dict[str, Any], interrupted: bool) -> None:
    lat = figures["latency_s"]
    lines = [
        "interrupted: resume with --resume" if interrupted else "done",
        f"  requests {figures['requests']}: {figures['ok']} ok, {figures['errors']} errors"
        + (f" ({', '.join(f'{k} {v}' for k, v in figures['errors_by_kind'].items())})" if figures["errors"] else ""),
        f"  retries {figures['retries']}, tokens {figures['tokens']['in']} in / {figures['tokens']['out']} out",
        f"  latency p50 {lat['p50']} s, p95 {lat['p95']} s, p99 {lat['p99']} s" if lat["p50"] is not None else "",
        f"  wall {figures['wall_s']} s, {figures['requests_per_s']} requests/s",
        *(f"  limits of {name}: {_limits_text(stats)}" for name, stats in figures.get("limits", {}).items()),
    ]
    print("\n".join(line for line in lines if line), file=sys.stderr)


def _limits(args: argparse.Namespace) -> dict[str, float] | None:
    return {k: v for k, v in (("rpm", args.rpm), ("tpm", args.tpm)) if v is not None} or None


def _client(args: argparse.Namespace) -> AsyncClient:
    """The client of the run, made (and its settings checked) before any output is."""
    try:
        return AsyncClient(args.config, limits=_limits(args))
    except ConfigError as exc:
        raise UsageProblem(str(exc)) from None


def _runner(client: AsyncClient, args: argparse.Namespace) -> BatchRunner | None:
    """The plugin's batch runner that ``--on`` names, or None to run here."""
    if args.on is None:
        if args.address is not None:
            raise UsageProblem("--address is the cluster of a runner: add --on RUNNER")
        return None
    runner = client.registry.batch_runners.get(args.on)
    if runner is None:
        known = ", ".join(sorted(client.registry.batch_runners)) or "none is installed"
        raise UsageProblem(f"--on {args.on}: no batch runner of that name (known: {known})")
    return runner


def _run_elsewhere(
    runner: BatchRunner, args: argparse.Namespace, items: Iterator[BatchItem], out: IO[str], progress: _Progress
) -> bool:
    """Write the records ``runner`` yields, as they come; True when interrupted. The
    summary counts their outcomes and tokens (the runner reports no latencies)."""
    job = BatchJob(
        items=items,
        config=args.config,
        limits=_limits(args),
        model=args.model,
        concurrency=args.concurrency,
        line_deadline=args.line_deadline,
        address=args.address,
    )
    summary = progress.summary
    try:
        for record in runner(job):
            out.write(json.dumps(record) + "\n")  # ASCII escapes: any output encoding holds them
            out.flush()
            error = record["error"]
            summary.outcomes["ok" if error is None else error["code"]] += 1
            usage = record["response"]["body"].get("usage") or {} if error is None else {}
            summary.tokens_in += usage.get("prompt_tokens") or 0
            summary.tokens_out += usage.get("completion_tokens") or 0
            progress.update()
    except KeyboardInterrupt:
        return True
    return False


async def _drive(
    client: AsyncClient, args: argparse.Namespace, items: Iterator[BatchItem], out: IO[str], progress: _Progress
) -> bool:
    """Run the batch, writing each result as it comes; True when interrupted."""
    interrupted = False
    loop = asyncio.get_running_loop()
    async with client:
        run: BatchRun = client.batch(
            items, concurrency=args.concurrency, model=args.model, line_deadline=args.line_deadline
        )
        progress.limits = client.limits
        main = asyncio.current_task()
        assert main is not None

        def on_interrupt() -> None:
            nonlocal interrupted
            if interrupted:  # the second Ctrl-C: stop now
                main.cancel()
            interrupted = True
            run.stop()

        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, on_interrupt)
        try:
            async for result in run:
                write_record(out, result)
                progress.summary.add(result)
                progress.update()
        finally:
            progress.summary.limits = client.limits()
            progress.limits = dict
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
    return interrupted


def run(args: argparse.Namespace) -> int:
    total = _check_input(args)
    client = _client(args)
    runner = _runner(client, args)
    out, done = _open_output(args)
    summary = BatchSummary()
    shard: Shard | None = args.shard
    items = (
        item
        for item in read_jsonl(_lines(args.input))
        if item.custom_id not in done and (shard is None or item.custom_id in shard)
    )
    progress = _Progress("none" if args.quiet else args.progress, None if total is None else total - len(done), summary)
    interrupted = True
    try:
        if runner is None:
            interrupted = asyncio.run(_drive(client, args, items, out, progress))
        else:
            interrupted = _run_elsewhere(runner, args, items, out, progress)
    except asyncio.CancelledError:
        pass
    finally:
        progress.close()
        if out is not sys.stdout:
            out.close()
        figures = summary.as_dict()
        figures["skipped_as_done"] = len(done)
        if shard is not None:
            figures["shard"] = str(shard)
        if args.summary_json:
            Path(args.summary_json).write_text(json.dumps(figures, indent=2) + "\n")
        if not args.quiet:
            _print_summary(figures, interrupted)
    if interrupted:
        return 130
    return 1 if summary.errors else 0
