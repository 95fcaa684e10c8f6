"""The reference parts of the docs are committed, so that the repository shows them,
and are current: made anew from the code, they are unchanged."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_HOOKS = Path(__file__).resolve().parent.parent / "docs" / "hooks.py"
_SPEC = importlib.util.spec_from_file_location("docs_hooks", _HOOKS)
assert _SPEC is not None
assert _SPEC.loader is not None
hooks = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(hooks)


def test_the_pages_with_generated_parts_include_the_plugin_reference() -> None:
    names = {page.name for page in hooks.pages()}
    assert {"plugin.md", "errors.md", "configuration.md", "cli.md", "hooks.md", "testing.md"} <= names


@pytest.mark.parametrize("page", hooks.pages(), ids=lambda page: page.name)
def test_a_generated_part_is_current(page: Path) -> None:
    text = page.read_text()
    assert hooks.generated(text) == text, f"{page.name} is stale: run python docs/hooks.py"


def test_a_generated_part_is_filled_in_the_repository() -> None:
    plugin = (_HOOKS.parent / "reference" / "plugin.md").read_text()
    assert "### `stream_reply(status: int, headers: Mapping[str, str], chunks:" in plugin
    assert "| `httpx2.ReadTimeout` | `APITimeoutError` | read |  |" in plugin


def test_a_stale_part_is_refused_by_the_site_build() -> None:
    page = type("Page", (), {"file": type("File", (), {"src_path": "reference/plugin.md"})()})()
    stale = (_HOOKS.parent / "reference" / "plugin.md").read_text().replace("DEFAULT_MAX_CONNECTIONS = 1024", "X = 1")
    with pytest.raises(ValueError, match=r"reference/plugin.md: a generated part is not current"):
        hooks.on_page_markdown(stale, page=page)
