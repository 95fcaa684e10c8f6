"""The public names of ``llmadapters``: one table, loaded on first use."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import llmadapters as la
from llmadapters import errors


def test_all_and_the_type_checkers_imports_come_from_one_table() -> None:
    tree = ast.parse(Path(la.__file__).read_text())
    checked = next(node for node in tree.body if isinstance(node, ast.If))
    imported = {
        alias.asname: node.module
        for node in ast.walk(checked)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    table = la._MODULE_OF
    assert imported == table
    assert la.__all__ == sorted(table)
    for name, module in table.items():  # each loads from the module the table names
        assert getattr(la, name) is getattr(importlib.import_module(f"llmadapters.{module}"), name), name


def test_the_old_timeout_error_name_still_works_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match=r"llmadapters.TimeoutError is now llmadapters.APITimeoutError"):
        old = la.TimeoutError  # type: ignore[attr-defined]
    assert old is la.APITimeoutError
    assert old is not TimeoutError  # the builtin is no longer hidden
    with pytest.warns(DeprecationWarning, match="APITimeoutError"):
        assert errors.TimeoutError is la.APITimeoutError  # type: ignore[attr-defined]
    with pytest.warns(DeprecationWarning, match="APITimeoutError"):
        from llmadapters import TimeoutError as imported  # type: ignore[attr-defined]
    assert imported is la.APITimeoutError
    assert "TimeoutError" not in la.__all__
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        _ = la.NoSuchName  # type: ignore[attr-defined]
