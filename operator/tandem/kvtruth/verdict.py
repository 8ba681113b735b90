"""Judge one window of data-plane counters: did KV really move? (pure)

The window is the difference between two readings, pod by pod (a counter that went down means
the pod restarted: its whole value is new). Then, in order, the first that holds decides:

1. ``DecodeOnlyFallback``: requests meant for disaggregation were served decode-only, above
   the tolerance (the rate is in the message, and why: failures, pairs out of rotation). The
   service answers, but without the P/D split it was deployed for.
2. ``TransferFailing``: hand-offs failed (prefill, KV-ready timeout, decode), NIXL transfers
   failed or leases expired, or the router has pairs out of rotation, above the tolerance;
   or hand-offs completed but the decoders loaded no token by KV transfer (they recomputed).
3. ``NoTraffic``: no disaggregated request in the window (status Unknown: nothing to judge).
4. ``Effective``: hand-offs succeed and decoders take prompt tokens from the transfer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from tandem.kvtruth.signals import EXTERNAL, FALLBACK, LOCAL, OK, KvSample

# Share of hand-offs that may fail or fall back in a window before the condition turns False.
TOLERANCE: Final = 0.1

Reading = Mapping[str, KvSample]  # pod name -> its counters


@dataclass(frozen=True)
class KvVerdict:
    status: str  # True, False or Unknown
    reason: str
    message: str
    handoffs: float = 0.0
    failed: float = 0.0
    fallbacks: float = 0.0
    external_share: float | None = None  # of the decoders' prompt tokens, in the window


def _grew(prev: float, cur: float) -> float:
    return cur - prev if cur >= prev else cur


def _counter_delta(prev: dict[str, float], cur: dict[str, float]) -> dict[str, float]:
    return {k: _grew(prev.get(k, 0.0), v) for k, v in cur.items()}


def _delta(prev: KvSample | None, cur: KvSample) -> KvSample:
    p = prev or KvSample()
    return KvSample(
        handoffs=_counter_delta(p.handoffs, cur.handoffs),
        abandoned=_grew(p.abandoned, cur.abandoned),
        broken_pairs=cur.broken_pairs,
        tokens=_counter_delta(p.tokens, cur.tokens),
        nixl_failed=_grew(p.nixl_failed, cur.nixl_failed),
        nixl_expired=_grew(p.nixl_expired, cur.nixl_expired),
        routers=cur.routers,
        decoders=cur.decoders,
    )


def window(prev: Reading, cur: Reading) -> KvSample:
    """What happened between two readings, summed over the pods of the second."""
    total = KvSample()
    for pod, sample in cur.items():
        total = total + _delta(prev.get(pod), sample)
    return total


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "0%"


def _failing(w: KvSample, attempts: float) -> str | None:
    failed = attempts - w.handoffs.get(OK, 0.0)
    parts = []
    if attempts and failed / attempts > TOLERANCE:
        outcomes = ", ".join(
            f"{int(n)} {o}" for o, n in sorted(w.handoffs.items()) if o not in (OK, FALLBACK) and n
        )
        parts.append(f"{int(failed)} of {int(attempts)} hand-offs failed ({outcomes})")
    if w.nixl_failed or w.nixl_expired:
        parts.append(
            f"decoders counted {int(w.nixl_failed)} failed NIXL transfers and "
            f"{int(w.nixl_expired)} expired KV leases"
        )
    if w.broken_pairs:
        pairs = ", ".join(f"{p} -> {d}" for p, d in sorted(w.broken_pairs))
        parts.append(f"pairs out of rotation: {pairs}")
    ok = w.handoffs.get(OK, 0.0)
    if ok and not w.tokens.get(EXTERNAL, 0.0) and w.tokens.get(LOCAL, 0.0):
        parts.append(
            f"{int(ok)} hand-offs completed but decoders loaded no prompt token by KV transfer "
            "(they recomputed)"
        )
    return "; ".join(parts) or None


def judge(prev: Reading, cur: Reading) -> KvVerdict:
    """The ``KVTransferEffective`` condition for the window between two readings."""
    w = window(prev, cur)
    fallbacks = w.handoffs.get(FALLBACK, 0.0)
    attempts = sum(n for o, n in w.handoffs.items() if o != FALLBACK)
    ext, local = w.tokens.get(EXTERNAL, 0.0), w.tokens.get(LOCAL, 0.0)
    share = ext / (ext + local) if ext + local else None

    def verdict(status: str, reason: str, message: str) -> KvVerdict:
        ok = w.handoffs.get(OK, 0.0)
        return KvVerdict(status, reason, message, attempts, attempts - ok, fallbacks, share)

    failing = _failing(w, attempts)
    total = attempts + fallbacks
    if total and fallbacks / total > TOLERANCE:
        detail = f" ({failing})" if failing else ""
        return verdict(
            "False",
            "DecodeOnlyFallback",
            f"{int(fallbacks)} of {int(total)} disaggregated requests ({_pct(fallbacks, total)}) "
            f"were served decode-only{detail}",
        )
    if failing is not None:
        return verdict("False", "TransferFailing", failing)
    if not total:
        return verdict("Unknown", "NoTraffic", "no disaggregated request since the last check")
    loaded = f"; decoders took {_pct(ext, ext + local)} of their prompt tokens by KV transfer"
    return verdict(
        "True",
        "Effective",
        f"{int(w.handoffs.get(OK, 0.0))} of {int(total)} hand-offs moved KV"
        + (loaded if share else ""),
    )
