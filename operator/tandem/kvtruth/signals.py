"""The counters that say whether KV moved, parsed from Prometheus text (pure).

Router side (``tandem router``'s ``/metrics``): ``tandem_router_handoffs_total`` by
``outcome`` (``ok``, ``prefill_failed``, ``kv_timeout``, ``decode_failed``,
``decode_only_fallback``), ``tandem_router_abandoned_handoffs_total`` and the pairs it took out
of rotation (``tandem_router_pair_broken{prefill,decode} 1``).

Decoder side (vLLM 0.32 ``v1/metrics/loggers.py``, ``nixl/stats.py``):
``vllm:prompt_tokens_by_source_total`` by ``source`` and NIXL's
``vllm:nixl_num_failed_transfers_total`` / ``vllm:nixl_num_kv_expired_reqs_total``; prefill
side, ``vllm:nixl_num_notifications_after_expiry_total``. An expired lease counts as a failed
transfer: the prefiller may already have reused the blocks the decoder read.

Counters are cumulative; :class:`KvSample` sums them over every pod read in one pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from prometheus_client.parser import text_string_to_metric_families

HANDOFFS: Final = "tandem_router_handoffs_total"
ABANDONED: Final = "tandem_router_abandoned_handoffs_total"
PAIR_BROKEN: Final = "tandem_router_pair_broken"
BY_SOURCE: Final = "vllm:prompt_tokens_by_source_total"
NIXL_FAILED: Final = "vllm:nixl_num_failed_transfers_total"
NIXL_EXPIRED: Final = "vllm:nixl_num_kv_expired_reqs_total"
# Prefill side: a decoder read blocks whose lease had expired ("Potentially invalid KV blocks
# ... retrieved by a decode worker", nixl/pull_worker.py:666): possibly another request's KV.
NIXL_AFTER_EXPIRY: Final = "vllm:nixl_num_notifications_after_expiry_total"

OK: Final = "ok"
FALLBACK: Final = "decode_only_fallback"
EXTERNAL: Final = "external_kv_transfer"
LOCAL: Final = "local_compute"


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every finite sample of a ``/metrics`` page (prometheus_client's parser, as the
    autoscaler's sources use); a page that does not parse gives none, so that pod is judged
    from what the others report."""
    try:
        return [
            (sample.name, dict(sample.labels), float(sample.value))
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if math.isfinite(sample.value)
        ]
    except (ValueError, TypeError, IndexError):
        return []


def _add(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: a.get(k, 0.0) + b.get(k, 0.0) for k in a.keys() | b.keys()}


@dataclass(frozen=True)
class KvSample:
    """Cumulative counters summed over the pods read in one pass."""

    handoffs: dict[str, float] = field(default_factory=dict)  # outcome -> count
    abandoned: float = 0.0
    broken_pairs: frozenset[tuple[str, str]] = frozenset()
    tokens: dict[str, float] = field(default_factory=dict)  # decoder prompt tokens by source
    nixl_failed: float = 0.0
    nixl_expired: float = 0.0
    routers: int = 0
    decoders: int = 0

    def __add__(self, other: KvSample) -> KvSample:
        return KvSample(
            handoffs=_add(self.handoffs, other.handoffs),
            abandoned=self.abandoned + other.abandoned,
            broken_pairs=self.broken_pairs | other.broken_pairs,
            tokens=_add(self.tokens, other.tokens),
            nixl_failed=self.nixl_failed + other.nixl_failed,
            nixl_expired=self.nixl_expired + other.nixl_expired,
            routers=self.routers + other.routers,
            decoders=self.decoders + other.decoders,
        )


def parse_router(text: str) -> KvSample:
    handoffs: dict[str, float] = {}
    abandoned = 0.0
    broken = set()
    for name, labels, value in _samples(text):
        if name == HANDOFFS:
            key = labels.get("outcome", "")
            handoffs[key] = handoffs.get(key, 0.0) + value
        elif name == ABANDONED:
            abandoned += value
        elif name == PAIR_BROKEN and value > 0:
            broken.add((labels.get("prefill", ""), labels.get("decode", "")))
    return KvSample(
        handoffs=handoffs, abandoned=abandoned, broken_pairs=frozenset(broken), routers=1
    )


def parse_decoder(text: str) -> KvSample:
    tokens: dict[str, float] = {}
    failed = expired = 0.0
    for name, labels, value in _samples(text):
        if name == BY_SOURCE:
            key = labels.get("source", "")
            tokens[key] = tokens.get(key, 0.0) + value
        elif name == NIXL_FAILED:
            failed += value
        elif name == NIXL_EXPIRED:
            expired += value
    return KvSample(tokens=tokens, nixl_failed=failed, nixl_expired=expired, decoders=1)


def parse_prefill(text: str) -> KvSample:
    """A prefill engine's NIXL failures and expired leases (its prompt tokens are its own)."""
    failed = expired = 0.0
    for name, _, value in _samples(text):
        if name == NIXL_FAILED:
            failed += value
        elif name in (NIXL_EXPIRED, NIXL_AFTER_EXPIRY):
            expired += value
    return KvSample(nixl_failed=failed, nixl_expired=expired)
