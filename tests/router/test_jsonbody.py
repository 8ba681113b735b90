"""The single-parse JSON body: same values as json.loads, edits that copy untouched text."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.router.jsonbody import Edit, JsonBody, parse_object

pytestmark = pytest.mark.timeout(10)


def parse_object_indexed(raw: bytes | str) -> JsonBody:
    """Force the span-recording parser (normally only used for bodies over 16 KB)."""
    return parse_object(raw, index_above=0)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
objects = st.dictionaries(st.text(max_size=10), json_values, max_size=6)


@settings(max_examples=60, deadline=None)
@given(obj=objects, indent=st.sampled_from([None, 0, 2]), ascii_only=st.booleans())
def test_parse_matches_json_loads(
    obj: dict[str, Any], indent: int | None, ascii_only: bool
) -> None:
    text = json.dumps(obj, indent=indent, ensure_ascii=ascii_only)
    parsed = parse_object_indexed(text.encode())
    assert parsed.values == json.loads(text)
    assert json.loads(Edit().payload(parsed)) == obj


@settings(max_examples=60, deadline=None)
@given(obj=objects, drop=st.sets(st.text(max_size=10), max_size=3), new=objects)
def test_edit_payload_equals_the_dict_edit(
    obj: dict[str, Any], drop: set[str], new: dict[str, Any]
) -> None:
    edit = Edit(drop=frozenset(drop), set_=new)
    assert json.loads(edit.payload(parse_object_indexed(json.dumps(obj)))) == edit.apply(obj)


def test_untouched_values_are_copied_verbatim() -> None:
    text = '{ "prompt" : "caf\\u00e9 \\"q\\"" , "max_tokens":5,"n":1.50}'
    payload = Edit(set_={"max_tokens": 1}).payload(parse_object_indexed(text))
    assert payload == b'{"prompt":"caf\\u00e9 \\"q\\"","n":1.50,"max_tokens":1}'


def test_raw_values_are_inserted_as_given() -> None:
    payload = Edit(raw={"prompt": "[1,2,3]"}).payload(parse_object_indexed('{"prompt": "abc"}'))
    assert payload == b'{"prompt":[1,2,3]}'


def test_duplicate_keys_resolve_like_json_loads() -> None:
    text = '{"a": 1, "b": 2, "a": 3}'
    assert parse_object_indexed(text).values == json.loads(text)
    assert json.loads(Edit().payload(parse_object_indexed(text))) == {"a": 3, "b": 2}


@pytest.mark.parametrize(
    "bad",
    ["", "[]", '"x"', "{", '{"a"}', '{"a":1,}', '{"a":1} x', "{a:1}", '{"a":1 "b":2}', "\xff"],
)
def test_non_objects_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_object_indexed(bad.encode("latin-1"))


def test_empty_object_and_whitespace() -> None:
    assert parse_object_indexed(b" \n{ }\t").values == {}


def test_small_bodies_use_json_loads_and_still_edit_correctly() -> None:
    body = parse_object(b'{"prompt": "hi", "max_tokens": 3}')
    assert body.spans is None
    assert json.loads(Edit(set_={"max_tokens": 1}).payload(body)) == {
        "prompt": "hi",
        "max_tokens": 1,
    }
    assert parse_object(b'{"a": [1, 2]}').source("a") == "[1, 2]"
    with pytest.raises(ValueError):
        parse_object(b"[1]")


def test_large_bodies_are_indexed() -> None:
    big = json.dumps({"prompt": "x" * 20_000, "n": 1}).encode()
    assert parse_object(big).spans is not None
