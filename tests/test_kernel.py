"""The transport kernel decodes a reply's JSON exactly as ``json.loads`` does, whichever
way the text comes (it calls the JSON scanner directly on the common path)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmadapters.errors import MalformedResponseError
from llmadapters.transports._kernel import decode_json_body

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@given(
    st.dictionaries(st.text(max_size=5), VALUES, max_size=4),
    st.sampled_from(["", " ", "\n\n", "\r\n "]),
    st.sampled_from(["", " ", "\n"]),
    st.booleans(),
)
def test_a_body_decodes_as_json_loads_decodes_it(value: dict[str, Any], before: str, after: str, ascii: bool) -> None:
    text = before + json.dumps(value, ensure_ascii=ascii) + after
    assert decode_json_body(text.encode()) == json.loads(text) == value
    assert decode_json_body(b"\xef\xbb\xbf" + text.encode()) == value  # json.loads takes a UTF-8 BOM in bytes
    assert decode_json_body(text.encode("utf-16")) == value


@pytest.mark.parametrize("body", [b'{"a": 1} x', b'{"a": ', b"", b"\xff{}", b"[1]"])
def test_a_body_that_is_not_one_json_object_raises(body: bytes) -> None:
    with pytest.raises(MalformedResponseError, match=r"not JSON|not a JSON object"):
        decode_json_body(body)
