"""The actuator: one :class:`Autoscaler` per InferenceService, ticked by the operator.

Each :meth:`Autoscaler.tick` reads both pools from Kubernetes, observes them through the metric
source, asks the pure policy, and writes replicas only where the decision differs from what is
there. Kubernetes is reached only through an injected :class:`ClusterHooks` object, so this
module imports neither kopf nor a Kubernetes client and is tested with plain fakes; the operator
implements the hooks over the API (replicas patched under :data:`AUTOSCALER_FIELD_MANAGER`) and
calls ``tick`` from a daemon. The tick's :class:`TickReport` is its only output: the operator
builds status and events from it.

Order of writes within a tick: scale-downs before scale-ups, so GPUs a shrinking pool frees are
free before the growing pool's new pods look for them under a tight ``maxGPUs``. Before a
scale-down, pods get a deletion cost from their in-flight requests (:mod:`.drain`). A failed
write keeps the policy's memory as if nothing happened, so the next tick tries again with the
same damping.

In Shadow mode (``AutoscalerConfig.shadow``) the tick is the same up to the writes: it reads
the real replicas, evaluates, records what it would change (``TickReport.recommended``) and
writes nothing, neither replicas nor deletion costs; the damping memory is kept as after a
failed write, so it never drifts as if a scale had happened.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from tandem.api.vocabulary import ROLES, Role
from tandem.autoscale.config import AutoscalerConfig
from tandem.autoscale.drain import deletion_costs
from tandem.autoscale.metrics import AutoscalerMetrics
from tandem.autoscale.observation import PoolObservation, missing
from tandem.autoscale.policy import Evaluation, PolicyMemory, PoolDecision, PoolState, evaluate
from tandem.autoscale.rates import RateMemory
from tandem.autoscale.report import TickReport
from tandem.autoscale.sources import MetricSource, PodRef, PoolTarget

# The field manager that owns spec.replicas of autoscaled pools (the reconcile never sends it).
AUTOSCALER_FIELD_MANAGER = "tandem-autoscaler"

__all__ = ["AUTOSCALER_FIELD_MANAGER", "Autoscaler", "ClusterHooks", "TickReport"]

log = logging.getLogger(__name__)

# Each pool's ready pods as listed this tick, or why listing them failed.
Listed = Mapping[Role, Sequence[PodRef] | BaseException]


class ClusterHooks(Protocol):
    """How the autoscaler reaches Kubernetes; every method may raise."""

    async def read_pool(self, role: Role) -> PoolState:
        """spec.replicas and status.readyReplicas of the pool's workload."""
        ...

    async def list_pods(self, role: Role) -> Sequence[PodRef]:
        """Ready engine pods of the pool (name and IP)."""
        ...

    async def list_routers(self) -> Sequence[PodRef]:
        """Ready router pods; their queue of pending prefills counts as prefill waiting."""
        ...

    async def scale(self, role: Role, replicas: int) -> None:
        """Set the workload's replicas (server-side apply under AUTOSCALER_FIELD_MANAGER)."""
        ...

    async def set_deletion_costs(self, role: Role, costs: Mapping[str, int]) -> None:
        """Annotate pods with controller.kubernetes.io/pod-deletion-cost before shrinking."""
        ...


def _keep_damping(memory: PolicyMemory, before: PolicyMemory, role: Role) -> PolicyMemory:
    """Memory after a failed write: the pool's change times as if nothing happened."""
    old = before.pool(role)
    kept = replace(memory.pool(role), last_change=old.last_change, last_scale_up=old.last_scale_up)
    return replace(memory, **{role: kept})


