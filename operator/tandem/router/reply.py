"""The answer to one client: a whole response, or an SSE stream once one has started.

Protocol code writes through this object so the error handler can ask the one question that
decides how a failure is reported: has the status line already gone out? Before that, errors are
JSON with a proper status; after it, they become a final SSE event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from tandem.router import sse

JSON = "application/json"


class Reply:
    """Builds the client's response; `response` is what the aiohttp handler returns."""

    def __init__(self, request: web.Request, on_first_byte: Callable[[], None]) -> None:
        self._request = request
        self._on_first_byte = on_first_byte
        self._stream: web.StreamResponse | None = None
        self._first = True
        self.response: web.StreamResponse | None = None

    @property
    def streaming(self) -> bool:
        """True once the SSE status line and headers have been sent."""
        return self._stream is not None

    async def start_stream(self, content_type: str = "text/event-stream") -> None:
        """Send status 200 and headers for a streamed answer."""
        resp = web.StreamResponse(
            status=200, headers={"Content-Type": content_type, "Cache-Control": "no-cache"}
        )
        await resp.prepare(self._request)
        self._stream = self.response = resp

    async def write(self, data: bytes) -> None:
        """Send part of the streamed answer."""
        assert self._stream is not None, "start_stream() first"
        if self._first:
            self._first = False
            self._on_first_byte()
        await self._stream.write(data)

    async def end_stream(self) -> None:
        """Finish the streamed answer."""
        assert self._stream is not None
        await self._stream.write_eof()

    def body(self, status: int, body: bytes, content_type: str = JSON) -> None:
        """Answer in one piece."""
        self.response = web.Response(
            status=status, body=body, headers={"Content-Type": content_type}
        )

    def json(self, status: int, obj: Any) -> None:
        """Answer with a JSON object."""
        self.body(status, sse.json_bytes(obj))
