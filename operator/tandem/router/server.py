"""The router's HTTP surface (aiohttp): OpenAI endpoints, /health, /metrics, /v1/models.

Each completion request is parsed once, given a request id, bounded by `--request-timeout`, and
handed to the dispatcher; this module then turns whatever happened into exactly one answer and
one `tandem_router_requests_total{route,outcome}` sample:

- engine 4xx → passed through unchanged;
- router errors → `{"error": {message, type, code}}` with 400/502/503/504, or, once an SSE
  stream has started, a final `data: {"error": …}` event and `data: [DONE]`;
- client gone → the handler is cancelled (the runner is created with `handler_cancellation`),
  which closes the engine connections and so aborts the engine requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tandem.api.vocabulary import Role
from tandem.router.endpoints import EndpointPool
from tandem.router.errors import (
    InternalError,
    InvalidRequest,
    Outcome,
    RequestTimeout,
    RouterError,
    UpstreamClientError,
)
from tandem.router.jsonbody import parse_object
from tandem.router.pairs import PairBook
from tandem.router.reply import Reply
from tandem.router.request import CHAT_PATH, COMPLETIONS_PATH, ClientRequest, request_prefix_hash

if TYPE_CHECKING:
    from tandem.router.dispatch import Dispatcher
    from tandem.router.metrics import RouterMetrics

log = logging.getLogger(__name__)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def health_report(
    pools: Mapping[Role, EndpointPool], pairs: PairBook | None = None, *, fallback: bool = False
) -> tuple[bool, dict[str, Any]]:
    """(ready, body): ready needs at least one healthy prefill and one healthy decode engine,
    and, with canaries and `--require-verified-pairs`, a verified pair of healthy engines:
    until a canary passed, every request would be answered 503 anyway.

    The pair condition is waived with `--on-prefill-failure decode-only` (`fallback`): such a
    router serves every request anyway, decode-only and counted, and taking it out of its
    Service would turn a degraded data plane into an outage. Without canaries, or with
    `--require-verified-pairs false`, there is nothing to wait for. The body lists the pairs
    per state either way.
    """
    counts = {role.value: pool.healthy_count for role, pool in pools.items()}
    missing = [role for role, n in counts.items() if n == 0]
    body: dict[str, Any] = {"healthy_endpoints": counts}
    if pairs is not None:
        body["pairs"] = {state.value: n for state, n in pairs.state_counts().items()}
    if missing:
        body["status"] = "unavailable"
        body["reason"] = "no healthy " + " and no healthy ".join(missing) + " endpoint"
        return False, body
    if pairs is not None and not fallback and pairs.gates_readiness():
        prefills, decodes = pools[Role.PREFILL].healthy_urls(), pools[Role.DECODE].healthy_urls()
        if not pairs.decoders_with_pair(prefills, decodes, time.monotonic()):
            body["status"] = "unavailable"
            body["reason"] = "no pair of healthy engines has passed its canary hand-off"
            return False, body
    body["status"] = "ok"
    return True, body


def request_id(client_id: str | None) -> str:
    """The id both legs carry in `X-Request-Id`: unique even when clients reuse their ids
    (vLLM derives its internal request id from this header), yet traceable to the client's."""
    unique = uuid.uuid4().hex
    return f"{client_id[:64]}-{unique[:12]}" if client_id else unique


class RouterServer:
    """aiohttp handlers over one router's state."""

    def __init__(
        self,
        *,
        model: str,
        pools: Mapping[Role, EndpointPool],
        metrics: RouterMetrics,
        dispatcher: Dispatcher,
        request_timeout: float,
        prefix_affinity: bool,
        pairs: PairBook | None = None,
        fallback: bool = False,
    ) -> None:
        self._pairs = pairs
        self._fallback = fallback
        self._model = model
        self._pools = pools
        self._metrics = metrics
        self._dispatcher = dispatcher
        self._timeout = request_timeout
        self._prefix_affinity = prefix_affinity
        self._created = int(time.time())

    def app(self) -> web.Application:
        """The aiohttp application (large bodies allowed: prompts of hundreds of KB)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(COMPLETIONS_PATH, self.completions)
        app.router.add_post(CHAT_PATH, self.completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        return app

    async def models(self, _: web.Request) -> web.Response:
        """The one served model, in OpenAI's list format."""
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": self._model,
                        "object": "model",
                        "created": self._created,
                        "owned_by": "tandem",
                        "root": self._model,
                        "parent": None,
                    }
                ],
            }
        )

    async def health(self, _: web.Request) -> web.Response:
        """200 only when both roles have a healthy engine (and a pair is verified, see
        `health_report`); else 503 with the reason."""
        ready, body = health_report(self._pools, self._pairs, fallback=self._fallback)
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(self, _: web.Request) -> web.Response:
        """Prometheus text exposition of this router's registry."""
        return web.Response(
            body=self._metrics.render(), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE}
        )

    def _parse(self, request: web.Request, raw: bytes, received: float) -> ClientRequest:
        try:
            parsed = parse_object(raw)
        except (ValueError, RecursionError) as exc:
            raise InvalidRequest(f"request body is not a JSON object: {exc}") from exc
        body = parsed.values
        creq = ClientRequest(
            path=request.path,
            parsed=parsed,
            raw=raw,
            request_id=request_id(request.headers.get("X-Request-Id")),
            headers=request.headers,
            received_at=received,
        )
        if self._prefix_affinity:
            creq.extras["prefix_hash"] = request_prefix_hash(body, is_chat=creq.is_chat)
        return creq

    async def completions(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/completions` and `/v1/chat/completions`."""
        received = time.monotonic()
        metrics = self._metrics

        def first_byte() -> None:
            metrics.ttft_seconds.observe(time.monotonic() - received)

        reply = Reply(request, first_byte)
        creq: ClientRequest | None = None
        outcome = Outcome.SUCCESS
        try:
            async with asyncio.timeout(self._timeout):
                creq = self._parse(request, await request.read(), received)
                await self._dispatcher.handle(creq, reply)
        except UpstreamClientError as exc:
            outcome = Outcome.CLIENT_ERROR
            reply.body(exc.status, exc.body, exc.content_type)
        except TimeoutError:
            error = RequestTimeout(f"request did not finish within {self._timeout:g}s")
            outcome = error.outcome
            await self._report(reply, error)
        except RouterError as error:
            outcome = error.outcome
            await self._report(reply, error)
        except (asyncio.CancelledError, ConnectionResetError):
            outcome = Outcome.CANCELLED
            raise
        except Exception as exc:  # a bug must still produce a well-formed answer and a metric
            log.exception("Failed with an unexpected error")
            internal = InternalError(f"internal router error: {type(exc).__name__}")
            outcome = internal.outcome
            await self._report(reply, internal)
        finally:
            route = creq.route.value if creq is not None else "none"
            metrics.requests.labels(route, outcome.value).inc()
            metrics.e2e_seconds.observe(time.monotonic() - received)
        assert reply.response is not None
        return reply.response

    async def _report(self, reply: Reply, error: RouterError) -> None:
        log.warning(
            "Failed request",
            extra={"status": error.status, "type": error.type, "error": str(error)},
        )
        if not reply.streaming:
            reply.body(error.status, error.body())
            return
        try:
            await reply.write(error.sse_event())
            await reply.end_stream()
        except ConnectionResetError:
            pass
