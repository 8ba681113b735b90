"""The scaling policy: queue signals in, desired replicas per pool out. Pure.

Every ``interval`` the actuator hands this module what each pool looks like (replicas, ready
replicas, one :class:`~tandem.autoscale.observation.PoolObservation`) plus the
:class:`PolicyMemory` it got back last time, and gets an :class:`Evaluation`: one
:class:`PoolDecision` per pool (desired replicas, a one-word CamelCase :class:`Reason`, a human
message) and the memory to keep for the next tick. Nothing here reads a clock or does I/O, so the
simulator (bench/autoscale_sim.py) runs the very same code against modelled metrics.

How one pool's need is computed (``_assess``):

- A replica is "at target" when it runs a full batch and has ``targetWaitingPerReplica``
  requests queued behind it. Its batch size is not configured anywhere, so it is learnt: the
  most requests ever seen running on one pod (``PoolMemory.capacity``). While a pod has a queue
  this equals its real batch capacity; before that it is a lower bound, which only makes the
  policy keep more replicas, never fewer.
- Queue need = (running + waiting + router-pending) / (capacity + target waiting). Waiting
  excludes vLLM's "deferred" requests (KV pulls in flight on NIXL decoders, LoRA loads): more
  replicas would not serve them sooner.
- KV need (decode by default) = sum of KV-cache usage over pods / target usage, the HPA
  utilisation formula, because KV pressure precedes preemption and queueing.
- Need = max of the two; within 10% of the current replicas counts as "no change" (HPA's
  default tolerance), which keeps ceil() from flapping one replica around a boundary.
- Replicas still starting count as capacity: the need is compared with *all* replicas, so load
  that starting replicas will absorb does not add more (reason ``ColdStartInProgress``).
- Missing, stale or partial metrics HOLD: the recommendation is never below the current
  replicas (partial sums are lower bounds, so a scale-up they justify still happens).

Damping (``_stabilize``) is the HPA's: scale-up takes the lowest recommendation over its window
(default 0 s: at once), scale-down the highest over its window (default 300 s); in addition a
scale-down needs a full window of evidence since the autoscaler started watching and since this
pool last grew, so an operator restart or a ratio-driven raise cannot cause an early shrink.

Bounds and couplings (``_box`` and :mod:`tandem.autoscale.coupling`): per-decision step limits,
min/max (which win over everything else, they are the user's explicit intent), then the
prefill:decode ratio and the GPU budget chosen jointly for both pools.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from tandem.autoscale.config import ROLES, PolicyConfig, PoolPolicy, Role
from tandem.autoscale.coupling import PoolBox, couple, ratio_violation
from tandem.autoscale.observation import PoolObservation

# HPA's default --horizontal-pod-autoscaler-tolerance: a need within 10% of the current
# replicas is treated as met.
TOLERANCE = 0.1


class Reason(StrEnum):
    """Why a pool has the replicas it was given; one word, CamelCase (API conventions)."""

    QUEUE_ABOVE_TARGET = "QueueAboveTarget"
    KV_CACHE_PRESSURE = "KVCachePressure"
    LOAD_BELOW_TARGET = "LoadBelowTarget"
    IDLE = "Idle"
    STABLE = "Stable"
    SCALE_UP_STABILIZING = "ScaleUpStabilizing"
    SCALE_DOWN_STABILIZING = "ScaleDownStabilizing"
    COLD_START = "ColdStartInProgress"
    METRICS_MISSING = "MetricsMissing"
    METRICS_STALE = "MetricsStale"
    METRICS_PARTIAL = "MetricsPartial"
    AT_MAX = "AtMaxReplicas"
    AT_MIN = "AtMinReplicas"
    GPU_BUDGET = "GPUBudget"
    RATIO_BOUND = "RatioBound"


HOLD_REASONS = frozenset(
    {Reason.METRICS_MISSING, Reason.METRICS_STALE, Reason.METRICS_PARTIAL, Reason.COLD_START}
)


@dataclass(frozen=True)
class PoolState:
    """The pool's workload as Kubernetes reports it."""

    replicas: int  # spec.replicas: ready plus still starting
    ready_replicas: int

    @property
    def starting(self) -> int:
        return max(0, self.replicas - self.ready_replicas)


@dataclass(frozen=True)
class Recommendation:
    at: float
    replicas: int


