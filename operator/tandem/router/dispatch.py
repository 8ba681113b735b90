"""Route one request: selective disaggregation, the hand-off, and the prefill fallback.

The decision tree, in order:
1. Measure the prompt (estimate, or `/tokenize` for LMCache). Batches cannot be disaggregated.
2. Prompts under `--min-prompt-tokens` go straight to a decode engine (route `decode_only`):
   for short prompts the KV hand-off costs more than the prefill it saves.
3. Otherwise run the protocol's hand-off (route `disaggregated`).
4. If the prefill side fails before anything reached the client, `--on-prefill-failure`
   decides: `fail` answers 503, `decode-only` sends the original request to a decode engine
   without KV (route `fallback`, counted in `tandem_router_prefill_fallbacks_total{reason}`).
"""

from __future__ import annotations

import logging

from tandem.router.config import PrefillFailurePolicy
from tandem.router.errors import PrefillFailure, PrefillUnavailable
from tandem.router.protocols.base import Handoff, RouterContext
from tandem.router.protocols.relay import decode_only
from tandem.router.reply import Reply
from tandem.router.request import ClientRequest, Route

log = logging.getLogger(__name__)


class Dispatcher:
    """Applies the decision tree above with one hand-off protocol."""

    def __init__(self, ctx: RouterContext, handoff: Handoff) -> None:
        self._ctx = ctx
        self._handoff = handoff

    async def handle(self, creq: ClientRequest, reply: Reply) -> None:
        """Answer `creq` through `reply`; sets `creq.route` for the request metric."""
        cfg = self._ctx.config
        try:
            tokens = await self._handoff.measure(creq)
            if tokens is not None and tokens >= cfg.min_prompt_tokens:
                creq.route = Route.DISAGGREGATED
                await self._handoff.disaggregated(creq, reply, tokens)
                return
            creq.route = Route.DECODE_ONLY
        except PrefillFailure as failure:
            log.warning(
                "Failed prefill leg",
                extra={
                    "request_id": creq.request_id,
                    "reason": failure.reason,
                    "detail": failure.detail,
                    "fallback": cfg.on_prefill_failure.value,
                },
            )
            if cfg.on_prefill_failure is PrefillFailurePolicy.FAIL:
                raise PrefillUnavailable(f"prefill failed: {failure.detail}") from failure
            self._ctx.metrics.prefill_fallbacks.labels(failure.reason).inc()
            creq.route = Route.FALLBACK
        await decode_only(self._ctx, creq, reply)
