"""The llmadapters command line: batch jobs, one chat, the fake server, and what is installed.

llmadapters batch IN.jsonl -o OUT.jsonl
llmadapters chat "Say hi" [--model fake/echo] [--no-stream] [--transport httpx]
llmadapters fake-server [--port 8000] [--ttft-ms 300] [--tps 50]
llmadapters models PROVIDER [--json]

Exit status: 0 on success, 1 when the call failed, 2 for a usage problem (a bad argument
or config), 130 when interrupted; ``batch`` says more in its help.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import warnings
from typing import TYPE_CHECKING, Any

from .errors import PluginWarning

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .types import Usage

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmadapters", description=__doc__.split("\n\n")[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from .batch_cli import add_parser

    add_parser(commands)
    chat = commands.add_parser("chat", help="send one prompt and print the reply (streamed by default)")
    chat.add_argument("prompt", nargs="?", default="-", help="the user message; stdin when omitted or '-'")
    chat.add_argument("-m", "--model", default=None, help="provider/model (default: defaults.model, else fake/echo)")
    chat.add_argument("--system", default=None, help="a system message")
    chat.add_argument("--transport", default=None, help="httpx, openai, or a plugin's")
    chat.add_argument(
        "--config", default=None, help="a TOML config file (default: $LLMADAPTERS_CONFIG, ./llmadapters.toml)"
    )
    chat.add_argument("--no-stream", dest="stream", action="store_false", help="wait for the whole reply")
    chat.add_argument("--usage", action="store_true", help="print token usage to stderr at the end")
    chat.add_argument(
        "--no-reasoning",
        dest="reasoning",
        action="store_false",
        help="hide the model's reasoning (reasoning_content), shown on stderr by default, dimmed on a terminal",
    )

    fake = commands.add_parser("fake-server", help="run the fake OpenAI-compatible server until interrupted")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    fake.add_argument("--ttft-ms", type=float, default=0.0, help="time to first token, in milliseconds")
    fake.add_argument("--tps", type=float, default=None, help="tokens per second (default: instant)")
    models = commands.add_parser("models", help="list the models a provider serves (its GET /models)")
    models.add_argument("provider", help="a provider's name, e.g. openai, deepseek, fake")
    models.add_argument("--json", action="store_true", help="the provider's JSON of each model, one a line")
    models.add_argument("--config", default=None, help="a TOML config file")
    for name, what in LISTINGS.items():
        listing = commands.add_parser(name, help=f"list {what}")
        listing.add_argument("--config", default=None, help="a TOML config file (for its plugin allow-list)")
    return parser


LISTINGS = {
    "plugins": "the loaded plugins, with their distribution, version and what they provide",
    "providers": "the providers, with their base URL, key variable and distribution",
    "transports": "the transports and the distribution of each",
    "middleware": "the middleware and the distribution of each",
}


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _listing(args: argparse.Namespace) -> int:
    from .config import load_settings
    from .plugins import Registry

    registry = Registry.load(allow=load_settings(args.config).plugins)
    infos = {info.name: info for info in registry.plugins}

    def origin(key: str) -> str:
        info = infos[registry.source[key]]
        return f"{info.distribution} {info.version}" if info.distribution else info.name

    rows: list[tuple[str, ...]]
    if args.command == "plugins":
        rows = [("PLUGIN", "DISTRIBUTION", "VERSION", "PROVIDES")]
        for info in registry.plugins:
            provides = ", ".join(info.provides)
            if info.error:
                provides = f"{provides}; FAILED: {info.error}" if provides else f"FAILED: {info.error}"
            rows.append((info.name, info.distribution or "-", info.version or "-", provides or "-"))
    elif args.command == "providers":
        rows = [("PROVIDER", "BASE URL", "KEY VARIABLE", "FROM")]
        for name, spec in sorted(registry.providers.items()):
            url = spec.base_url or ("(started on demand)" if spec.launch else "(set base_url)")
            rows.append((name, url, spec.api_key_env or "-", origin(f"provider:{name}")))
    elif args.command == "transports":
        from .transports.network import FEATURES

        rows = [("TRANSPORT", "FROM", "CANNOT HONOUR")]
        for name in sorted(registry.transports):
            missing = [f for f in FEATURES if f not in registry.transport_features.get(name, ())]
            rows.append((name, origin(f"transport:{name}"), ", ".join(missing) or "-"))
    else:
        rows = [("MIDDLEWARE", "FROM")]
        rows += [(name, origin(f"middleware:{name}")) for name in sorted(registry.middleware)]
    print(_table(rows))
    return 0


async def _chat(args: argparse.Namespace) -> int:
    from .client import AsyncClient

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    messages = [{"role": "system", "content": args.system}] if args.system else []
    messages.append({"role": "user", "content": prompt})
    reasoning = _Reasoning(shown=args.reasoning)
    async with AsyncClient(args.config, transport=args.transport) as client:
        model = args.model or client.settings.model or "fake/echo"
        usage: Usage | None
        if args.stream:
            stream = await client.chat.completions.create(
                model=model, messages=messages, stream=True, stream_options={"include_usage": True}
            )
            usage = None
            async with stream:
                async for chunk in stream:
                    for choice in chunk.choices:
                        reasoning.write(choice.delta.reasoning_content)
                        if choice.delta.content:
                            reasoning.end()
                            sys.stdout.write(choice.delta.content)
                    sys.stdout.flush()
                    usage = chunk.usage or usage
        else:
            reply = await client.chat.completions.create(model=model, messages=messages)
            if reply.choices:
                message = reply.choices[0].message
                reasoning.write(message.reasoning_content)
                reasoning.end()
                sys.stdout.write(message.content or "")
            usage = reply.usage
        reasoning.end()
        sys.stdout.write("\n")
        sys.stdout.flush()  # before the usage line on stderr
    if args.usage and usage is not None:
        print(f"tokens: {usage.prompt_tokens} in, {usage.completion_tokens} out", file=sys.stderr)
    return 0


class _Reasoning:
    """A reply's reasoning_content, on stderr (so that stdout holds the answer alone),
    dimmed on a terminal, and ended by a line break before the answer."""

    def __init__(self, *, shown: bool) -> None:
        self.shown = shown
        self.dim = sys.stderr.isatty()
        self.started = False

    def write(self, text: str | None) -> None:
        if not text or not self.shown:
            return
        if not self.started:
            self.started = True
            sys.stderr.write("\x1b[2m" if self.dim else "")
        sys.stderr.write(text)
        sys.stderr.flush()

    def end(self) -> None:
        if self.started:
            sys.stderr.write("\x1b[0m\n" if self.dim else "\n")
            sys.stderr.flush()
            self.started = False


async def _models(args: argparse.Namespace) -> int:
    import json

    from .client import AsyncClient

    async with AsyncClient(args.config) as client:
        models = await client.models.list(args.provider)
    for model in models:
        print(json.dumps(model.to_dict(), ensure_ascii=False) if args.json else model.id)
    return 0


async def _fake_server(args: argparse.Namespace) -> int:
    from .testing.fake_server import FakeServer, FakeServerOptions

    options = FakeServerOptions(ttft=args.ttft_ms / 1000, tokens_per_s=args.tps)
    server = await FakeServer(options, host=args.host, port=args.port).start()
    print(f"fake server listening on {server.base_url}", flush=True)
    try:
        await server.serve_forever()
    finally:
        await server.aclose()
    return 0


class _Notices(logging.Filter):
    """The library's warnings, not the logging middleware's per-call records (a batch
    reports each failed call in its output)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not hasattr(record, "llmadapters")