@dataclass(frozen=True)
class PoolMemory:
    """What one pool's policy carries between ticks (the actuator stores it, opaque)."""

    history: tuple[Recommendation, ...] = ()
    observing_since: float | None = None
    last_change: float | None = None
    last_scale_up: float | None = None
    capacity: float = 0.0


@dataclass(frozen=True)
class PolicyMemory:
    prefill: PoolMemory = field(default_factory=PoolMemory)
    decode: PoolMemory = field(default_factory=PoolMemory)

    def pool(self, role: Role) -> PoolMemory:
        return self.prefill if role == "prefill" else self.decode


@dataclass(frozen=True)
class PoolDecision:
    role: Role
    current: int
    ready: int
    desired: int
    recommended: int  # what the load alone asked for, before damping and bounds
    reason: Reason
    message: str
    pressure: float  # load need / current replicas (1.0 = exactly at target)

    @property
    def changed(self) -> bool:
        return self.desired != self.current


@dataclass(frozen=True)
class Evaluation:
    prefill: PoolDecision
    decode: PoolDecision
    memory: PolicyMemory

    def decision(self, role: Role) -> PoolDecision:
        return self.prefill if role == "prefill" else self.decode

    @property
    def decisions(self) -> tuple[PoolDecision, PoolDecision]:
        return (self.prefill, self.decode)


@dataclass(frozen=True)
class _Need:
    recommended: int
    driver: Reason
    hold: Reason | None
    pressure: float
    capacity: float
    detail: str


def _held(current: int, reason: Reason, detail: str, capacity: float) -> _Need:
    return _Need(current, reason, reason, 1.0, capacity, detail)


def _assess(
    pol: PoolPolicy,
    obs: PoolObservation,
    state: PoolState,
    mem: PoolMemory,
    now: float,
    stale_after: float,
) -> _Need:
    cur = state.replicas
    if obs.error is not None:
        return _held(cur, Reason.METRICS_MISSING, f"metrics unavailable: {obs.error}", mem.capacity)
    if state.ready_replicas == 0 and cur > 0:
        return _held(cur, Reason.COLD_START, f"no replica ready yet, {cur} starting", mem.capacity)
    if state.ready_replicas > 0 and obs.pods_reporting == 0:
        return _held(
            cur,
            Reason.METRICS_MISSING,
            f"none of {state.ready_replicas} ready pods reported metrics",
            mem.capacity,
        )
    if obs.sampled_at is None or now - obs.sampled_at > stale_after:
        age = "unknown" if obs.sampled_at is None else f"{now - obs.sampled_at:.0f}s"
        return _held(
            cur,
            Reason.METRICS_STALE,
            f"newest sample is {age} old (limit {stale_after:.0f}s)",
            mem.capacity,
        )

    capacity = max(mem.capacity, obs.running_max)
    engine_waiting = max(0.0, obs.waiting - obs.deferred)
    waiting = engine_waiting + obs.router_pending
    demand = waiting + obs.running
    queue_need = demand / (capacity + pol.target_waiting_per_replica)
    kv_target = pol.target_kv_cache_usage
    kv_need = obs.kv_usage_sum / kv_target if kv_target and obs.kv_pods else 0.0
    need = max(queue_need, kv_need)
    within_tolerance = cur > 0 and abs(need / cur - 1.0) <= TOLERANCE
    rec = cur if within_tolerance else math.ceil(need - 1e-9)

    if rec > cur:
        driver = Reason.KV_CACHE_PRESSURE if kv_need > queue_need else Reason.QUEUE_ABOVE_TARGET
    elif rec < cur:
        idle = demand == 0 and obs.kv_usage_sum == 0
        driver = Reason.IDLE if idle else Reason.LOAD_BELOW_TARGET
    else:
        driver = Reason.STABLE

    parts = [f"waiting {engine_waiting:g}"]
    if obs.router_pending:
        parts.append(f"router pending {obs.router_pending:g}")
    parts.append(f"running {obs.running:g} on {obs.pods_reporting} pods")
    if obs.kv_pods:
        parts.append(f"KV usage {100 * obs.kv_usage_sum / obs.kv_pods:.0f}%")
    detail = (
        f"{', '.join(parts)}; batch ~{capacity:g}/replica, target waiting "
        f"{pol.target_waiting_per_replica}/replica"
        + (f", KV {100 * kv_target:.0f}%" if kv_target else "")
        + f": needs {need:.2f} replicas"
    )

    hold: Reason | None = None
    if obs.pods_reporting < state.ready_replicas or obs.failures:
        # Sums over the pods that answered are lower bounds: good for scaling up, not down.
        hold = Reason.METRICS_PARTIAL
        detail += (
            f" ({obs.pods_reporting}/{state.ready_replicas} pods reported"
            + (f"; {len(obs.failures)} failures" if obs.failures else "")
            + ")"
        )
        rec = max(rec, cur)
    return _Need(rec, driver, hold, need / max(cur, 1), capacity, detail)


