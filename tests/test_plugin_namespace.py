"""``llmadapters.plugin`` is the one namespace of plugin authors: what it exports is
real and importable, and the shipped plugins' packages import nothing else of ours."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import llmadapters.plugin as plugin

_PLUGINS = Path(__file__).resolve().parent.parent / "plugins"
# Each shipped plugin's package code (its tests may use `llmadapters.testing` too).
_PACKAGES = sorted(_PLUGINS.glob("llmadapters-*/llmadapters_*/"))


def test_every_exported_name_exists_once() -> None:
    assert len(plugin.__all__) == len(set(plugin.__all__))
    missing = [name for name in plugin.__all__ if not hasattr(plugin, name)]
    assert not missing


def test_the_transport_kernel_and_error_tables_are_exported() -> None:
    for name in ("Transport", "Endpoint", "NetworkOptions", "stream_reply", "json_reply", "resend_if_closed",
                 "ErrorMap", "ErrorTable", "AIOHTTP_ERRORS", "DEFAULT_MAX_CONNECTIONS", "require"):  # fmt: skip
        assert name in plugin.__all__, name


def test_what_provider_middleware_and_batch_runner_authors_need_is_exported() -> None:
    for name in ("ProviderSpec", "BatchAPI", "EmbeddingsAPI", "ModelPrice", "Price", "PriceWindow",
                 "Middleware", "MiddlewareFactory", "Settings", "Limits", "KeyRing",
                 "RateLimitMiddleware", "estimate_tokens", "stated_rate",
                 "BatchRunner", "BatchJob", "BatchItem", "parse_item", "output_record"):  # fmt: skip
        assert name in plugin.__all__, name


def _ours(module: str) -> bool:
    return module == "llmadapters" or module.startswith("llmadapters.")


def _imported_of_ours(package: Path) -> dict[str, set[str]]:
    """The modules of llmadapters each file of ``package`` imports, type-checking-only
    imports included (they are names a plugin author reads as well)."""
    imported: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and _ours(node.module or ""):
                imported.setdefault(str(path.relative_to(package)), set()).add(node.module or "")
            elif isinstance(node, ast.Import):
                imported.setdefault(str(path.relative_to(package)), set()).update(
                    alias.name for alias in node.names if _ours(alias.name)
                )
    return imported


def test_every_shipped_plugin_is_checked() -> None:
    names = {package.name for package in _PACKAGES}
    assert {"llmadapters_aiohttp", "llmadapters_deepseek", "llmadapters_otel", "llmadapters_redis"} <= names
    assert len(names) == len(list(_PLUGINS.glob("llmadapters-*/pyproject.toml")))


@pytest.mark.parametrize("package", _PACKAGES, ids=lambda package: package.name)
def test_a_shipped_plugin_imports_only_llmadapters_and_its_plugin_namespace(package: Path) -> None:
    imported = _imported_of_ours(package)
    assert imported, f"{package.name} imports nothing of llmadapters: is this still a plugin?"
    wrong = {name: sorted(modules - {"llmadapters", "llmadapters.plugin"}) for name, modules in imported.items()}
    assert {name: modules for name, modules in wrong.items() if modules} == {}


def test_an_internal_import_would_be_caught(tmp_path: Path) -> None:
    (tmp_path / "__init__.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from llmadapters.plugin import ProviderSpec\n"
        "if TYPE_CHECKING:\n"
        "    from llmadapters.config import Settings\n"
    )
    assert _imported_of_ours(tmp_path) == {"__init__.py": {"llmadapters.plugin", "llmadapters.config"}}