class Autoscaler:
    """Autoscaling of one InferenceService; keep one instance per CR between ticks."""

    def __init__(
        self,
        *,
        namespace: str,
        name: str,
        config: AutoscalerConfig,
        source: MetricSource,
        hooks: ClusterHooks,
        metrics: AutoscalerMetrics,
        memory: PolicyMemory | None = None,
    ) -> None:
        self.namespace, self.name = namespace, name
        self._config, self._source, self._hooks, self._metrics = config, source, hooks, metrics
        self._memory = memory or PolicyMemory()

    @property
    def memory(self) -> PolicyMemory:
        return self._memory

    @property
    def config(self) -> AutoscalerConfig:
        return self._config

    def reconfigure(self, config: AutoscalerConfig, source: MetricSource | None = None) -> None:
        """Take a new spec; a pool whose GPUs per replica changed forgets what it learnt."""
        mem = self._memory
        for role in ROLES:
            old, new = self._config.policy.pool(role), config.policy.pool(role)
            if old.gpus_per_replica != new.gpus_per_replica:
                reset = replace(mem.pool(role), capacity=0.0, rates=RateMemory())
                mem = replace(mem, **{role: reset})
        self._memory, self._config = mem, config
        if source is not None:
            self._source = source

    def _source_error(self, source: str, count: int = 1) -> None:
        self._metrics.source_error(self.namespace, self.name, source, count)

    async def _observe(
        self, role: Role, pods: Sequence[PodRef] | BaseException, routers: Sequence[PodRef]
    ) -> PoolObservation:
        if isinstance(pods, BaseException):
            return missing(role, f"listing pods failed: {pods}")
        target = PoolTarget(self.namespace, self.name, role, tuple(pods), tuple(routers))
        try:
            return await self._source.observe(target)
        except Exception as exc:  # sources return errors as values; this is a safety net
            return missing(role, f"{type(exc).__name__}: {exc}")

    async def _observe_pools(self, errors: list[str]) -> tuple[Listed, dict[Role, PoolObservation]]:
        """List each pool's ready pods and the routers, then observe both pools."""
        hooks = self._hooks
        listed = await asyncio.gather(*(hooks.list_pods(r) for r in ROLES), return_exceptions=True)
        try:
            routers: Sequence[PodRef] = await hooks.list_routers()
        except Exception as exc:
            routers = ()
            errors.append(f"listing routers failed: {exc}")
            self._source_error("kubernetes")
        observed = await asyncio.gather(
            *(self._observe(r, p, routers) for r, p in zip(ROLES, listed, strict=True))
        )
        obs = dict(zip(ROLES, observed, strict=True))
        for o in obs.values():
            self._source_error(self._source.kind, (1 if o.error else 0) + len(o.failures))
        return dict(zip(ROLES, listed, strict=True)), obs

    async def _actuate(
        self, d: PoolDecision, pods: Sequence[PodRef] | BaseException, obs: PoolObservation
    ) -> None:
        """Write one decision: deletion costs before a scale-down, then the replicas."""
        if d.desired < d.current and not isinstance(pods, BaseException):
            costs = deletion_costs([p.name for p in pods], obs.pods)
            await self._hooks.set_deletion_costs(d.role, costs)
        await self._hooks.scale(d.role, d.desired)
        log.info(
            "Scaled pool",
            extra={
                "instance": f"{self.namespace}/{self.name}",
                "role": d.role,
                "from_replicas": d.current,
                "to_replicas": d.desired,
                "reason": d.reason.value,
            },
        )

    async def tick(self, now: float) -> TickReport:
        """One evaluation at unix time ``now``; never raises for cluster or source errors."""
        errors: list[str] = []
        kind = self._source.kind
        try:
            pools = await asyncio.gather(*(self._hooks.read_pool(r) for r in ROLES))
        except Exception as exc:
            self._source_error("kubernetes")
            return TickReport(None, errors=(f"reading pools failed: {exc}",), at=now, source=kind)
        states: dict[Role, PoolState] = dict(zip(ROLES, pools, strict=True))
        listed, obs = await self._observe_pools(errors)

        ev = evaluate(self._config.policy, states, obs, self._memory, now)
        shadow = self._config.shadow
        memory, scaled = await self._apply(ev, listed, obs, errors)
        for d in ev.decisions:
            current = d.desired if d.role in scaled else d.current
            self._metrics.decision(self.namespace, self.name, d, current, shadow)
        self._metrics.set_mode(self.namespace, self.name, shadow)
        self._memory = memory
        recommended = {d.role: (d.current, d.desired) for d in ev.decisions if d.changed}
        return TickReport(
            ev, obs, scaled, tuple(errors), at=now, source=kind,
            recommended=recommended, shadow=shadow,
        )  # fmt: skip

    async def _apply(
        self, ev: Evaluation, listed: Listed, obs: Mapping[Role, PoolObservation], errors: list[str]
    ) -> tuple[PolicyMemory, dict[Role, tuple[int, int]]]:
        """Write the changed decisions; return the memory to keep and what was scaled.

        In Shadow mode nothing is written, and each change keeps the damping memory as if it had
        not been decided (like a failed write), so the next tick sees the real replicas.
        """
        memory, scaled = ev.memory, {}
        # Shrinking pools first: their GPUs are free before the growing pool's pods schedule.
        for d in sorted(ev.decisions, key=lambda d: d.desired - d.current):
            if not d.changed:
                continue
            if self._config.shadow:
                memory = _keep_damping(memory, self._memory, d.role)
                continue
            try:
                await self._actuate(d, listed[d.role], obs[d.role])
            except Exception as exc:
                errors.append(f"scaling {d.role} to {d.desired} failed: {exc}")
                memory = _keep_damping(memory, self._memory, d.role)
                continue
            scaled[d.role] = (d.current, d.desired)
        return memory, scaled
