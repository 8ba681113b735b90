"""Parse a JSON request body once and rebuild variants of it without re-encoding the prompt.

Both NIXL legs are the client's body with a few small fields changed. Re-serialising the whole
body with `json.dumps` escapes the prompt again: for a 220 KB prompt that is the single most
expensive step of the router (milliseconds of CPU per request; performance.md §5: "never parse or
re-serialise large prompt bodies on the hot path more than once").

`parse_object` walks the top level of the object itself, using the standard library's own C
scanners for every value, so it costs what `json.loads` costs and also records where each
top-level value's text starts and ends. `Edit.payload` then copies the untouched values'
text verbatim and encodes only the fields that change. Duplicate keys resolve like `json.loads`
(the last one wins), so the router and the engine read the same request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from json.decoder import WHITESPACE, scanstring  # type: ignore[attr-defined]
from json.encoder import encode_basestring_ascii as _quote
from typing import Any

_DECODER = json.JSONDecoder()


#: Bodies smaller than this are parsed with plain `json.loads` (its C parser beats the
#: per-field walk below on small bodies; re-encoding a few hundred bytes costs nothing).
INDEX_ABOVE_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class JsonBody:
    """A parsed JSON object plus, for large bodies, the source text of each top-level value."""

    text: str
    values: dict[str, Any]
    spans: dict[str, tuple[int, int]] | None

    def source(self, key: str) -> str:
        """The JSON text of one top-level value: copied when indexed, else re-encoded."""
        if self.spans is not None:
            start, end = self.spans[key]
            return self.text[start:end]
        return json.dumps(self.values[key])


@dataclass(frozen=True, slots=True)
class Edit:
    """Changes to the top level of a request body: keys to drop and keys to set.

    `set_` values are encoded with `json.dumps`; `raw` values are JSON text encoded by the caller
    (e.g. a long token-id list encoded once and shared by two legs).
    """

    drop: frozenset[str] = frozenset()
    set_: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, str] = field(default_factory=dict)

    def payload(self, body: JsonBody) -> bytes:
        """The edited body as UTF-8 JSON, copying untouched values' text verbatim."""
        skip = self.drop | self.set_.keys() | self.raw.keys()
        raw = [_quote(k) + ":" + v for k, v in self.raw.items()]
        if body.spans is None:  # small body: one C-level dumps beats per-field work
            kept = {k: v for k, v in body.values.items() if k not in skip}
            kept.update(self.set_)
            text = json.dumps(kept)
            if raw:
                text = text[:-1] + ("," if kept else "") + ",".join(raw) + "}"
            return text.encode()
        spans, source = body.spans, body.text
        parts = [_quote(k) + ":" + source[a:b] for k, (a, b) in spans.items() if k not in skip]
        parts.extend(_quote(k) + ":" + json.dumps(v) for k, v in self.set_.items())
        parts.extend(raw)
        return ("{" + ",".join(parts) + "}").encode()

    def apply(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The same edit on an already parsed object (what the engine will see)."""
        out = {k: v for k, v in values.items() if k not in self.drop}
        out.update(self.set_)
        out.update({k: json.loads(v) for k, v in self.raw.items()})
        return out


def _skip(text: str, index: int) -> int:
    return int(WHITESPACE.match(text, index).end())


def parse_object(raw: bytes | str, *, index_above: int = INDEX_ABOVE_BYTES) -> JsonBody:
    """Parse a JSON object; ValueError (json.JSONDecodeError) if it is not one.

    Bodies of at least `index_above` bytes also get the source span of every top-level value.
    """
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    if len(raw) < index_above:
        loaded = json.loads(text)
        if not isinstance(loaded, dict):
            raise json.JSONDecodeError("expected a JSON object", text, 0)
        return JsonBody(text=text, values=loaded, spans=None)
    index = _skip(text, 0)
    if not text.startswith("{", index):
        raise json.JSONDecodeError("expected a JSON object", text, index)
    values: dict[str, Any] = {}
    spans: dict[str, tuple[int, int]] = {}
    index = _skip(text, index + 1)
    if text.startswith("}", index):
        return _finish(text, index + 1, values, spans)
    while True:
        if not text.startswith('"', index):
            raise json.JSONDecodeError("expected a property name", text, index)
        key, index = scanstring(text, index + 1)
        index = _skip(text, index)
        if not text.startswith(":", index):
            raise json.JSONDecodeError("expected ':'", text, index)
        start = _skip(text, index + 1)
        value, end = _DECODER.raw_decode(text, start)
        values[key], spans[key] = value, (start, end)  # last duplicate wins, like json.loads
        index = _skip(text, end)
        if text.startswith(",", index):
            index = _skip(text, index + 1)
            continue
        if text.startswith("}", index):
            return _finish(text, index + 1, values, spans)
        raise json.JSONDecodeError("expected ',' or '}'", text, index)


def _finish(
    text: str, index: int, values: dict[str, Any], spans: dict[str, tuple[int, int]]
) -> JsonBody:
    if _skip(text, index) != len(text):
        raise json.JSONDecodeError("extra data", text, index)
    return JsonBody(text=text, values=values, spans=spans)
