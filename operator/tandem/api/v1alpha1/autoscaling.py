"""``spec.autoscaling``: the switch and mode, the global bounds and where queue metrics come from.

Per-pool bounds and targets live with the pools (``spec.<pool>.autoscaling``); this block holds
what spans both pools: the prefill:decode ratio, the GPU budget and the metrics source.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tandem.api.base import ApiModel
from tandem.api.v1alpha1.scalars import DURATION_PATTERN, Port, parse_duration


class Ratio(ApiModel):
    min: float = Field(default=0.25, gt=0, le=1000, description="Lowest prefill:decode ratio.")
    max: float = Field(default=4.0, gt=0, le=1000, description="Highest prefill:decode ratio.")


class ScrapeSource(ApiModel):
    port: Port | None = Field(
        default=None, description="Engine port serving /metrics; unset: spec.engine.port."
    )
    path: str = Field(default="/metrics", pattern=r"^/.*$", description="Metrics path.")
    timeout_seconds: int = Field(default=2, ge=1, le=60, description="Per-pod scrape timeout.")


class PrometheusSource(ApiModel):
    url: str = Field(
        description="Prometheus base URL (its /api/v1/query is used).",
        pattern=r"^https?://.+$",
        max_length=512,
    )
    query_waiting: str | None = Field(
        default=None,
        description=(
            "PromQL for waiting requests; {namespace}, {name}, {role} and {pool} (the pool's "
            "pod-name regex) are expanded."
        ),
    )
    query_running: str | None = Field(default=None, description="PromQL for running requests.")
    query_kv_usage: str | None = Field(default=None, description="PromQL for KV-cache usage.")
    timeout_seconds: int = Field(default=5, ge=1, le=60, description="Query timeout.")


class MetricsSource(ApiModel):
    type: Literal["scrape", "prometheus"] = Field(
        default="scrape", description="scrape: read pods' /metrics; prometheus: run PromQL."
    )
    scrape: ScrapeSource = Field(default_factory=ScrapeSource, description="Scrape settings.")
    prometheus: PrometheusSource | None = Field(
        default=None, description="Prometheus settings (type prometheus)."
    )


class Autoscaling(ApiModel):
    enabled: bool = Field(
        default=False, description="Let Tandem's autoscaler own each pool's replicas."
    )
    mode: Literal["Active", "Shadow"] = Field(
        default="Active",
        description=(
            "Active: the autoscaler sets replicas. Shadow: it evaluates every interval and "
            "records its recommendation in status, events and metrics, but changes nothing."
        ),
    )
    interval: str = Field(
        default="10s",
        pattern=DURATION_PATTERN,
        max_length=16,
        description="Evaluation period (e.g. 10s, 1m).",
    )
    prefill_to_decode_ratio: Ratio = Field(
        default_factory=Ratio, description="Bounds on prefill:decode replicas."
    )
    max_gpus: int | None = Field(
        default=None,
        alias="maxGPUs",
        ge=1,
        le=100_000,
        description="GPU budget of both pools together.",
    )
    stale_after_seconds: int = Field(
        default=30, ge=1, le=3600, description="Metrics older than this count as missing."
    )
    source: MetricsSource = Field(
        default_factory=MetricsSource, description="Where queue metrics come from."
    )

    @property
    def interval_seconds(self) -> int:
        return parse_duration(self.interval)
