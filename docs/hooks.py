"""MkDocs hook: the reference pages are generated from the code at build time, so they
cannot drift from it. A page asks for a part with a line ``<!-- generated: NAME -->``."""

from __future__ import annotations

import re
from typing import Any

_MARK = re.compile(r"<!-- generated: ([a-z-]+) -->")


def _configuration() -> str:
    from llmadapters.config import SCHEMA

    parts = []
    for table, keys in SCHEMA.items():
        rows = "\n".join(f"| `{key}` | {text} |" for key, text in keys.items())
        parts.append(f"### `[{table}]`\n\n| key | meaning |\n|---|---|\n{rows}\n")
    return "\n".join(parts)


def _cli() -> str:
    import argparse

    from llmadapters.cli import _parser

    parser = _parser()
    parts = ["```text\n" + parser.format_help().strip() + "\n```\n"]
    for action in parser._actions:  # argparse keeps subcommands here; no public accessor
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                parts.append(f"## `llmadapters {name}`\n\n```text\n{sub.format_help().strip()}\n```\n")
    return "\n".join(parts)


def _errors() -> str:
    import llmadapters.errors as errors

    doc = errors.__doc__ or ""
    tree = doc.split("::", 1)[1].split("\n\n", 2)[1]
    lines = ["```text", *(line[4:] for line in tree.splitlines()), "```", ""]
    for name in sorted(errors.__all__):
        value = getattr(errors, name)
        if isinstance(value, type) and value.__doc__:
            lines.append(f"### `{name}`\n\n{' '.join(value.__doc__.split(chr(10) + chr(10))[0].split())}\n")
    return "\n".join(lines)


def _docstring(obj: object) -> str:
    import inspect

    return inspect.cleandoc(obj.__doc__ or "")


def _provider_spec() -> str:
    import inspect

    from llmadapters.providers import base

    parts = [f"```text\n{_docstring(base.ProviderSpec)}\n```\n", "Helpers for its fields:\n"]
    for name in ("bearer_auth", "openai_payload", "thinking_toggle_payload", "verdict_by_error_field"):
        function = getattr(base, name)
        signature = f"{name}{inspect.signature(function)}".replace("'", "")
        parts.append(f"### `{signature}`\n\n{' '.join(_docstring(function).split())}\n")
    return "\n".join(parts)


def _hooks() -> str:
    import inspect

    from llmadapters import hookspecs

    parts = []
    for name in ("register_providers", "register_transports", "register_middleware", "register_batch_runners"):
        function = getattr(hookspecs, name)
        signature = f"{name}{inspect.signature(function)}".replace("'", "")
        parts.append(f"### `{signature}`\n\n```text\n{_docstring(function)}\n```\n")
    return "\n".join(parts)


def _fake_behaviours() -> str:
    from llmadapters.testing import BEHAVIOURS

    rows = "\n".join(f"| `{name}` | {text} |" for name, text in BEHAVIOURS.items())
    return f"| behaviour | what the server does |\n|---|---|\n{rows}\n"


_PARTS = {
    "configuration": _configuration,
    "cli": _cli,
    "errors": _errors,
    "provider-spec": _provider_spec,
    "hooks": _hooks,
    "fake-behaviours": _fake_behaviours,
}


_BROKEN_INCLUDE = re.compile(r"^--8\s*<\s*--(?!\s+\")", re.MULTILINE)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    # A formatter once turned `--8<-- "file"` into `--8 < --"file"`, which renders as text
    # instead of failing: refuse anything but the exact include syntax.
    broken = _BROKEN_INCLUDE.search(markdown) or re.search(r"^--8 <", markdown, re.MULTILINE)
    if broken:
        raise ValueError(f"{kwargs['page'].file.src_path}: malformed snippet include: {broken.group(0)!r}")
    return _MARK.sub(lambda match: _PARTS[match.group(1)](), markdown)
