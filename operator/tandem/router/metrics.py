"""Prometheus metrics of one router instance, in a registry of its own.

Every router instance owns a `CollectorRegistry` (no module-level default registry), so two routers
in one test process never share counters. Pool state (in-flight, queue depth, endpoint health) is
read at scrape time by a custom collector instead of being mirrored into gauges on every change:
the numbers cannot drift from the state the picker uses.

`tandem_router_queue_depth{role="prefill"}` is the autoscaler's "pending prefills" signal.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tandem.api.vocabulary import Role
from tandem.router.endpoints import EndpointPool, HealthState

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


class RouterMetrics:
    """The router's counters and histograms plus the pool collector, in one registry."""

    def __init__(self, pools: Mapping[Role, EndpointPool]) -> None:
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
            "Prefill-leg start to decode-leg start (prefill time plus KV hand-off)",
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
        reg.register(PoolCollector(pools))

    def render(self) -> bytes:
        """The text exposition format of everything in the registry."""
        return generate_latest(self.registry)
