"""Which prefill/decode pairs may carry a KV hand-off: pure state, no I/O, no clock.

A *pair* is one prefill endpoint and one decode endpoint. A hand-off through a pair can fail in
ways no health probe sees: an LMCache engine whose connector failed to start serves, answers
`/health` 200 and never pushes a byte of KV (review A5), a prefiller keeps pushing into a decoder
whose port it cannot reach (N1), NIXL descriptors go stale after a pod-IP reuse (A14). So every
pair has a state of its own:

- ``unverified``: new (its endpoints appeared), or its last canary failed;
- ``verified``: a canary hand-off through it showed KV arriving on the decoder;
- ``broken``: its last `FAILURES_TO_BREAK` hand-offs (traffic or canary) failed in a row.

Who may carry traffic (`PairBook.usable`):

- with canaries (``--canary true``, the default): ``verified`` pairs; with
  ``--require-verified-pairs false`` also ``unverified`` pairs whose first canary has not
  finished yet (cold start). A pair whose canary failed carries nothing until a canary passes.
  Failed canaries are retried after ``min(--pair-retry-seconds, 5 s x failures)``; broken
  pairs every ``--pair-retry-seconds``;
- without canaries: every pair that is not broken, and a broken pair again once
  ``--pair-retry-seconds`` passed (half-open: the next hand-off decides).

The book also keeps the per-pair outcome counts behind ``tandem_router_handoffs_total`` and
``tandem_router_canaries_total``; `sync` forgets the pairs (and their series) of endpoints that
left discovery, so label cardinality is bounded by the live endpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

#: Consecutive failed hand-offs (traffic or canary) that make a pair broken.
FAILURES_TO_BREAK: Final = 3
#: Failed canaries of a pair that is not broken yet are retried after this many seconds per
#: failure (capped by --pair-retry-seconds): a cold engine gets a second chance quickly.
CANARY_BACKOFF_SECONDS: Final = 5.0

Pair = tuple[str, str]
#: The pair label of decode-only fallbacks that had no pair at all.
NO_PAIR: Final[Pair] = ("none", "none")


class PairState(StrEnum):
    """``state`` label of ``tandem_router_pairs``."""

    UNVERIFIED = "unverified"
    VERIFIED = "verified"
    BROKEN = "broken"


class HandoffOutcome(StrEnum):
    """``outcome`` label of ``tandem_router_handoffs_total`` / ``tandem_router_canaries_total``."""

    OK = "ok"
    PREFILL_FAILED = "prefill_failed"
    #: LMCache: the prefill answered but its KV-ready notifications did not all arrive.
    KV_TIMEOUT = "kv_timeout"
    DECODE_FAILED = "decode_failed"
    #: Canary only: the protocol completed, yet the decoder's external_kv_transfer did not grow.
    NO_KV_TRANSFER = "no_kv_transfer"
    #: Canary only: it did not finish within its time limit.
    TIMEOUT = "timeout"
    #: A request meant for a hand-off was answered decode-only (the pair's failure, or no pair).
    DECODE_ONLY_FALLBACK = "decode_only_fallback"


FAILURES: Final = frozenset(
    {
        HandoffOutcome.PREFILL_FAILED,
        HandoffOutcome.KV_TIMEOUT,
        HandoffOutcome.DECODE_FAILED,
        HandoffOutcome.NO_KV_TRANSFER,
        HandoffOutcome.TIMEOUT,
    }
)


@dataclass(frozen=True, slots=True)
class PairPolicy:
    """The flags that decide how pairs are gated."""

    canary: bool = True
    require_verified: bool = True
    retry_seconds: float = 30.0
    failures_to_break: int = FAILURES_TO_BREAK


@dataclass(slots=True)
class PairRecord:
    """What the router knows about one pair."""

    state: PairState = PairState.UNVERIFIED
    #: Consecutive failed hand-offs.
    streak: int = 0
    #: A canary finished since the pair (re)appeared.
    canaried: bool = False
    #: When the next canary is due (broken pairs without canaries: when traffic may retry).
    retry_at: float = 0.0
    #: A verified pair whose endpoint came back: re-canary it while it keeps its traffic.
    recheck: bool = False
    handoffs: dict[HandoffOutcome, int] = field(default_factory=dict)
    canaries: dict[HandoffOutcome, int] = field(default_factory=dict)


class PairBook:
    """Every pair of the live endpoints, its state and its outcome counts."""

    def __init__(self, policy: PairPolicy) -> None:
        self.policy = policy
        self.pairs: dict[Pair, PairRecord] = {}
        #: Called when a pair breaks (the canary runner schedules its retry).
        self.on_broken: Callable[[Pair], None] | None = None
        #: decode_only_fallback samples of requests that had no pair to try.
        self.unpaired_fallbacks = 0

    # --- membership -------------------------------------------------------------------------

    def sync(self, prefills: Iterable[str], decodes: Iterable[str]) -> None:
        """Make the pairs exactly prefills x decodes: new pairs start unverified, pairs of
        endpoints that left are forgotten with their counts."""
        wanted = {(p, d) for p in prefills for d in decodes}
        for gone in self.pairs.keys() - wanted:
            del self.pairs[gone]
        for new in wanted - self.pairs.keys():
            self.pairs[new] = PairRecord()

    def reset(self, url: str) -> None:
        """An endpoint came back (restarted, or was unreachable): canary its pairs at once.

        A verified pair keeps carrying traffic meanwhile: an engine that stalled (a long KV
        pull, a slow /health) did not break the transfer, and holding every request until the
        canary passed turned each stall into a burst of 503s (measured on real CPU engines,
        bench/README-router.md). A pair that really broke fails this canary, or its traffic,
        and leaves rotation as any other."""
        for (prefill, decode), rec in self.pairs.items():
            if url in (prefill, decode):
                rec.retry_at = 0.0
                rec.recheck = rec.state is PairState.VERIFIED

    # --- gating -----------------------------------------------------------------------------

    def usable(self, pair: Pair, now: float) -> bool:
        """May traffic use this pair now?"""
        rec = self.pairs.get(pair)
        if rec is None:
            return False
        if rec.state is PairState.VERIFIED:
            return True
        if rec.state is PairState.BROKEN:
            return not self.policy.canary and now >= rec.retry_at
        if not self.policy.canary:
            return True
        return not self.policy.require_verified and not rec.canaried

    def decoders_with_pair(
        self, prefills: Iterable[str], decodes: Iterable[str], now: float
    ) -> frozenset[str]:
        """The decoders (of `decodes`) with at least one usable pair to one of `prefills`."""
        ps = list(prefills)
        return frozenset(d for d in decodes if any(self.usable((p, d), now) for p in ps))

    def prefills_for(self, decode: str, prefills: Iterable[str], now: float) -> frozenset[str]:
        """The prefills (of `prefills`) whose pair with `decode` is usable."""
        return frozenset(p for p in prefills if self.usable((p, decode), now))

    def due_canaries(
        self, prefills: Iterable[str], decodes: Iterable[str], now: float
    ) -> list[Pair]:
        """Pairs of these (healthy) endpoints that need a canary now, oldest need first."""
        if not self.policy.canary:
            return []
        ps, ds = set(prefills), set(decodes)
        due = [
            (rec.retry_at, pair)
            for pair, rec in self.pairs.items()
            if pair[0] in ps and pair[1] in ds and self._canary_due(rec, now)
        ]
        return [pair for _, pair in sorted(due)]

    def next_canary_at(self) -> float | None:
        """When the earliest canary that is not due yet becomes due (None: none waits)."""
        if not self.policy.canary:
            return None
        waiting = [
            rec.retry_at
            for rec in self.pairs.values()
            if rec.state is not PairState.VERIFIED and rec.canaried
        ]
        return min(waiting, default=None)

    @staticmethod
    def _canary_due(rec: PairRecord, now: float) -> bool:
        if rec.state is PairState.VERIFIED:
            return rec.recheck
        return not rec.canaried or now >= rec.retry_at

    # --- outcomes ---------------------------------------------------------------------------

    def record(
        self, pair: Pair, outcome: HandoffOutcome, now: float, *, canary: bool = False
    ) -> PairState | None:
        """Count one hand-off (or canary) through `pair`; returns the pair's state after it
        (None for a pair that is no longer live, or the unpaired fallback)."""
        if pair == NO_PAIR:
            if outcome is HandoffOutcome.DECODE_ONLY_FALLBACK:
                self.unpaired_fallbacks += 1
            return None
        rec = self.pairs.get(pair)
        if rec is None:
            return None
        counts = rec.canaries if canary else rec.handoffs
        counts[outcome] = counts.get(outcome, 0) + 1
        before = rec.state
        if outcome is HandoffOutcome.OK:
            self._passed(rec, canary)
        elif outcome in FAILURES:
            self._failed(rec, canary, now)
        if rec.state is PairState.BROKEN and before is not PairState.BROKEN and self.on_broken:
            self.on_broken(pair)
        return rec.state

    def _passed(self, rec: PairRecord, canary: bool) -> None:
        rec.streak = 0
        if canary:
            rec.recheck = False
            rec.state, rec.canaried = PairState.VERIFIED, True
        elif rec.state is PairState.BROKEN and not self.policy.canary:
            rec.state = PairState.UNVERIFIED  # the half-open retry worked

    def _failed(self, rec: PairRecord, canary: bool, now: float) -> None:
        policy = self.policy
        rec.streak += 1
        rec.canaried = rec.canaried or canary
        rec.recheck = rec.recheck and not canary
        if rec.streak >= policy.failures_to_break:
            rec.state, rec.retry_at = PairState.BROKEN, now + policy.retry_seconds
        elif canary:
            rec.state = PairState.UNVERIFIED
            rec.retry_at = now + min(policy.retry_seconds, CANARY_BACKOFF_SECONDS * rec.streak)

    # --- reporting --------------------------------------------------------------------------

    def state_counts(self) -> dict[PairState, int]:
        """Pairs per state (every state present)."""
        counts = dict.fromkeys(PairState, 0)
        for rec in self.pairs.values():
            counts[rec.state] += 1
        return counts

    def broken(self) -> list[Pair]:
        """The broken pairs, sorted."""
        return sorted(p for p, rec in self.pairs.items() if rec.state is PairState.BROKEN)

    def gates_readiness(self) -> bool:
        """Whether the router's /health waits for a verified pair: only with canaries and
        ``--require-verified-pairs`` (otherwise unverified pairs carry traffic anyway)."""
        return self.policy.canary and self.policy.require_verified
