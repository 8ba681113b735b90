"""Route one request: selective disaggregation, the hand-off, and the prefill fallback.

The decision tree, in order:
1. Requests a hand-off cannot serve, or would change (`split.py`: `max_tokens` <= 1, `n` > 1,
   `prompt_logprobs`; with LMCache also `echo` on completions) go straight to
   a decode engine, before any prefill (route `decode_only`).
2. Measure the prompt (estimate, or `/tokenize` for LMCache). Batches cannot be disaggregated.
3. Prompts under `--min-prompt-tokens` go straight to a decode engine (route `decode_only`):
   for short prompts the KV hand-off costs more than the prefill it saves. Steps 1-3 count
   `tandem_router_decode_only_total{reason}` (reasons of step 1, `batch`, `short_prompt`).
4. Otherwise run the protocol's hand-off over a usable prefill/decode pair (route
   `disaggregated`; `pairs.py`).
5. If the prefill side fails before anything reached the client, or no pair is usable
   (`no_verified_pair`), `--on-prefill-failure` decides: `fail` answers 503, `decode-only`
   sends the original request to a decode engine without KV (route `fallback`, counted in
   `tandem_router_prefill_fallbacks_total{reason}` and as `decode_only_fallback` in
   `tandem_router_handoffs_total`, on the failed pair or on `prefill="none",decode="none"`).
"""

from __future__ import annotations

import logging

from tandem.router.config import PrefillFailurePolicy
from tandem.router.errors import PrefillFailure, PrefillUnavailable
from tandem.router.pairs import NO_PAIR, HandoffOutcome
from tandem.router.protocols.base import PAIR, Handoff, RouterContext
from tandem.router.protocols.relay import decode_only
from tandem.router.reply import Reply
from tandem.router.request import ClientRequest, Route

log = logging.getLogger(__name__)


def size_reason(tokens: int | None, min_prompt_tokens: int) -> str | None:
    """Why a measured prompt goes decode-only (a batch, or too short), or None."""
    if tokens is None:
        return "batch"
    if tokens < min_prompt_tokens:
        return "short_prompt"
    return None


class Dispatcher:
    """Applies the decision tree above with one hand-off protocol."""

    def __init__(self, ctx: RouterContext, handoff: Handoff) -> None:
        self._ctx = ctx
        self._handoff = handoff

    async def handle(self, creq: ClientRequest, reply: Reply) -> None:
        """Answer `creq` through `reply`; sets `creq.route` for the request metric."""
        reason = self._handoff.decode_only_reason(creq)
        try:
            if reason is None:
                tokens = await self._handoff.measure(creq)
                reason = size_reason(tokens, self._ctx.config.min_prompt_tokens)
                if tokens is not None and reason is None:
                    creq.route = Route.DISAGGREGATED
                    await self._handoff.disaggregated(creq, reply, tokens)
                    return
            self._ctx.metrics.decode_only.labels(reason or "batch").inc()
            creq.route = Route.DECODE_ONLY
        except PrefillFailure as failure:
            self._fall_back(creq, failure)
        await decode_only(self._ctx, creq, reply)

    def _fall_back(self, creq: ClientRequest, failure: PrefillFailure) -> None:
        ctx = self._ctx
        policy = ctx.config.on_prefill_failure
        log.warning(
            "Failed prefill leg",
            extra={
                "request_id": creq.request_id,
                "reason": failure.reason,
                "detail": failure.detail,
                "fallback": policy.value,
            },
        )
        if policy is PrefillFailurePolicy.FAIL:
            raise PrefillUnavailable(f"prefill failed: {failure.detail}") from failure
        ctx.metrics.prefill_fallbacks.labels(failure.reason).inc()
        pair = creq.extras.get(PAIR, NO_PAIR)
        ctx.pairs.record(pair, HandoffOutcome.DECODE_ONLY_FALLBACK, ctx.clock())
        creq.route = Route.FALLBACK