def _show_warnings() -> Callable[[], None]:
    """Print the library's and plugins' warnings (e.g. a shared rate limiter that
    cannot be reached, a plugin that failed to load) on stderr, one line each: the
    package's NullHandler would swallow the logged ones, and Python's format adds the
    source line that issued a warning, which says nothing to a user of the command.
    Returns what undoes it, for `main` to call on return: run in-process again, it
    would otherwise print each warning once more per earlier run."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.addFilter(_Notices())
    handler.setFormatter(logging.Formatter("llmadapters: %(levelname)s: %(message)s"))
    logger = logging.getLogger("llmadapters")
    logger.addHandler(handler)
    python_format = warnings.formatwarning

    def one_line(message: Warning | str, category: type[Warning], *where: Any, **more: Any) -> str:
        if issubclass(category, PluginWarning):
            return f"llmadapters: warning: {message}\n"
        return python_format(message, category, *where, **more)

    def undo() -> None:
        logger.removeHandler(handler)
        warnings.formatwarning = python_format

    warnings.formatwarning = one_line
    return undo


def _use_uvloop() -> Callable[[], None]:
    """Run the command's event loops on uvloop when it is installed (a dependency on
    Linux and macOS): it takes less CPU per call than asyncio's own loop. Returns
    what puts the previous event loop policy back, for `main` to call on return."""
    import importlib.util

    previous = asyncio.get_event_loop_policy()
    if importlib.util.find_spec("uvloop") is None:
        return lambda: None
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return lambda: asyncio.set_event_loop_policy(previous)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .errors import ConfigError, LLMAdapterError

    hide_warnings = _show_warnings()
    restore_loop = _use_uvloop()
    try:
        if args.command == "batch":
            from .batch_cli import UsageProblem, run

            try:
                return run(args)
            except UsageProblem as exc:
                print(f"llmadapters batch: {exc}", file=sys.stderr)
                return 2
        if args.command in LISTINGS:
            return _listing(args)
        commands = {"chat": _chat, "models": _models, "fake-server": _fake_server}
        return asyncio.run(commands[args.command](args))
    except ConfigError as exc:  # a usage problem, as batch's are
        print(f"llmadapters: error: {exc}", file=sys.stderr)
        return 2
    except LLMAdapterError as exc:
        print(f"llmadapters: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`llmadapters models fake | head -1`): stop quietly, and
        # let no flush at exit raise again (the recipe of Python's signal docs).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        restore_loop()
        hide_warnings()


if __name__ == "__main__":
    sys.exit(main())