def _stabilize(
    pol: PoolPolicy, need: _Need, mem: PoolMemory, current: int, now: float
) -> tuple[int, tuple[Recommendation, ...], Reason | None]:
    """HPA-style damping; returns (stabilized replicas, new history, what blocked a change)."""
    up_w, down_w = pol.scale_up_stabilization_s, pol.scale_down_stabilization_s
    horizon = max(up_w, down_w)
    kept = (r for r in mem.history if 0 <= now - r.at <= horizon)
    history = (*kept, Recommendation(now, need.recommended))
    up = min(r.replicas for r in history if now - r.at <= up_w)
    down = max(r.replicas for r in history if now - r.at <= down_w)
    stabilized = max(current, up)
    stabilized = min(stabilized, down)
    blocked: Reason | None = None
    if stabilized < current:
        since = now if mem.observing_since is None else mem.observing_since
        grew = mem.last_scale_up
        if now - since < down_w or (grew is not None and now - grew < down_w):
            stabilized = current
    if need.recommended < current and stabilized >= current:
        blocked = Reason.SCALE_DOWN_STABILIZING
    elif need.recommended > current and stabilized < need.recommended:
        blocked = Reason.SCALE_UP_STABILIZING
    return stabilized, history, blocked


def _box(pol: PoolPolicy, current: int, target: int, held: bool, repair: bool) -> tuple[int, int]:
    """How far this pool may move this tick; min/max win over steps and holds."""
    if held:
        floor = current
    elif target < current or repair:
        floor = current - pol.max_scale_down_step
    else:
        floor = current  # a pool that wants to keep or grow is never shrunk for the other
    lo = min(max(pol.min_replicas, floor), pol.max_replicas)
    hi = max(min(pol.max_replicas, current + pol.max_scale_up_step), pol.min_replicas)
    return lo, max(hi, lo)


def _reason(
    role: Role,
    pol: PoolPolicy,
    config: PolicyConfig,
    need: _Need,
    blocked: Reason | None,
    stabilized: int,
    target: int,
    final: int,
    state: PoolState,
    pair: tuple[int, int],
) -> tuple[Reason, str]:
    cur = state.replicas
    move = f"{cur} -> {final}" if final != cur else f"keeping {cur}"
    if final != target:
        other = "decode" if role == "prefill" else "prefill"
        budget = config.max_gpus
        used = pair[0] * config.prefill.gpus_per_replica + pair[1] * config.decode.gpus_per_replica
        if final < target and budget is not None and used + pol.gpus_per_replica > budget:
            return Reason.GPU_BUDGET, (
                f"{move}: wants {target} but the pools use {used} of {budget} GPUs "
                f"({pol.gpus_per_replica} per {role} replica); {need.detail}"
            )
        p, d = pair
        return Reason.RATIO_BOUND, (
            f"{move}: wants {target}, adjusted so prefill:decode {p}:{d} stays within "
            f"{config.ratio_min:g}..{config.ratio_max:g} ({other} has more pressure or is "
            f"bounded); {need.detail}"
        )
    if need.hold is not None and final <= cur:
        return need.hold, f"{move}: holding, never scaling down on these metrics; {need.detail}"
    if stabilized > pol.max_replicas and final == pol.max_replicas:
        return Reason.AT_MAX, f"{move}: needs {stabilized}, maxReplicas {pol.max_replicas}; " + (
            need.detail
        )
    if stabilized < pol.min_replicas and final == pol.min_replicas:
        return Reason.AT_MIN, f"{move}: needs {stabilized}, minReplicas {pol.min_replicas}; " + (
            need.detail
        )
    if final > cur:
        step = " (step-limited)" if final < stabilized else ""
        return need.driver, f"{move}{step}: {need.detail}"
    if final < cur:
        step = " (step-limited)" if final > stabilized else ""
        reason = (
            need.driver
            if need.driver in (Reason.IDLE, Reason.LOAD_BELOW_TARGET)
            else (Reason.LOAD_BELOW_TARGET)
        )
        return reason, f"{move}{step} after the stabilization window: {need.detail}"
    if state.ready_replicas < need.recommended <= cur:
        return Reason.COLD_START, (
            f"{move}: {state.starting} starting replicas will absorb the load; {need.detail}"
        )
    if blocked is Reason.SCALE_DOWN_STABILIZING:
        return blocked, (
            f"{move}: load fits {need.recommended}, waiting out the "
            f"{pol.scale_down_stabilization_s:.0f}s scale-down window; {need.detail}"
        )
    if blocked is Reason.SCALE_UP_STABILIZING:
        return blocked, (
            f"{move}: load asks {need.recommended}, waiting out the "
            f"{pol.scale_up_stabilization_s:.0f}s scale-up window; {need.detail}"
        )
    return Reason.STABLE, f"{move}: {need.detail}"


