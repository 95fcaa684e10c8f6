"""The worked example of docs/guides/writing-a-transport.md, a transport on httpx 0.28,
passes the transport conformance suite, and its factory names the package it lacks."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

import llmadapters as la
from llmadapters.testing.conformance import TransportConformance

_PATH = Path(__file__).resolve().parent.parent / "examples" / "httpx_transport.py"
_SPEC = importlib.util.spec_from_file_location("httpx_transport_example", _PATH)
assert _SPEC is not None
assert _SPEC.loader is not None
example = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(example)


class TestHttpxExample(TransportConformance):
    transport_factory = staticmethod(example.httpx_transport)
    supports = example.FEATURES


def test_its_factory_names_the_package_it_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)  # as if not installed: find_spec gives None
    with pytest.raises(
        la.ConfigError, match=r"the httpx028 transport needs the httpx package: pip install 'httpx==0.28\.\*'"
    ):
        example.httpx_transport(None)
