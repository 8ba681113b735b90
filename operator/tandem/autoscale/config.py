"""Plain settings of the autoscaler, and the adapter from the InferenceService spec.

The policy and the sources take these frozen dataclasses rather than the pydantic API models, so
they can be built by hand in tests and by the simulator (bench/autoscale_sim.py) without a
manifest, and so the API can evolve without touching the arithmetic. :func:`from_spec` is the one
place that knows the wire names (``spec.prefill.autoscaling``, ``spec.autoscaling.source``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tandem.api.vocabulary import Role

if TYPE_CHECKING:
    from tandem.api.v1alpha1 import InferenceServiceSpec, PoolAutoscaling, ScrapeSource
    from tandem.plan import ServicePlan


@dataclass(frozen=True)
class PoolPolicy:
    """Bounds and targets of one pool (``spec.<role>.autoscaling`` plus its parallelism)."""

    min_replicas: int = 1
    max_replicas: int = 4
    target_waiting_per_replica: int = 4
    # Fraction 0..1 (the API's percent / 100); None turns the KV-cache signal off.
    target_kv_cache_usage: float | None = None
    scale_up_stabilization_s: float = 0.0
    scale_down_stabilization_s: float = 300.0
    max_scale_up_step: int = 4
    max_scale_down_step: int = 1
    # tensor x pipeline: what one more replica costs against spec.autoscaling.maxGPUs.
    gpus_per_replica: int = 1


@dataclass(frozen=True)
class PolicyConfig:
    """Everything the pure policy needs: both pools plus the couplings between them."""

    prefill: PoolPolicy = field(default_factory=PoolPolicy)
    decode: PoolPolicy = field(default_factory=lambda: PoolPolicy(target_kv_cache_usage=0.8))
    ratio_min: float = 0.25
    ratio_max: float = 4.0
    max_gpus: int | None = None
    stale_after_s: float = 30.0

    def pool(self, role: Role) -> PoolPolicy:
        return self.prefill if role is Role.PREFILL else self.decode


@dataclass(frozen=True)
class ScrapeSettings:
    """Direct scrape of each ready engine pod (the default: no Prometheus needed)."""

    port: int = 8000
    path: str = "/metrics"
    timeout_s: float = 2.0


@dataclass(frozen=True)
class PrometheusSettings:
    """PromQL against a Prometheus ``/api/v1/query`` endpoint.

    Overrides may use the placeholders ``{namespace}``, ``{name}``, ``{role}`` and ``{pool}``
    (the regular expression matching the pool's pod names); each query must return one sample
    per engine pod, ideally labelled ``pod``.
    """

    url: str
    query_waiting: str | None = None
    query_running: str | None = None
    query_kv_usage: str | None = None
    timeout_s: float = 5.0


@dataclass(frozen=True)
class AutoscalerConfig:
    """One InferenceService's autoscaler: policy, tick period, metric source, mode."""

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    interval_s: float = 10.0
    source: ScrapeSettings | PrometheusSettings = field(default_factory=ScrapeSettings)
    # spec.autoscaling.mode Shadow: evaluate and report, never write replicas or deletion costs.
    shadow: bool = False

    @property
    def mode(self) -> str:
        return "Shadow" if self.shadow else "Active"


def pool_policy_from_spec(auto: PoolAutoscaling, gpus_per_replica: int) -> PoolPolicy:
    """``spec.<role>.autoscaling`` -> :class:`PoolPolicy` (percent becomes a fraction)."""
    kv = auto.target_kv_cache_usage_percent
    return PoolPolicy(
        min_replicas=auto.min_replicas,
        max_replicas=auto.max_replicas,
        target_waiting_per_replica=auto.target_waiting_per_replica,
        target_kv_cache_usage=None if kv is None else kv / 100.0,
        scale_up_stabilization_s=float(auto.scale_up_stabilization_seconds),
        scale_down_stabilization_s=float(auto.scale_down_stabilization_seconds),
        max_scale_up_step=auto.max_scale_up_step,
        max_scale_down_step=auto.max_scale_down_step,
        gpus_per_replica=gpus_per_replica,
    )


def _scrape_port(scrape: ScrapeSource, plan: ServicePlan) -> int:
    """``source.scrape.port`` when set, else the port the engines serve ``/metrics`` on (the
    engine port, the same in both pools)."""
    return scrape.port if scrape.port is not None else plan.pool(Role.DECODE).metrics_port


def from_spec(spec: InferenceServiceSpec, plan: ServicePlan) -> AutoscalerConfig:
    """The autoscaler's settings for one validated InferenceService spec and its plan."""
    auto = spec.autoscaling
    policy = PolicyConfig(
        prefill=pool_policy_from_spec(spec.prefill.autoscaling, plan.pool(Role.PREFILL).gpus),
        decode=pool_policy_from_spec(spec.decode.autoscaling, plan.pool(Role.DECODE).gpus),
        ratio_min=auto.prefill_to_decode_ratio.min,
        ratio_max=auto.prefill_to_decode_ratio.max,
        max_gpus=auto.max_gpus,
        stale_after_s=float(auto.stale_after_seconds),
    )
    source: ScrapeSettings | PrometheusSettings
    if auto.source.type == "prometheus" and auto.source.prometheus is not None:
        prom = auto.source.prometheus
        source = PrometheusSettings(
            url=prom.url,
            query_waiting=prom.query_waiting,
            query_running=prom.query_running,
            query_kv_usage=prom.query_kv_usage,
            timeout_s=float(prom.timeout_seconds),
        )
    else:
        scrape = auto.source.scrape
        source = ScrapeSettings(
            port=_scrape_port(scrape, plan),
            path=scrape.path,
            timeout_s=float(scrape.timeout_seconds),
        )
    return AutoscalerConfig(
        policy=policy,
        interval_s=float(auto.interval_seconds),
        source=source,
        shadow=auto.mode == "Shadow",
    )
