"""The layers of the package, as docs/architecture.md draws them: what each module may
import of ours when it runs (imports under ``if TYPE_CHECKING:`` are for annotations and
are not counted). A lower layer never imports an upper one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "llmadapters"

# Module (dotted, under llmadapters) -> the modules of ours it may import at run time.
# A key ending in "." covers a package's modules.
VALUES = ("errors", "types", "sse", "policies")
ALLOWED: dict[str, tuple[str, ...]] = {
    "errors": (),
    "types": (),
    "sse": (),
    "policies": (),
    "pricing": ("types",),
    "accumulation": ("types",),
    "streaming": ("accumulation", "errors", "types"),
    "transports.": (*VALUES, "transports.", "hookspecs"),  # hookspecs: the hookimpl marker of builtin.py
    "config": (*VALUES, "pricing", "transports.base", "transports.network"),
    "middleware.": (*VALUES, "accumulation", "streaming", "middleware.", "hookspecs", "providers.", "transports."),
}


def _runtime_imports(path: Path) -> set[str]:
    """The modules of ours that ``path`` imports outside ``if TYPE_CHECKING:``, dotted."""
    module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if "." in module else ""
    tree = ast.parse(path.read_text())
    skipped = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for child in ast.walk(node)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module and node.module.startswith("llmadapters"):
                target = node.module.removeprefix("llmadapters").lstrip(".")
            else:
                continue
            names = [alias.name for alias in node.names]
            found.update(f"{target}.{n}" if not node.module else target for n in names)
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("llmadapters.") for a in node.names if a.name.startswith("llmadapters."))
    return {name for name in found if name}


def _rule(module: str) -> tuple[str, ...] | None:
    if module in ALLOWED:
        return ALLOWED[module]
    for key, allowed in ALLOWED.items():
        if key.endswith(".") and module.startswith(key):
            return allowed
    return None


MODULES = sorted(
    ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    for path in PACKAGE.rglob("*.py")
    if path.name != "__init__.py" and _rule(".".join(path.relative_to(PACKAGE).with_suffix("").parts)) is not None
)


@pytest.mark.parametrize("module", MODULES)
def test_a_lower_layer_imports_no_upper_one(module: str) -> None:
    allowed = _rule(module)
    assert allowed is not None
    path = PACKAGE.joinpath(*module.split(".")).with_suffix(".py")
    imported = _runtime_imports(path)
    wrong = sorted(
        name
        for name in imported
        if not any(name == a or (a.endswith(".") and name.startswith(a)) or name.startswith(a + ".") for a in allowed)
    )
    assert wrong == [], f"{module} imports {wrong}; its layer allows {allowed}"


def test_the_core_imports_no_plugin_package() -> None:
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            assert not [n for n in names if n.startswith("llmadapters_")], path


def test_no_module_of_the_core_imports_the_plugin_namespace() -> None:
    """``llmadapters.plugin`` re-exports from every layer, the batch engine included: a
    core module that imported it would import the layers above it."""
    importers = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "plugin.py"
        and any(name == "plugin" or name.startswith("plugin.") for name in _runtime_imports(path))
    )
    assert importers == []
