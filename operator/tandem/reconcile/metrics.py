"""Operator metrics (prometheus-client), kept in one registry object passed around."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
        who = ["namespace", "name"]
        self.kv_effective = Gauge(
            "tandem_kv_transfer_effective",
            "KVTransferEffective: 1 True, 0 False, -1 Unknown (no traffic).",
            who,
            registry=r,
        )
        self.kv_window = Gauge(
            "tandem_kv_transfer_window",
            "Hand-offs in the KV monitor's last window: handoffs, failed, decode_only_fallbacks.",
            [*who, "kind"],
            registry=r,
        )
        self.kv_external_share = Gauge(
            "tandem_kv_transfer_external_share",
            "Share of the decoders' prompt tokens loaded by KV transfer in the last window.",
            who,
            registry=r,
        )

    def forget_kv(self, namespace: str, name: str) -> None:
        """Drop the KV series of an InferenceService that is gone."""
        for gauge in (self.kv_effective, self.kv_external_share):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)
        for kind in ("handoffs", "failed", "decode_only_fallbacks"):
            with contextlib.suppress(KeyError):
                self.kv_window.remove(namespace, name, kind)
