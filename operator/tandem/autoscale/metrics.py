"""The autoscaler's own Prometheus metrics, on a registry the operator passes in.

One :class:`AutoscalerMetrics` serves every InferenceService in the process (labels tell them
apart); there are no module-level collectors, so tests and several operators in one process
never collide on the default registry. :meth:`forget` drops a deleted InferenceService's series,
so dashboards do not show ghosts (the stale-series bug of llm-d-router#2529).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from tandem.autoscale.policy import PoolDecision

_POOL = ("namespace", "name", "role")
MODES = ("Active", "Shadow")


class AutoscalerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.desired = Gauge(
            "tandem_autoscaler_desired_replicas",
            "Replicas the autoscaler decided for the pool in its last evaluation "
            "(in Shadow mode the pool's unchanged replicas).",
            _POOL,
            registry=registry,
        )
        self.recommended = Gauge(
            "tandem_autoscaler_recommended_replicas",
            "Replicas the autoscaler recommends for the pool (Active and Shadow modes).",
            _POOL,
            registry=registry,
        )
        self.mode = Gauge(
            "tandem_autoscaler_mode",
            "1 for the autoscaler's mode (Active: sets replicas; Shadow: only recommends).",
            ("namespace", "name", "mode"),
            registry=registry,
        )
        self.current = Gauge(
            "tandem_autoscaler_current_replicas",
            "Replicas the pool's workload has after the autoscaler's last evaluation.",
            _POOL,
            registry=registry,
        )
        self.decisions = Counter(
            "tandem_autoscaler_decisions_total",
            "Autoscaler evaluations per pool, by the decision's reason.",
            (*_POOL, "reason"),
            registry=registry,
        )
        self.source_errors = Counter(
            "tandem_autoscaler_source_errors_total",
            "Failed reads: a whole metric source, one pod or router, or the Kubernetes API.",
            ("namespace", "name", "source"),
            registry=registry,
        )
        self._labels: dict[tuple[str, str], set[tuple[str, ...]]] = {}

    def _seen(self, namespace: str, name: str, kind: str, *values: str) -> None:
        self._labels.setdefault((namespace, name), set()).add((kind, *values))

    def decision(
        self, namespace: str, name: str, decision: PoolDecision, current: int, shadow: bool = False
    ) -> None:
        """Record one pool's evaluation; ``current`` is the replicas after actuation."""
        role = decision.role
        self.desired.labels(namespace, name, role).set(current if shadow else decision.desired)
        self.recommended.labels(namespace, name, role).set(decision.desired)
        self.current.labels(namespace, name, role).set(current)
        self.decisions.labels(namespace, name, role, decision.reason.value).inc()
        self._seen(namespace, name, "pool", role)
        self._seen(namespace, name, "decision", role, decision.reason.value)

    def set_mode(self, namespace: str, name: str, shadow: bool) -> None:
        """The mode as two series, the one in force at 1 (kube-state-metrics style)."""
        for mode in MODES:
            self.mode.labels(namespace, name, mode).set(int((mode == "Shadow") == shadow))
        self._seen(namespace, name, "mode")

    def source_error(self, namespace: str, name: str, source: str, count: int = 1) -> None:
        if count > 0:
            self.source_errors.labels(namespace, name, source).inc(count)
            self._seen(namespace, name, "source", source)

    def forget(self, namespace: str, name: str) -> None:
        """Remove every series of one InferenceService (call it when the CR is deleted)."""
        for kind, *values in self._labels.pop((namespace, name), set()):
            if kind == "pool":
                self.desired.remove(namespace, name, *values)
                self.recommended.remove(namespace, name, *values)
                self.current.remove(namespace, name, *values)
            elif kind == "mode":
                for mode in MODES:
                    self.mode.remove(namespace, name, mode)
            elif kind == "decision":
                self.decisions.remove(namespace, name, *values)
            else:
                self.source_errors.remove(namespace, name, *values)
