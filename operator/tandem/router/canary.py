"""Canary hand-offs: prove that KV really moves through a prefill/decode pair before (and,
once broken, again before) the pair carries traffic.

A canary is a tiny request (`CANARY_PROMPT`, `max_tokens: 2`, `temperature: 0`) sent through
one exact pair by the configured connector's own hand-off code (`Handoff.disaggregated` with
the pair pinned), so it exercises what traffic would: the NIXL `kv_transfer_params` round
trip and pull, or LMCache's `disagg_spec` push and every expected KV-ready notification. It
passes only if

1. the protocol completed: NIXL, the prefill answered with `kv_transfer_params` and the decode
   leg succeeded; LMCache, every expected notification arrived and the decode leg succeeded;
2. and the decoder's `vllm:prompt_tokens_by_source_total{source="external_kv_transfer"}`,
   scraped from its /metrics before and after, grew. That catches what the protocol cannot:
   an LMCache engine in "degraded mode (recompute)" and NIXL's silent `recompute` fallback
   both answer correctly while nothing was transferred (review A5, B6).

Scheduling: `PairBook.due_canaries` says which pairs need one (new pairs at once, failed ones
after a back-off, broken ones every `--pair-retry-seconds`); the runner starts them when both
endpoints are healthy, at most `MAX_CANARIES` at once and one per decoder at a time, so a
decoder's counter growth belongs to one canary. Traffic through *other*, already verified pairs
into the same decoder can still make a canary pass that moved nothing (the counter is
per-engine); such a pair is then caught by its traffic outcomes (LMCache kv_timeout) or by
the next canary after it breaks.

A decoder that does not export the counter fails every canary (`no_kv_transfer`); run the
router with `--canary false` for such engines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import Any, Final

import aiohttp

from tandem.api.vocabulary import Role
from tandem.router.enginemetrics import parse_external_kv_tokens
from tandem.router.errors import (
    DecodeFailed,
    DecodeUnavailable,
    PrefillFailure,
    RouterError,
    UpstreamClientError,
)
from tandem.router.jsonbody import parse_object
from tandem.router.pairs import HandoffOutcome, Pair
from tandem.router.protocols.base import CANARY_PAIR, OUTCOME, Handoff, RouterContext
from tandem.router.reply import Reply
from tandem.router.request import COMPLETIONS_PATH, ClientRequest
from tandem.router.upstream import get_text

log = logging.getLogger(__name__)

CANARY_PROMPT: Final = "Tandem canary: one short prompt to check that KV moves from P to D."
CANARY_MAX_TOKENS: Final = 2
#: Canaries in flight at once (never two on one decoder).
MAX_CANARIES: Final = 8
#: Upper bound on one canary (the first NIXL hand-off of a pair includes its ~5 s handshake).
CANARY_TIMEOUT_SECONDS: Final = 60.0
#: The runner re-checks for due canaries at least this often.
TICK_SECONDS: Final = 1.0
#: Re-scrapes of the decoder's counter after a canary (its stats may land a moment later).
RESCRAPE_DELAYS: Final = (0.0, 0.05, 0.2, 0.5)


class DiscardReply(Reply):
    """A reply nobody reads: a canary's answer only has to arrive."""

    def __init__(self) -> None:  # no client request behind it
        self.status: int | None = None
        self._started = False

    @property
    def streaming(self) -> bool:
        return self._started

    async def start_stream(self, content_type: str = "text/event-stream") -> None:
        self._started, self.status = True, 200

    async def write(self, data: bytes) -> None:
        pass

    async def end_stream(self) -> None:
        pass

    def body(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.status = status


def canary_request(model: str, pair: Pair) -> ClientRequest:
    """The canary's client request, pinned to `pair`."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": CANARY_PROMPT,
        "max_tokens": CANARY_MAX_TOKENS,
        "temperature": 0,
        "stream": False,
    }
    raw = json.dumps(body).encode()
    creq = ClientRequest(
        path=COMPLETIONS_PATH,
        parsed=parse_object(raw),
        raw=raw,
        request_id=f"tandem-canary-{uuid.uuid4().hex[:16]}",
        headers={},
        received_at=time.monotonic(),
    )
    creq.extras[CANARY_PAIR] = pair
    return creq


class CanaryRunner:
    """Starts due canaries in the background and records their outcomes in the pair book."""

    def __init__(self, ctx: RouterContext, handoff: Handoff) -> None:
        self._ctx = ctx
        self._handoff = handoff
        self._timeout = min(ctx.config.request_timeout, CANARY_TIMEOUT_SECONDS)
        self._running: dict[Pair, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the scheduling loop."""
        self._loop_task = asyncio.create_task(self._loop(), name="canaries")

    async def stop(self) -> None:
        """Cancel the loop and every canary in flight."""
        tasks = [*self._running.values(), *([self._loop_task] if self._loop_task else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wake(self) -> None:
        """Look for due canaries now (endpoints appeared or changed health)."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            self._launch_due()
            sleep = TICK_SECONDS
            due = self._ctx.pairs.next_canary_at()
            if due is not None:
                sleep = min(sleep, max(0.01, due - self._ctx.clock()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(sleep):
                    await self._wake.wait()

    def _launch_due(self) -> None:
        ctx = self._ctx
        prefills = ctx.pools[Role.PREFILL].healthy_urls()
        decodes = ctx.pools[Role.DECODE].healthy_urls()
        busy = {decode for _, decode in self._running}
        for pair in ctx.pairs.due_canaries(prefills, decodes, ctx.clock()):
            if len(self._running) >= MAX_CANARIES:
                return
            if pair[1] in busy:
                continue
            busy.add(pair[1])
            task = asyncio.create_task(self._run(pair), name=f"canary {pair[0]} -> {pair[1]}")
            self._running[pair] = task
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        for pair, running in list(self._running.items()):
            if running is task:
                del self._running[pair]
        self.wake()

    async def _run(self, pair: Pair) -> None:
        outcome = await self.check(pair)
        state = self._ctx.pairs.record(pair, outcome, self._ctx.clock(), canary=True)
        log.log(
            logging.INFO if outcome is HandoffOutcome.OK else logging.WARNING,
            "Finished canary hand-off",
            extra={
                "prefill": pair[0],
                "decode": pair[1],
                "outcome": outcome.value,
                "state": state.value if state else None,
            },
        )

    async def check(self, pair: Pair) -> HandoffOutcome:
        """Run one canary through `pair` and say how it went."""
        decoder = pair[1]
        before = await self._external_tokens(decoder)
        creq = canary_request(self._ctx.config.model, pair)
        try:
            async with asyncio.timeout(self._timeout):
                tokens = await self._handoff.measure(creq)
                await self._handoff.disaggregated(creq, DiscardReply(), tokens or 1)
        except TimeoutError:
            return HandoffOutcome.TIMEOUT
        except (RouterError, PrefillFailure, UpstreamClientError) as exc:
            log.warning("Failed canary hand-off", extra={"pair": pair, "error": str(exc)})
            outcome = creq.extras.get(OUTCOME)
            if isinstance(outcome, HandoffOutcome):
                return outcome
            decode = isinstance(exc, DecodeFailed | DecodeUnavailable)
            return HandoffOutcome.DECODE_FAILED if decode else HandoffOutcome.PREFILL_FAILED
        except Exception:  # a router bug must not make the pair look good, nor spin
            log.exception("Failed canary with an unexpected error", extra={"pair": pair})
            return HandoffOutcome.PREFILL_FAILED
        if creq.extras.get(OUTCOME, HandoffOutcome.OK) is not HandoffOutcome.OK:
            return HandoffOutcome(creq.extras[OUTCOME])
        return await self._kv_arrived(decoder, before)

    async def _kv_arrived(self, decoder: str, before: float | None) -> HandoffOutcome:
        after: float | None = None
        for delay in RESCRAPE_DELAYS:
            await asyncio.sleep(delay)
            after = await self._external_tokens(decoder)
            if before is not None and after is not None and after > before:
                return HandoffOutcome.OK
        if after is None:
            log.warning(
                "Found no external_kv_transfer counter on a decoder; its canaries cannot pass",
                extra={"decode": decoder},
            )
        return HandoffOutcome.NO_KV_TRANSFER

    async def _external_tokens(self, url: str) -> float | None:
        try:
            text = await get_text(self._ctx.session, url + "/metrics", self._timeout)
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None
        return parse_external_kv_tokens(text) if text is not None else None
