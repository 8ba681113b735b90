"""The actuator: one :class:`Autoscaler` per InferenceService, ticked by the operator.

Each :meth:`Autoscaler.tick` reads both pools from Kubernetes, observes them through the metric
source, asks the pure policy, and writes replicas only where the decision differs from what is
there. Kubernetes is reached only through injected async callables (:class:`ClusterHooks`), so
this module imports neither kopf nor a Kubernetes client and is tested with plain fakes; the
operator wires the hooks to the API (replicas patched under the field manager
``tandem-autoscaler``) and calls ``tick`` from a timer.

Order of writes within a tick: scale-downs before scale-ups, so GPUs a shrinking pool frees are
free before the growing pool's new pods look for them under a tight ``maxGPUs``. Before a
scale-down, pods get a deletion cost from their in-flight requests (:mod:`.drain`) when the
operator provides that hook. A failed write keeps the policy's memory as if nothing happened,
so the next tick tries again with the same damping.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from tandem.api.vocabulary import ROLES, Role
from tandem.autoscale.config import AutoscalerConfig
from tandem.autoscale.drain import deletion_costs
from tandem.autoscale.metrics import AutoscalerMetrics
from tandem.autoscale.observation import PoolObservation, missing
from tandem.autoscale.policy import Evaluation, PolicyMemory, PoolDecision, PoolState, evaluate
from tandem.autoscale.rates import RateMemory
from tandem.autoscale.sources import MetricSource, PodRef, PoolTarget

FIELD_MANAGER = "tandem-autoscaler"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterHooks:
    """How the autoscaler reaches Kubernetes; every callable is async and may raise."""

    # spec.replicas and status.readyReplicas of the pool's workload (Deployment / LWS).
    read_pool: Callable[[Role], Awaitable[PoolState]]
    # Ready engine pods of the pool (name and IP), e.g. from the pool's EndpointSlices.
    list_pods: Callable[[Role], Awaitable[Sequence[PodRef]]]
    # Ready router pods; their queue of pending prefills counts as prefill waiting.
    list_routers: Callable[[], Awaitable[Sequence[PodRef]]]
    # Set the workload's replicas (SSA under FIELD_MANAGER, or the scale subresource).
    scale: Callable[[Role, int], Awaitable[None]]
    # Status (lastScale when applied), Event, log: called for every pool every tick.
    record: Callable[[Role, PoolDecision, bool], Awaitable[None]]
    # Optional: annotate pods with controller.kubernetes.io/pod-deletion-cost before shrinking.
    set_deletion_costs: Callable[[Role, Mapping[str, int]], Awaitable[None]] | None = None


@dataclass(frozen=True)
class TickReport:
    """What one tick saw and did (for logs and tests)."""

    evaluation: Evaluation | None
    observations: Mapping[Role, PoolObservation] = field(default_factory=dict)
    scaled: Mapping[Role, tuple[int, int]] = field(default_factory=dict)
    errors: tuple[str, ...] = ()


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
        claim_replicas: bool = False,
    ) -> None:
        self.namespace, self.name = namespace, name
        self._config, self._source, self._hooks, self._metrics = config, source, hooks, metrics
        self._memory = memory or PolicyMemory()
        # Optionally write the current replicas once per pool so FIELD_MANAGER owns
        # spec.replicas before anyone stops sending it (server-side apply would otherwise reset
        # it to 1). Off by default: reconcile.reconciler.hand_over_replicas already does it.
        self._unclaimed: set[Role] = set(ROLES) if claim_replicas else set()

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

    async def tick(self, now: float) -> TickReport:
        """One evaluation at unix time ``now``; never raises for cluster or source errors."""
        hooks, errors = self._hooks, []
        try:
            pools = await asyncio.gather(*(hooks.read_pool(r) for r in ROLES))
        except Exception as exc:
            self._metrics.source_error(self.namespace, self.name, "kubernetes")
            return TickReport(None, errors=(f"reading pools failed: {exc}",))
        states: dict[Role, PoolState] = dict(zip(ROLES, pools, strict=True))

        listed = await asyncio.gather(*(hooks.list_pods(r) for r in ROLES), return_exceptions=True)
        try:
            routers: Sequence[PodRef] = await hooks.list_routers()
        except Exception as exc:
            routers = ()
            errors.append(f"listing routers failed: {exc}")
            self._metrics.source_error(self.namespace, self.name, "kubernetes")
        observed = await asyncio.gather(
            *(self._observe(r, p, routers) for r, p in zip(ROLES, listed, strict=True))
        )
        obs: dict[Role, PoolObservation] = dict(zip(ROLES, observed, strict=True))
        for o in obs.values():
            failed = (1 if o.error else 0) + len(o.failures)
            self._metrics.source_error(self.namespace, self.name, self._source.kind, failed)

        ev = evaluate(self._config.policy, states, obs, self._memory, now)
        memory, scaled = ev.memory, {}
        # Shrinking pools first: their GPUs are free before the growing pool's pods schedule.
        for d in sorted(ev.decisions, key=lambda d: d.desired - d.current):
            if not d.changed and d.role not in self._unclaimed:
                continue
            try:
                if d.desired < d.current and hooks.set_deletion_costs is not None:
                    pods = listed[ROLES.index(d.role)]
                    if not isinstance(pods, BaseException):
                        names = [p.name for p in pods]
                        await hooks.set_deletion_costs(
                            d.role, deletion_costs(names, obs[d.role].pods)
                        )
                await hooks.scale(d.role, d.desired)
            except Exception as exc:
                errors.append(f"scaling {d.role} to {d.desired} failed: {exc}")
                old = self._memory.pool(d.role)
                kept = replace(
                    memory.pool(d.role),
                    last_change=old.last_change,
                    last_scale_up=old.last_scale_up,
                )
                memory = replace(memory, **{d.role: kept})
                continue
            self._unclaimed.discard(d.role)
            if d.changed:
                scaled[d.role] = (d.current, d.desired)
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

        for d in ev.decisions:
            done = d.role in scaled
            self._metrics.decision(self.namespace, self.name, d, d.desired if done else d.current)
            try:
                await hooks.record(d.role, d, done)
            except Exception as exc:
                errors.append(f"recording {d.role} decision failed: {exc}")
        self._memory = memory
        return TickReport(ev, obs, scaled, tuple(errors))
