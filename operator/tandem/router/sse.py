"""Server-sent events as the OpenAI streaming API uses them: `data: <json>\\n\\n` … `data: [DONE]`.

Only the LMCache path needs to look inside the stream (it splices in the first token and reshapes
completion chunks for chat clients); the NIXL path relays the decoder's bytes untouched.
A network read can end anywhere, including inside an event, so the parser buffers until the blank
line that ends each event.
"""

from __future__ import annotations

import json
from typing import Any, Final

DONE: Final = b"[DONE]"
DONE_EVENT: Final = b"data: [DONE]\n\n"


def json_bytes(obj: Any) -> bytes:
    """Compact JSON, as vLLM writes it."""
    return json.dumps(obj, separators=(",", ":")).encode()


def encode_event(obj: Any) -> bytes:
    """One `data:` event holding `obj` as compact JSON."""
    return b"data: " + json_bytes(obj) + b"\n\n"


class SseParser:
    """Incremental splitter: feed raw bytes, get back the `data` payload of each full event."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """Payloads of the events completed by `chunk` (multi-line data joined by newlines)."""
        self._buf += chunk.replace(b"\r\n", b"\n")
        payloads: list[bytes] = []
        while True:
            end = self._buf.find(b"\n\n")
            if end < 0:
                return payloads
            raw, self._buf = self._buf[:end], self._buf[end + 2 :]
            lines = [
                line[5:].removeprefix(b" ")
                for line in raw.split(b"\n")
                if line.startswith(b"data:")
            ]
            if lines:
                payloads.append(b"\n".join(lines))

    @property
    def pending(self) -> bytes:
        """Bytes of an unfinished event (non-empty at end of stream means it was cut off)."""
        return self._buf
