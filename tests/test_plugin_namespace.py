"""``llmadapters.plugin`` is the one namespace of plugin authors: what it exports is
real and importable, and the shipped aiohttp plugin imports nothing else of ours."""

from __future__ import annotations

import ast
from pathlib import Path

import llmadapters.plugin as plugin

_AIOHTTP = Path(__file__).resolve().parent.parent / "plugins" / "llmadapters-aiohttp" / "llmadapters_aiohttp"


def test_every_exported_name_exists_once() -> None:
    assert len(plugin.__all__) == len(set(plugin.__all__))
    missing = [name for name in plugin.__all__ if not hasattr(plugin, name)]
    assert not missing


def test_the_transport_kernel_and_error_tables_are_exported() -> None:
    for name in ("Transport", "Endpoint", "NetworkOptions", "stream_reply", "json_reply", "resend_if_closed",
                 "ErrorMap", "ErrorTable", "AIOHTTP_ERRORS", "DEFAULT_MAX_CONNECTIONS", "require"):  # fmt: skip
        assert name in plugin.__all__, name


def _ours(module: str) -> bool:
    return module == "llmadapters" or module.startswith("llmadapters.")


def test_the_aiohttp_plugin_imports_only_the_plugin_namespace_of_llmadapters() -> None:
    imported: set[str] = set()
    for path in _AIOHTTP.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and _ours(node.module or ""):
                imported.add(node.module or "")
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names if _ours(alias.name))
    assert imported == {"llmadapters", "llmadapters.plugin"}
