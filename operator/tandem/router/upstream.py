"""HTTP calls from the router to engines, with failures sorted into three kinds.

All calls go through the router's single pooled `aiohttp.ClientSession` (a session per request is
the classic Python-proxy throughput bug: vllm#26122, gpustack#2178). Failures are classified once,
here, so the protocol code only deals with:

- `UpstreamClientError` (engine 4xx: the client's fault, passed through unchanged),
- `UpstreamServerError` (engine 5xx or an unusable body),
- `UpstreamUnreachable` (connection refused, reset or broken mid-answer; `connect` tells whether
  the engine was reached at all, which marks it unhealthy until the next probe).

A response whose body was not read to the end is closed, not returned to the pool: that closes
the TCP connection, which is how vLLM learns that a request was abandoned and aborts it.

Stale keep-alive connections: uvicorn (vLLM's server) closes an idle connection after 5 s; a
request sent on a pooled connection just as the engine closes it fails with a reset or
`ServerDisconnectedError` before a byte of the answer came back, and the engine never saw the
request. The router's pool keeps idle connections for `POOL_KEEPALIVE_SECONDS` (4 s, below
uvicorn's 5 s), and a POST that fails that way *on a reused connection* (seen through the
session's `reuse_tracer()`) is sent once more: the dead connection is gone from the pool, so
the retry takes another pooled connection or opens a fresh one. A failure on a fresh
connection, or once any response byte arrived, is never retried (the engine may have started
the request).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any, Final

import aiohttp

from tandem.router.errors import UpstreamClientError
from tandem.router.jsonbody import JsonBody, parse_object

log = logging.getLogger(__name__)


class UpstreamServerError(Exception):
    """The engine answered 5xx, or 2xx with a body that is not what the protocol expects."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"engine answered {status}: {detail}")
        self.status = status
        self.detail = detail


class UpstreamUnreachable(Exception):
    """The engine could not be reached or dropped the connection."""

    def __init__(self, url: str, detail: str, *, connect: bool) -> None:
        super().__init__(f"{url}: {detail}")
        self.url = url
        self.detail = detail
        self.connect = connect


#: Idle pooled connections are dropped after this long (uvicorn closes them after 5 s).
POOL_KEEPALIVE_SECONDS: Final = 4.0
_RESET_ERRNOS: Final = frozenset({errno.ECONNRESET, errno.EPIPE})


async def _on_reuse(_session: aiohttp.ClientSession, trace: SimpleNamespace, _: Any) -> None:
    request_ctx = trace.trace_request_ctx
    if isinstance(request_ctx, dict):
        request_ctx["reused"] = True


def reuse_tracer() -> aiohttp.TraceConfig:
    """A trace config that tells `open_post` whether a request went out on a pooled
    connection (give it to the router's ClientSession)."""
    config = aiohttp.TraceConfig()
    config.on_connection_reuseconn.append(_on_reuse)
    return config


def _stale_connection(exc: BaseException) -> bool:
    """The connection died before an answer began: reset, broken pipe or disconnected."""
    if isinstance(exc, aiohttp.ServerDisconnectedError | ConnectionResetError):
        return True
    return isinstance(exc, aiohttp.ClientOSError) and exc.errno in _RESET_ERRNOS


async def _send(
    session: aiohttp.ClientSession, url: str, payload: bytes, headers: Mapping[str, str]
) -> aiohttp.ClientResponse:
    """POST, retrying once when a reused keep-alive connection turned out to be dead."""
    for attempt in (1, 2):
        probe: dict[str, bool] = {"reused": False}
        try:
            return await session.post(
                url, data=payload, headers=dict(headers), trace_request_ctx=probe
            )
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamUnreachable(url, str(exc), connect=True) from exc
        except (aiohttp.ClientError, OSError) as exc:
            if attempt == 1 and probe["reused"] and _stale_connection(exc):
                log.debug("Retrying on another connection", extra={"url": url, "error": repr(exc)})
                continue
            raise UpstreamUnreachable(url, repr(exc), connect=False) from exc
    raise AssertionError("unreachable")


def engine_headers(request_id: str, incoming: Mapping[str, str]) -> dict[str, str]:
    """Headers for an engine call: JSON, the shared request id, and the client's credentials."""
    headers = {"Content-Type": "application/json", "X-Request-Id": request_id}
    auth = incoming.get("Authorization")
    if auth:
        headers["Authorization"] = auth
    return headers


def _snippet(body: bytes, limit: int = 300) -> str:
    return body[:limit].decode("utf-8", "replace")


async def _check_status(resp: aiohttp.ClientResponse) -> None:
    if resp.status < 400:
        return
    body = await resp.read()
    if resp.status < 500:
        raise UpstreamClientError(resp.status, body, resp.content_type or "application/json")
    raise UpstreamServerError(resp.status, _snippet(body))


@asynccontextmanager
async def open_post(
    session: aiohttp.ClientSession, url: str, payload: bytes, headers: Mapping[str, str]
) -> AsyncIterator[aiohttp.ClientResponse]:
    """POST and yield the (2xx) response for the caller to read, streaming or not."""
    resp = await _send(session, url, payload, headers)
    completed = False
    try:
        try:
            await _check_status(resp)
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnreachable(url, repr(exc), connect=False) from exc
        # Errors raised by the caller's block are the caller's to classify: a failed write to
        # the router's own client must not look like an engine failure.
        yield resp
        completed = resp.content.at_eof()
    finally:
        if completed:
            resp.release()
        else:
            resp.close()


async def post_json(
    session: aiohttp.ClientSession, url: str, payload: bytes, headers: Mapping[str, str]
) -> JsonBody:
    """POST and return the JSON object of a 2xx answer (with its fields' source text)."""
    async with open_post(session, url, payload, headers) as resp:
        try:
            body = await resp.read()
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnreachable(url, repr(exc), connect=False) from exc
    try:
        return parse_object(body)
    except ValueError as exc:
        raise UpstreamServerError(resp.status, f"expected a JSON object: {_snippet(body)}") from exc


async def get_status(session: aiohttp.ClientSession, url: str, timeout: float) -> int:
    """GET and return the status code (the body is discarded); raises on connection errors."""
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
        await resp.read()
        return resp.status


async def get_text(session: aiohttp.ClientSession, url: str, timeout: float) -> str | None:
    """GET and return the body of a 200 answer, else None."""
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
        if resp.status != 200:
            return None
        return await resp.text()
