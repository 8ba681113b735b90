"""Prometheus metrics of one router instance, in a registry of its own.

Every router instance owns a `CollectorRegistry` (no module-level default registry), so two routers
in one test process never share counters. Pool state (in-flight, queue depth, endpoint health) is
read at scrape time by a custom collector instead of being mirrored into gauges on every change:
the numbers cannot drift from the state the picker uses.

`tandem_router_queue_depth{role="prefill"}` is the autoscaler's "pending prefills" signal.

Per-pair series (`PairCollector`, read from `pairs.PairBook` at scrape time):

- `tandem_router_handoffs_total{prefill,decode,outcome}`: traffic hand-offs through a pair
  (`pairs.HandoffOutcome`: ok, prefill_failed, kv_timeout, decode_failed,
  decode_only_fallback; fallbacks without any pair carry `prefill="none",decode="none"`;
  cancelled hand-offs are not counted: they say nothing about the pair);
- `tandem_router_canaries_total{prefill,decode,outcome}`: canary hand-offs (also
  no_kv_transfer: the protocol completed but the decoder loaded no external KV);
- `tandem_router_pairs{state}` (verified, unverified, broken) and
  `tandem_router_pair_broken{prefill,decode} 1` per broken pair.

Endpoint labels are `host:port`. A pair's series disappear when one of its endpoints leaves
discovery, so their number is bounded by the live endpoints.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tandem.api.vocabulary import Role
from tandem.router.endpoints import EndpointPool, HealthState
from tandem.router.pairs import NO_PAIR, HandoffOutcome, PairBook

PREFIX: Final = "tandem_router_"

#: Latency buckets from router overhead (ms) up to long generations (minutes).
LATENCY_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip


class PoolCollector(Collector):
    """Exports live pool state: in-flight per endpoint, queue depth, endpoints per state."""

    def __init__(self, pools: Mapping[Role, EndpointPool]) -> None:
        self._pools = pools

    def collect(self) -> Iterator[Metric]:
        inflight = GaugeMetricFamily(
            PREFIX + "inflight",
            "Requests this router has in flight per engine endpoint",
            labels=["role", "endpoint"],
        )
        tokens = GaugeMetricFamily(
            PREFIX + "inflight_prompt_tokens",
            "Estimated prompt tokens this router has in flight per engine endpoint",
            labels=["role", "endpoint"],
        )
        queue = GaugeMetricFamily(
            PREFIX + "queue_depth",
            "Requests waiting in the router for a free engine slot (prefill: pending prefills)",
            labels=["role"],
        )
        states = GaugeMetricFamily(
            PREFIX + "endpoints", "Engine endpoints per health state", labels=["role", "state"]
        )
        for role, pool in self._pools.items():
            for ep in pool.endpoints.values():
                inflight.add_metric([role.value, ep.url], ep.inflight)
                tokens.add_metric([role.value, ep.url], ep.inflight_tokens)
            queue.add_metric([role.value], pool.queue_depth)
            for state in HealthState:
                states.add_metric([role.value, state.value], pool.count(state))
        yield inflight
        yield tokens
        yield queue
        yield states


def endpoint_label(url: str) -> str:
    """`http://10.0.0.5:8000` → `10.0.0.5:8000` (the pair labels)."""
    return url.split("://", 1)[-1].rstrip("/")


class PairCollector(Collector):
    """Exports the pair book: outcomes per pair, pairs per state, the broken pairs."""

    def __init__(self, book: PairBook) -> None:
        self._book = book

    def collect(self) -> Iterator[Metric]:
        book = self._book
        handoffs = CounterMetricFamily(
            PREFIX + "handoffs",
            "KV hand-offs per prefill/decode pair and outcome",
            labels=["prefill", "decode", "outcome"],
        )
        canaries = CounterMetricFamily(
            PREFIX + "canaries",
            "Canary hand-offs per prefill/decode pair and outcome",
            labels=["prefill", "decode", "outcome"],
        )
        for (prefill, decode), rec in book.pairs.items():
            labels = [endpoint_label(prefill), endpoint_label(decode)]
            for outcome, n in rec.handoffs.items():
                handoffs.add_metric([*labels, outcome.value], n)
            for outcome, n in rec.canaries.items():
                canaries.add_metric([*labels, outcome.value], n)
        if book.unpaired_fallbacks:
            fallback = HandoffOutcome.DECODE_ONLY_FALLBACK.value
            handoffs.add_metric([*NO_PAIR, fallback], book.unpaired_fallbacks)
        states = GaugeMetricFamily(
            PREFIX + "pairs", "Prefill/decode pairs per state", labels=["state"]
        )
        for state, n in book.state_counts().items():
            states.add_metric([state.value], n)
        broken = GaugeMetricFamily(
            PREFIX + "pair_broken",
            "1 per broken prefill/decode pair (out of rotation, re-canaried)",
            labels=["prefill", "decode"],
        )
        for prefill, decode in book.broken():
            broken.add_metric([endpoint_label(prefill), endpoint_label(decode)], 1)
        yield handoffs
        yield canaries
        yield states
        yield broken


class RouterMetrics:
    """The router's counters and histograms plus the pool collector, in one registry."""

    def __init__(self, pools: Mapping[Role, EndpointPool], pairs: PairBook) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter(
            PREFIX + "requests",
            "Client requests by route (disaggregated, decode_only, fallback) and outcome",
            ["route", "outcome"],
            registry=reg,
        )
        self.handoff_seconds = Histogram(
            PREFIX + "handoff_seconds",
            "Streamed hand-offs: prefill-leg start to the decode leg's first token "
            "(prefill, KV transfer and the decoder's first step)",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.ttft_seconds = Histogram(
            PREFIX + "ttft_seconds",
            "Request arrival to first byte of a streamed answer, as seen by the router",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.e2e_seconds = Histogram(
            PREFIX + "e2e_seconds",
            "Request arrival to end of the answer, as seen by the router",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.prefill_fallbacks = Counter(
            PREFIX + "prefill_fallbacks",
            "Requests served decode-only because the prefill leg failed, by reason",
            ["reason"],
            registry=reg,
        )
        self.kv_ready_notifications = Counter(
            PREFIX + "kv_ready_notifications",
            "LMCache KV-ready notifications received, by what happened to them",
            ["outcome"],
            registry=reg,
        )
        self.decode_only = Counter(
            PREFIX + "decode_only",
            "Requests routed decode-only by choice, before any prefill, by reason",
            ["reason"],
            registry=reg,
        )
        self.abandoned_handoffs = Counter(
            PREFIX + "abandoned_handoffs",
            "LMCache hand-offs given up after the prefill pushed KV to a decoder, by reason",
            ["reason"],
            registry=reg,
        )
        self.kv_drains = Counter(
            PREFIX + "kv_drains",
            "Drain requests that consume an abandoned hand-off's KV on its decoder, by result",
            ["result"],
            registry=reg,
        )
        reg.register(PoolCollector(pools))
        reg.register(PairCollector(pairs))

    def render(self) -> bytes:
        """The text exposition format of everything in the registry."""
        return generate_latest(self.registry)
