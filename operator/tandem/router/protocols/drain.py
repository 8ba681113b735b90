"""Abandoned LMCache hand-offs: count them, and let the decoder consume their KV.

LMCache's PD receiver frees a pushed chunk only when the decoder *retrieves* it, or when the
*sender* aborts; there is no TTL and no eviction (LMCache 0.5.6 `cache_engine.py:951-953`,
`pd_backend_async.py:1485-1494`, `:1706`; review A3). So every hand-off the router gives up
after the prefill pushed leaks decoder buffer for good, and a full buffer ends with the
prefiller stuck in its save path (A4).

`KvPush` follows one hand-off's KV from the prefill call until the decoder produced output (it
retrieves the KV before its first token). When the hand-off ends without that, the push is
*abandoned* (`tandem_router_abandoned_handoffs_total{reason}`), and a background task:

1. keeps waiting for the KV-ready notifications, up to another `--kv-ready-timeout` (they
   may still be on their way after a kv_timeout, a failed prefill call or a cancellation);
2. if the prefill answered or any notification arrived, counts the push as abandoned, with
   reason ``kv_timeout``, ``prefill_failed``, ``decode_failed``, ``client_error``,
   ``cancelled`` or ``unconsumed`` (the hand-off ended without an error but the decoder never
   produced output);
3. if any notification arrived (KV landed on the decoder), sends the decoder a *drain*
   request: the hand-off's prompt token ids, ``max_tokens: 1``, answer discarded. The
   decoder looks it up exactly as the real decode leg would and retrieves (so frees) the
   chunks. At most `DRAIN_CONCURRENCY` drains run at once; beyond that, and for a decoder that
   left or is down, the drain is skipped (`tandem_router_kv_drains_total{result}`).

Limits: with TP > 1 and only some ranks notified, the lookup hits on no rank and the ranks that
did receive keep their chunks; if the decoder already retrieved the KV (a cancelled non-streamed
decode that had started), the drain recomputes the prompt on the decoder, one token, bounded
by `DRAIN_CONCURRENCY`. Pushes that never notify (the prefiller died mid-push) cannot be seen
by the router; LMCache's `pd_allocation_timeout_sec` is what bounds those.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any, Final

from tandem.api.vocabulary import Role
from tandem.router.endpoints import Endpoint, HealthState
from tandem.router.errors import (
    DecodeFailed,
    DecodeUnavailable,
    PrefillFailure,
    UpstreamClientError,
)
from tandem.router.kvready import KvReadyHub
from tandem.router.protocols.base import RouterContext
from tandem.router.protocols.lmcache_legs import drain_payload
from tandem.router.request import COMPLETIONS_PATH
from tandem.router.upstream import (
    UpstreamServerError,
    UpstreamUnreachable,
    engine_headers,
    post_json,
)

log = logging.getLogger(__name__)

#: Drain requests one router runs at once (each is one decoder step over a prompt).
DRAIN_CONCURRENCY: Final = 4


def abandon_reason(error: BaseException | None) -> str:
    """Why a hand-off whose KV the decoder never consumed ended."""
    if error is None:
        return "unconsumed"
    if isinstance(error, PrefillFailure):
        return "kv_timeout" if error.reason == "kv_ready_timeout" else "prefill_failed"
    if isinstance(error, DecodeFailed | DecodeUnavailable):
        return "decode_failed"
    if isinstance(error, UpstreamClientError):
        return "client_error"
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    return "error"


class KvPush:
    """One hand-off's KV on its way to, or sitting in, one decoder's buffer."""

    def __init__(
        self,
        ctx: RouterContext,
        hub: KvReadyHub,
        decoder: Endpoint,
        token_ids: list[int],
        model: Any,
        drains: asyncio.Semaphore,
    ) -> None:
        self._ctx = ctx
        self._hub = hub
        self._drains = drains
        self.decoder = decoder
        self.token_ids = token_ids
        self.model = model
        self.req_id = hub.new_req_id(uuid.uuid4().hex)
        self.waiter = hub.register(self.req_id, ctx.config.expected_kv_notifications)
        #: The prefiller answered: it computed the prompt and pushed (or tried to).
        self.answered = False
        #: The decoder produced output, so it retrieved the KV.
        self.consumed = False

    def finish(self, error: BaseException | None) -> None:
        """The hand-off is over; an unconsumed push goes on in the background."""
        if self.consumed:
            self._hub.forget(self.req_id)
            return
        self._ctx.spawn(self._settle(abandon_reason(error)))

    async def _settle(self, reason: str) -> None:
        try:
            if not self.waiter.event.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._ctx.config.kv_ready_timeout):
                        await self.waiter.wait()
        finally:
            self._hub.forget(self.req_id)
        metrics = self._ctx.metrics
        if self.waiter.received == 0:
            if self.answered:  # it computed the prompt, but nothing reached the decoder
                metrics.abandoned_handoffs.labels(reason).inc()
                metrics.kv_drains.labels("nothing_arrived").inc()
            return
        metrics.abandoned_handoffs.labels(reason).inc()
        log.info(
            "Draining abandoned hand-off",
            extra={"req_id": self.req_id, "decoder": self.decoder.url, "reason": reason},
        )
        metrics.kv_drains.labels(await self._drain()).inc()

    async def _drain(self) -> str:
        ctx = self._ctx
        endpoint = ctx.pools[Role.DECODE].endpoints.get(self.decoder.url)
        if endpoint is None or endpoint.state is HealthState.UNHEALTHY:
            return "decoder_gone"
        if self._drains.locked():
            return "skipped"
        payload = drain_payload(self.model, self.token_ids)
        headers = engine_headers(f"tandem-drain-{uuid.uuid4().hex[:16]}", {})
        async with self._drains:
            try:
                async with asyncio.timeout(ctx.config.effective_prefill_timeout):
                    await post_json(ctx.session, endpoint.url + COMPLETIONS_PATH, payload, headers)
            except (UpstreamUnreachable, UpstreamServerError, UpstreamClientError, TimeoutError):
                return "failed"
        return "ok"
