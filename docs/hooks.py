"""The reference parts of the docs, generated from the code and committed, so that a
reader of the repository sees them too; the site build (this file is its MkDocs hook)
refuses a part that is not current. A page holds a part between a line
``<!-- generated: NAME -->`` and a line ``<!-- end: NAME -->``.

Regenerate them with ``python docs/hooks.py``; ``tests/test_docs.py`` checks they are
current.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

_MARK = re.compile(r"(<!-- generated: ([a-z-]+) -->\n).*?(<!-- end: \2 -->)", re.DOTALL)
_DOCS = Path(__file__).resolve().parent


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

    def wrapped(prog: str) -> argparse.HelpFormatter:
        return argparse.HelpFormatter(prog, width=100)  # the same on every terminal

    parser = _parser()
    parser.formatter_class = wrapped
    parts = ["```text\n" + parser.format_help().strip() + "\n```\n"]
    for action in parser._actions:  # argparse keeps subcommands here; no public accessor
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                sub.formatter_class = wrapped
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


def _plugin() -> str:
    """Every name of ``llmadapters.plugin``, in the groups of its ``__all__``."""
    import ast
    import inspect

    import llmadapters.plugin as plugin

    source = inspect.getsource(plugin)
    tree = ast.parse(source)
    module_of = {
        alias.name: f"llmadapters{'.' if node.module else ''}{node.module or ''}"
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    table = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "__all__"
    )
    assert isinstance(table, ast.List)
    lines = source.splitlines()
    headings = {n: lines[n - 1].strip()[2:].rstrip(".") for n in range(table.lineno, table.end_lineno or 0)}
    headings = {n: text for n, text in headings.items() if lines[n - 1].strip().startswith("# ")}
    parts = []
    for element in table.elts:
        assert isinstance(element, ast.Constant)
        for number in sorted(n for n in headings if n < element.lineno):
            parts.append(f"## {headings.pop(number)}\n")
        name = element.value
        parts.append(_entry(name, getattr(plugin, name), module_of[name]))
    return "\n".join(parts)


def _entry(name: str, value: object, module: str) -> str:
    import inspect

    if inspect.isclass(value) or inspect.isfunction(value):
        kind = "class " if inspect.isclass(value) else ""
        signature = "" if getattr(value, "_is_protocol", False) else _signature(value)
        text = f"### `{kind}{name}{signature}`\n\n{_prose(_docstring(value))}\n"
        if getattr(value, "_is_protocol", False):
            methods = [
                f"- `{m}{_plain(str(inspect.signature(getattr(value, m))))}`" for m in ("send", "stream", "aclose")
            ]
            text += "\n" + "\n".join(methods) + "\n"
        return text
    comment, definition = _definition(name, module)
    text = f"### `{name}`\n\n" + (f"{comment}\n\n" if comment else "") + f"```python\n{definition}\n```\n"
    described = _DESCRIBED.get(type(value).__name__)
    return text + ("\n" + described(value) if described else "")


def _signature(value: Any) -> str:
    import inspect

    try:
        return _plain(str(inspect.signature(value)))
    except ValueError:  # an exception class of Python's own __init__
        return ""


def _plain(text: str) -> str:
    """A signature without quotes or memory addresses, the same on every run."""
    return re.sub(r"<function (\w+) at 0x[0-9a-f]+>", r"\1", text).replace("'", "")


def _prose(docstring: str) -> str:
    """A docstring as Markdown: one with indented lines (an "Attributes:" list) as text."""
    return f"```text\n{docstring}\n```" if "\n    " in docstring else docstring


def _definition(name: str, module: str) -> tuple[str, str]:
    """The comment above ``name``'s assignment in ``module``, and its first line."""
    import importlib
    import inspect

    lines = inspect.getsource(importlib.import_module(module)).splitlines()
    number = next(i for i, line in enumerate(lines) if re.match(rf"{name}(: [^=]+)? = ", line))
    comment: list[str] = []
    while number - len(comment) > 0 and lines[number - len(comment) - 1].startswith("# "):
        comment.insert(0, lines[number - len(comment) - 1][2:])
    first = lines[number]
    return " ".join(comment), first if not first.endswith("(") else first + " ...)"


def _rows(table: Any) -> str:
    rows = "\n".join(
        f"| `{rule.native}` | `{rule.error.__name__}` | {rule.phase or ''} | {'yes' if rule.lost else ''} |"
        for rule in table.rules
    )
    return f"| native | ours | timeout phase | connection lost |\n|---|---|---|---|\n{rows}\n"


def _mapping(value: Any) -> str:
    rows = "\n".join(f"| `{key}` | {text} |" for key, text in value.items())
    return f"| name | what it stands for |\n|---|---|\n{rows}\n"


_DESCRIBED: dict[str, Any] = {"ErrorTable": _rows, "mappingproxy": _mapping, "dict": _mapping}


_PARTS = {
    "plugin": _plugin,
    "configuration": _configuration,
    "cli": _cli,
    "errors": _errors,
    "provider-spec": _provider_spec,
    "hooks": _hooks,
    "fake-behaviours": _fake_behaviours,
}


_BROKEN_INCLUDE = re.compile(r"^--8\s*<\s*--(?!\s+\")", re.MULTILINE)


def generated(markdown: str) -> str:
    """``markdown`` with each generated part made anew from the code."""
    return _MARK.sub(
        lambda match: f"{match.group(1)}\n{_PARTS[match.group(2)]().strip()}\n\n{match.group(3)}", markdown
    )


def pages() -> list[Path]:
    """The pages that hold a generated part."""
    return sorted(path for path in _DOCS.rglob("*.md") if _MARK.search(path.read_text()))


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    source = kwargs["page"].file.src_path
    # A formatter once turned `--8<-- "file"` into `--8 < --"file"`, which renders as text
    # instead of failing: refuse anything but the exact include syntax.
    broken = _BROKEN_INCLUDE.search(markdown) or re.search(r"^--8 <", markdown, re.MULTILINE)
    if broken:
        raise ValueError(f"{source}: malformed snippet include: {broken.group(0)!r}")
    if generated(markdown) != markdown:
        raise ValueError(f"{source}: a generated part is not current: run python docs/hooks.py")
    return markdown


if __name__ == "__main__":
    for page in pages():
        page.write_text(generated(page.read_text()))
        print(f"generated {page.relative_to(_DOCS.parent)}", file=sys.stderr)
