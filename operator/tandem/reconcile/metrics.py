"""Operator metrics (prometheus-client), kept in one registry object passed around."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram


@dataclass
class OperatorMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.reconciles = Counter(
            "tandem_reconciles_total",
            "Reconciles by trigger and result.",
            ["trigger", "result"],
            registry=r,
        )
        self.errors = Counter(
            "tandem_reconcile_errors_total", "Reconcile errors by kind.", ["error"], registry=r
        )
        self.duration = Histogram(
            "tandem_reconcile_duration_seconds",
            "Time one reconcile took.",
            ["trigger"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.applied = Counter(
            "tandem_children_applied_total",
            "Children applied (server-side apply).",
            ["kind"],
            registry=r,
        )
        self.pruned = Counter(
            "tandem_children_pruned_total",
            "Children deleted as no longer desired.",
            ["kind"],
            registry=r,
        )
        self.status_writes = Counter(
            "tandem_status_writes_total", "Status subresource writes.", registry=r
        )
        self.rejections = Counter(
            "tandem_spec_rejections_total",
            "Specs set to Accepted=False, by reason.",
            ["reason"],
            registry=r,
        )