def evaluate(
    config: PolicyConfig,
    states: Mapping[Role, PoolState],
    observations: Mapping[Role, PoolObservation],
    memory: PolicyMemory,
    now: float,
) -> Evaluation:
    """Decide both pools' replicas for this tick (see the module docstring)."""
    needs: dict[Role, _Need] = {}
    stabilized: dict[Role, int] = {}
    histories: dict[Role, tuple[Recommendation, ...]] = {}
    blocked: dict[Role, Reason | None] = {}
    for role in ROLES:
        pol, mem, state = config.pool(role), memory.pool(role), states[role]
        needs[role] = _assess(pol, observations[role], state, mem, now, config.stale_after_s)
        stabilized[role], histories[role], blocked[role] = _stabilize(
            pol, needs[role], mem, state.replicas, now
        )

    cur_p, cur_d = states["prefill"].replicas, states["decode"].replicas
    boxes: dict[Role, PoolBox] = {}
    budget = config.max_gpus
    over_budget = budget is not None and (
        cur_p * config.prefill.gpus_per_replica + cur_d * config.decode.gpus_per_replica > budget
    )
    repair = over_budget or ratio_violation(cur_p, cur_d, config.ratio_min, config.ratio_max) > 0
    for role in ROLES:
        pol, cur = config.pool(role), states[role].replicas
        lo, hi = _box(pol, cur, stabilized[role], needs[role].hold is not None, repair)
        boxes[role] = PoolBox(
            lo=lo,
            hi=hi,
            target=min(max(stabilized[role], lo), hi),
            current=cur,
            gpus_per_replica=pol.gpus_per_replica,
            pressure=needs[role].pressure,
        )
    pair = couple(
        boxes["prefill"],
        boxes["decode"],
        ratio_min=config.ratio_min,
        ratio_max=config.ratio_max,
        max_gpus=budget,
    )

    decisions: dict[Role, PoolDecision] = {}
    mems: dict[Role, PoolMemory] = {}
    for role, final in zip(ROLES, pair, strict=True):
        pol, state, need, mem = config.pool(role), states[role], needs[role], memory.pool(role)
        reason, message = _reason(
            role,
            pol,
            config,
            need,
            blocked[role],
            stabilized[role],
            boxes[role].target,
            final,
            state,
            pair,
        )
        decisions[role] = PoolDecision(
            role=role,
            current=state.replicas,
            ready=state.ready_replicas,
            desired=final,
            recommended=need.recommended,
            reason=reason,
            message=message,
            pressure=need.pressure,
        )
        changed = final != state.replicas
        mems[role] = PoolMemory(
            history=histories[role],
            observing_since=now if mem.observing_since is None else mem.observing_since,
            last_change=now if changed else mem.last_change,
            last_scale_up=now if final > state.replicas else mem.last_scale_up,
            capacity=need.capacity,
        )
    return Evaluation(
        prefill=decisions["prefill"],
        decode=decisions["decode"],
        memory=PolicyMemory(prefill=mems["prefill"], decode=mems["decode"]),
    )
