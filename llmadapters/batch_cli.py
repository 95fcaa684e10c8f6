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
at once. ``--max-cost`` (or the config's ``max_cost``) stops sending new requests before
the spent and in-flight cost would pass it, as the first Ctrl-C does; ``--estimate``
prices the job from its input and sends nothing. ``--via batch-api`` sends the job
through the provider's own Batch API instead (`llmadapters.batch_api`), keeping what it
submitted in ``OUT.batch-api.json``, so that a killed run's ``--resume`` submits nothing
twice (a budget refuses the job up front when its estimate may pass it);
``--finish-online`` sends the lines a batch did not answer (expired) online. Exit status: 0 when every request
succeeded, 1 when some ended in an error (each has its error record), 2 for a usage
problem (a bad argument, file or config: nothing sent, no output made), 3 when the
budget stopped the run (``--resume`` continues it), 130 when interrupted.
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
from .batch_api import BatchAPIJob, JobState, state_path
from .client import AsyncClient
from .errors import ConfigError
from .plugins import BatchJob
from .pricing import parse_amount
from .spend import estimate_job

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Collection, Iterator

    from .batch import BatchItem, BatchRun
    from .plugins import BatchRunner
    from .types import Cost

__all__ = ["add_parser", "run"]


class UsageProblem(Exception):
    """A problem with the command's arguments or files: reported, nothing sent."""


def add_parser(commands: Any) -> None:
    batch = commands.add_parser("batch", help="answer every request of a JSONL file, writing OpenAI batch output")
    batch.add_argument("input", help="JSONL requests (OpenAI Batch API lines or plain bodies); '-' for stdin")
    batch.add_argument("-o", "--output", help="where to append results (JSONL); '-' for stdout (required to send)")
    batch.add_argument("-m", "--model", default=None, help="provider/model for requests that name none")
    batch.add_argument("-c", "--concurrency", type=_count, default=64, help="calls in flight per provider (64)")
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
    batch.add_argument(
        "--max-cost",
        type=_amount,
        default=None,
        metavar="AMOUNT",
        help="stop sending before the spent and in-flight cost would pass AMOUNT (USD, or e.g. '30 CNY'); "
        "--resume continues (default: the config's max_cost)",
    )
    batch.add_argument(
        "--estimate",
        action="store_true",
        help="price the job from its input (prompt tokens and max_tokens) and exit: nothing is sent",
    )
    batch.add_argument(
        "--via",
        choices=("online", "batch-api"),
        default="online",
        help="send each request now (online, the default), or through the provider's Batch API "
        "(batch-api: results within its completion window, at its batch price)",
    )
    batch.add_argument(
        "--finish-online",
        action="store_true",
        help="with --via batch-api, send the lines a batch did not answer (expired, cancelled, failed) online",
    )
    batch.add_argument(
        "--poll-interval",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="with --via batch-api, the first wait between polls of the batches; it doubles up to 300 (10)",
    )
    batch.add_argument(
        "--embed-chunk",
        type=_count,
        default=None,
        metavar="N",
        help="split an embeddings line's input into requests of N inputs at most, joined into one record "
        "(default: the provider's documented limit, where known)",
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


def _count(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return value


def _amount(text: str) -> Cost:
    import argparse

    try:
        return parse_amount(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
            done = set_aside_failed(path, args.shard) if args.retry_failed else completed_ids(path)
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
                TextColumn("{task.fields[cost]}"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[limits]}"),
                transient=False,
            )
            self._task = self._bar.add_task("batch", total=total, rate="", errors=0, retries=0, cost="", limits="")
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
            self._bar.update(
                self._task,
                completed=s.done,
                rate=rate,
                errors=s.errors,
                retries=s.retries,
                cost=_money(s.costs.total()),
                limits=limits,
            )
        elif self.mode == "json":
            record: dict[str, Any] = {"done": s.done, "total": self.total, "errors": s.errors, "retries": s.retries}
            record["requests_per_s"] = round(s.done / wall, 1)
            record["cost"] = s.costs.as_dict()
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


def _money(amounts: dict[str, float]) -> str:
    """``0.0123 USD + 1.5 CNY``; empty for none."""
    return " + ".join(f"{amount:.6g} {currency}" for currency, amount in amounts.items())


def _cost_lines(cost: dict[str, Any]) -> list[str]:
    unpriced = sum(cost["unpriced"].values())
    lines = [f"  cost {_money(cost['total']) or 'unknown'}" + (f" ({unpriced} replies unpriced)" if unpriced else "")]
    if len(cost["by_model"]) > 1:
        lines += [f"    {model}: {_money(amounts)}" for model, amounts in cost["by_model"].items()]
    return lines


def _print_summary(figures: dict[str, Any], interrupted: bool) -> None:
    lat = figures["latency_s"]
    ended = figures.get("budget_reached") or ("interrupted: resume with --resume" if interrupted else "done")
    lines = [
        ended,
        f"  requests {figures['requests']}: {figures['ok']} ok, {figures['errors']} errors"
        + (f" ({', '.join(f'{k} {v}' for k, v in figures['errors_by_kind'].items())})" if figures["errors"] else ""),
        f"  retries {figures['retries']}, tokens {figures['tokens']['in']} in / {figures['tokens']['out']} out"
        + (f", {figures['cached']} from the cache" if figures.get("cached") else ""),
        *_cost_lines(figures["cost"]),
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
) -> tuple[bool, str | None]:
    """Run the batch, writing each result as it comes: whether it was interrupted, and
    why the budget stopped it, when it did."""
    interrupted = False
    loop = asyncio.get_running_loop()
    async with client:
        run: BatchRun = client.batch(
            items,
            concurrency=args.concurrency,
            model=args.model,
            line_deadline=args.line_deadline,
            max_cost=args.max_cost,
            embed_chunk=args.embed_chunk,
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
    reached = None if run.budget is None or run.budget.reached is None else str(run.budget.reached)
    if reached is not None and run.dropped:
        reached += f"; {run.dropped} requests not sent: add --resume (and a larger --max-cost) to continue"
    return interrupted, reached


def _estimate(args: argparse.Namespace, client: AsyncClient) -> int:
    """``--estimate``: price the job, print it (and write it to --summary-json)."""
    shard: Shard | None = args.shard
    items = (item for item in read_jsonl(_lines(args.input)) if shard is None or item.custom_id in shard)
    job = estimate_job(client, items, args.model, batch_api=args.via == "batch-api")
    figures = asyncio.run(job).as_dict()
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(figures, indent=2) + "\n")
    lines = [
        f"estimate: {figures['requests']} requests ({figures['invalid']} invalid), nothing sent"
        + (" (at the Batch API's price)" if args.via == "batch-api" else ""),
        f"  prompt tokens {figures['prompt_tokens']}, output tokens at most {figures['output_tokens_bound']}"
        + (f" ({figures['no_output_bound']} requests set no max_tokens)" if figures["no_output_bound"] else ""),
        f"  cost at most {_money(figures['cost']) or 'unknown'}"
        + (f" ({figures['unpriced']} requests of models with no known price)" if figures["unpriced"] else ""),
        *(
            f"    {model}: {each['requests']} requests, {_money(each['cost']) or 'no known price'}"
            for model, each in figures["by_model"].items()
        ),
    ]
    print("\n".join(lines), file=sys.stderr)
    return 0


def _batch_api_job(args: argparse.Namespace, client: AsyncClient) -> JobState:
    """The provider of a ``--via batch-api`` job (that of its first request) and its
    state: refused before anything is made when the job cannot go that way."""
    if args.output in (None, "-"):
        raise UsageProblem("--via batch-api writes its state next to the output: give -o OUT.jsonl")
    for option, given in (
        ("--shard", args.shard),
        ("--retry-failed", args.retry_failed),
        ("--embed-chunk", args.embed_chunk),
    ):
        if given:
            raise UsageProblem(f"{option} applies to online sending, not to --via batch-api")
    lines = read_jsonl(_lines(args.input))
    first = next((item for item in lines if item.body is not None and not item.embeddings), None)
    if first is None:
        raise UsageProblem(f"{args.input}: no valid chat request to send")
    assert first.body is not None
    try:
        request = client.request(messages=first.body["messages"], model=first.body.get("model") or args.model)
    except (ValueError, TypeError, ConfigError) as exc:
        raise UsageProblem(f"line {first.line}: {exc}") from None
    spec = client.registry.providers.get(request.provider)
    if spec is None or spec.batch_api is None:
        able = sorted(name for name, each in client.registry.providers.items() if each.batch_api is not None)
        raise UsageProblem(f"provider {request.provider!r} has no Batch API; those that have one: {', '.join(able)}")
    path = state_path(args.output)
    if Path(path).exists() and not args.resume:
        raise UsageProblem(f"{path} holds a job already submitted: add --resume to continue it")
    budget = args.max_cost or client.settings.max_cost
    if budget is not None and not Path(path).exists():
        _hold_to_budget(args, client, budget)
    try:
        return JobState.load(path, request.provider)
    except (ConfigError, ValueError, KeyError, TypeError) as exc:
        raise UsageProblem(f"{path}: not a job's state ({exc})") from None


def _warn_of_numbered(items: Iterator[BatchItem], done: Collection[str], quiet: bool) -> Iterator[BatchItem]:
    """``items``, and once, on a resume, a warning when a line has no ``custom_id``: its id
    is its line number, so lines added or removed above it since would pair it with
    another line's record."""
    warned = quiet or not done
    for item in items:
        if not warned and item.line is not None and item.custom_id == f"line-{item.line}":
            warned = True
            print(
                f"llmadapters batch: warning: line {item.line} (and maybe others) has no custom_id, so it is matched "
                "to the output by its line number: resume only the same input, unchanged",
                file=sys.stderr,
            )
        yield item


def _hold_to_budget(args: argparse.Namespace, client: AsyncClient, budget: Cost) -> None:
    """A job given to a Batch API cannot be stopped midway: its budget (``--max-cost`` or
    the config's) is held to the job's estimate before it is sent, or it is refused."""
    job = asyncio.run(estimate_job(client, read_jsonl(_lines(args.input)), args.model, batch_api=True))
    figures = job.as_dict()
    bounded = not figures["unpriced"] and not figures["no_output_bound"] and set(figures["cost"]) <= {budget.currency}
    if bounded and figures["cost"].get(budget.currency, 0.0) <= budget.amount:
        return
    why = (
        f"at most {_money(figures['cost'])}"
        if bounded
        else f"not bounded ({figures['unpriced']} requests of unpriced models, "
        f"{figures['no_output_bound']} with no max_tokens)"
    )
    raise UsageProblem(
        f"a Batch API job cannot be stopped midway, and this one's cost is {why}, over the budget of {budget}: "
        "raise max_cost, or send it online"
    )


def _on_event(event: dict[str, Any], args: argparse.Namespace, progress: _Progress, shown: dict[str, str]) -> None:
    """Show a step of a ``--via batch-api`` job: the progress on each record written; a
    line on stderr for the others (a poll only when the batch's status changed)."""
    kind = event["event"]
    if kind == "written":
        progress.update()
        return
    if args.quiet or kind in ("submitting", "downloaded"):
        return
    if kind == "polled":
        if shown.get(event["batch_id"]) == event["status"]:
            return
        shown[event["batch_id"]] = event["status"]
    print(kind, *(f"{key}={value}" for key, value in event.items() if key != "event"), file=sys.stderr)


async def _drive_batch_api(client: AsyncClient, job: BatchAPIJob, summary: BatchSummary) -> None:
    async with client:
        try:
            await job.run()
        finally:
            summary.limits = client.limits()


def _run_batch_api(
    args: argparse.Namespace, client: AsyncClient, state: JobState, out: IO[str], done: set[str], progress: _Progress
) -> bool:
    """Run a ``--via batch-api`` job; True when interrupted (``--resume`` continues it)."""
    shown: dict[str, str] = {}
    job = BatchAPIJob(
        client,
        state.provider,
        lambda: read_jsonl(_lines(args.input)),
        out,
        done,
        state,
        progress.summary,
        model=args.model,
        finish_online=args.finish_online,
        poll_interval=args.poll_interval,
        on_event=lambda event: _on_event(event, args, progress, shown),
    )
    try:
        asyncio.run(_drive_batch_api(client, job, progress.summary))
    except KeyboardInterrupt:
        return True
    return False


def run(args: argparse.Namespace) -> int:
    total = _check_input(args)
    client = _client(args)
    if args.estimate:
        return _estimate(args, client)
    if args.output is None:
        raise UsageProblem("-o/--output is required to send (or add --estimate to price the job)")
    if args.summary_json and not Path(args.summary_json).parent.is_dir():
        raise UsageProblem(f"--summary-json {args.summary_json}: its directory does not exist")
    runner = _runner(client, args)
    if runner is not None and args.via == "batch-api":
        raise UsageProblem("--on and --via batch-api are two ways to answer the requests: choose one")
    state = _batch_api_job(args, client) if args.via == "batch-api" else None
    out, done = _open_output(args)
    summary = BatchSummary()
    shard: Shard | None = args.shard
    items = (
        item
        for item in _warn_of_numbered(read_jsonl(_lines(args.input)), done, args.quiet)
        if item.custom_id not in done and (shard is None or item.custom_id in shard)
    )
    progress = _Progress("none" if args.quiet else args.progress, None if total is None else total - len(done), summary)
    interrupted, reached = True, None
    unwritten: OSError | None = None
    try:
        if state is not None:
            interrupted = _run_batch_api(args, client, state, out, done, progress)
        elif runner is not None:
            interrupted = _run_elsewhere(runner, args, items, out, progress)
        else:
            interrupted, reached = asyncio.run(_drive(client, args, items, out, progress))
    except asyncio.CancelledError:
        pass
    except OSError as exc:  # the output could not be written (a full disk): the run stopped
        unwritten, interrupted = exc, False
    finally:
        progress.close()
        if out is not sys.stdout:
            try:
                out.close()
            except OSError as exc:  # (what was left to flush)
                unwritten = unwritten or exc
        figures = summary.as_dict()
        figures["skipped_as_done"] = len(done)
        if shard is not None:
            figures["shard"] = str(shard)
        if reached is not None:
            figures["budget_reached"] = reached
        if args.summary_json:
            Path(args.summary_json).write_text(json.dumps(figures, indent=2) + "\n")
        if not args.quiet:
            _print_summary(figures, interrupted)
    if unwritten is not None:
        # Each record is written whole or torn last, which --resume mends.
        print(
            f"llmadapters batch: cannot write {args.output}: {unwritten.strerror or unwritten}; the run stopped, "
            "the records written are kept: make room, then --resume",
            file=sys.stderr,
        )
        return 1
    if interrupted:
        return 130
    if reached is not None:
        return 3
    return 1 if summary.errors else 0
