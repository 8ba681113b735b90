"""Failures the router reports to clients, and how each one is written.

Errors use the OpenAI/vLLM JSON shape `{"error": {"message", "type", "code"}}` so SDKs surface
them; once an SSE stream has started the status line is gone, so the same object is sent as a
final `data:` event followed by `data: [DONE]`, which is what vLLM does for mid-stream errors.
Engine 4xx answers are not wrapped: `UpstreamClientError` carries the engine's own body through.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    """`outcome` label of `tandem_router_requests_total`."""

    SUCCESS = "success"
    CLIENT_ERROR = "client_error"
    PREFILL_FAILED = "prefill_failed"
    DECODE_FAILED = "decode_failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    INTERNAL_ERROR = "internal_error"


class RouterError(Exception):
    """An error answered with a router-made JSON body."""

    status = 500
    type = "internal_error"
    outcome = Outcome.INTERNAL_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def payload(self) -> dict[str, Any]:
        """The JSON error object."""
        return {"error": {"message": self.message, "type": self.type, "code": self.status}}

    def body(self) -> bytes:
        """The JSON error object, serialised."""
        return json.dumps(self.payload()).encode()

    def sse_event(self) -> bytes:
        """The error as a final SSE event plus the `[DONE]` terminator."""
        return b"data: " + self.body() + b"\n\ndata: [DONE]\n\n"


class InvalidRequest(RouterError):
    """The client's body is not a JSON object the router can route."""

    status = 400
    type = "invalid_request_error"
    outcome = Outcome.CLIENT_ERROR


class PrefillUnavailable(RouterError):
    """The prefill leg failed and `--on-prefill-failure fail` is set."""

    status = 503
    type = "prefill_unavailable"
    outcome = Outcome.PREFILL_FAILED


class DecodeUnavailable(RouterError):
    """No decode engine could be reached (none healthy, or the connection failed)."""

    status = 503
    type = "decode_unavailable"
    outcome = Outcome.DECODE_FAILED


class DecodeFailed(RouterError):
    """A decode engine answered with a server error or broke off its answer."""

    status = 502
    type = "decode_failed"
    outcome = Outcome.DECODE_FAILED


class RequestTimeout(RouterError):
    """`--request-timeout` elapsed before the answer was complete."""

    status = 504
    type = "timeout"
    outcome = Outcome.TIMEOUT


class InternalError(RouterError):
    """A bug in the router; logged with its traceback."""


class PrefillFailure(Exception):
    """The prefill leg did not produce a usable hand-off; `reason` labels the fallback metric.

    Internal only: the dispatcher turns it into a decode-only fallback or `PrefillUnavailable`.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"prefill failed ({reason}): {detail}")
        self.reason = reason
        self.detail = detail


class UpstreamClientError(Exception):
    """An engine answered 4xx: the client sent something wrong, so pass the answer through."""

    def __init__(self, status: int, body: bytes, content_type: str) -> None:
        super().__init__(f"engine answered {status}")
        self.status = status
        self.body = body
        self.content_type = content_type
