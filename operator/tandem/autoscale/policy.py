"""The scaling policy: queue signals in, desired replicas per pool out. Pure.

Every ``interval`` the actuator hands this module what each pool looks like (replicas, ready
replicas, one :class:`~tandem.autoscale.observation.PoolObservation`) plus the
:class:`PolicyMemory` it got back last time, and gets an :class:`Evaluation`: one
:class:`PoolDecision` per pool (desired replicas, a one-word CamelCase :class:`ScaleReason`, a human
message) and the memory to keep for the next tick. Nothing here reads a clock or does I/O, so the
simulator (bench/autoscale_sim.py) runs the very same code against modelled metrics.

How one pool's need is computed (:mod:`tandem.autoscale.need`):

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
- Learnt rates (:mod:`tandem.autoscale.rates`, from ``vllm:request_success_total``): the
  arrival rate, its trend, and the service rate of one saturated replica. They add three rules
  once a pool has been saturated once (before that, queue and KV alone decide):
  arrivals that already saturate the pool (arrival / service > need) scale it before a queue
  forms (``ArrivalRateRising``); a transient backlog (replicas still starting, or the queue
  already shrinking) asks only for (arrivals + excess queue / 60 s) / service, not for a
  replica per queued batch, which is what "replicas still starting absorb load" means in
  numbers; and a scale-down never goes below what serves the arrivals expected one cold start
  ahead (a rising trend extrapolated ``HORIZON_S``) at ``RATE_UTILISATION``.
- The need triggers a scale-up when above the current replicas by more than 10% (HPA's default
  tolerance). A scale-down goes only to the count that keeps every replica at or below half of
  both thresholds (``HEADROOM``) and serves the expected arrivals: between the two the pool
  stays put. The band is what stops oscillation: a replica's step time grows with its batch,
  so the load left on fewer replicas grows faster than linearly.
- Replicas still starting count as capacity: the need is compared with *all* replicas, so load
  that starting replicas will absorb does not add more (reason ``ColdStartInProgress``).
- Missing, stale or partial metrics HOLD: the recommendation is never below the current
  replicas (partial sums are lower bounds, so a scale-up they justify still happens).

The constants (in :mod:`tandem.autoscale.need`) come from cited figures and were checked in the
simulator; the measurements behind each are in bench/README-autoscale.md.

Damping (``_stabilize``) is the HPA's: scale-up takes the lowest recommendation over its window
(default 0 s: at once), scale-down the highest over its window (default 300 s); in addition a
scale-down needs a full window of evidence since the autoscaler started watching and since this
pool last grew, so an operator restart or a ratio-driven raise cannot cause an early shrink.

Bounds and couplings (``_box`` and :mod:`tandem.autoscale.coupling`): per-decision step limits,
min/max (which win over everything else, they are the user's explicit intent), then the
prefill:decode ratio and the GPU budget chosen jointly for both pools.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tandem.api.vocabulary import ROLES, Role
from tandem.autoscale.config import PolicyConfig, PoolPolicy
from tandem.autoscale.coupling import PoolBox, couple, ratio_violation
from tandem.autoscale.need import Need, assess
from tandem.autoscale.observation import PoolObservation
from tandem.autoscale.reasons import HOLD_REASONS, ScaleReason
from tandem.autoscale.state import PolicyMemory, PoolMemory, PoolState, Recommendation

__all__ = [
    "HOLD_REASONS",
    "Evaluation",
    "PolicyMemory",
    "PoolDecision",
    "PoolMemory",
    "PoolState",
    "Recommendation",
    "ScaleReason",
    "evaluate",
]


@dataclass(frozen=True)
class PoolDecision:
    role: Role
    current: int
    ready: int
    desired: int
    recommended: int  # what the load alone asked for, before damping and bounds
    reason: ScaleReason
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
        return self.prefill if role is Role.PREFILL else self.decode

    @property
    def decisions(self) -> tuple[PoolDecision, PoolDecision]:
        return (self.prefill, self.decode)


def _early_shrink(pol: PoolPolicy, mem: PoolMemory, now: float) -> bool:
    """A scale-down needs a full window of evidence since watching began and since the pool grew."""
    down_w = pol.scale_down_stabilization_s
    since = now if mem.observing_since is None else mem.observing_since
    grew = mem.last_scale_up
    return now - since < down_w or (grew is not None and now - grew < down_w)


def _stabilize(
    pol: PoolPolicy, need: Need, mem: PoolMemory, current: int, now: float
) -> tuple[int, tuple[Recommendation, ...], ScaleReason | None]:
    """HPA-style damping; returns (stabilized replicas, new history, what blocked a change)."""
    up_w, down_w = pol.scale_up_stabilization_s, pol.scale_down_stabilization_s
    horizon = max(up_w, down_w)
    kept = (r for r in mem.history if 0 <= now - r.at <= horizon)
    history = (*kept, Recommendation(now, need.recommended))
    up = min(r.replicas for r in history if now - r.at <= up_w)
    down = max(r.replicas for r in history if now - r.at <= down_w)
    stabilized = min(max(current, up), down)
    if stabilized < current and _early_shrink(pol, mem, now):
        stabilized = current
    blocked: ScaleReason | None = None
    if need.recommended < current and stabilized >= current:
        blocked = ScaleReason.SCALE_DOWN_STABILIZING
    elif need.recommended > current and stabilized < need.recommended:
        blocked = ScaleReason.SCALE_UP_STABILIZING
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


@dataclass(frozen=True)
class PoolContext:
    """Everything that explains one pool's final replicas (the input of the reason rules)."""

    role: Role
    pol: PoolPolicy
    config: PolicyConfig
    need: Need
    state: PoolState
    blocked: ScaleReason | None
    stabilized: int  # after damping, before bounds
    target: int  # after this pool's bounds, before the couplings
    final: int  # after the couplings
    pair: tuple[int, int]  # both pools' final replicas (prefill, decode)

    @property
    def cur(self) -> int:
        return self.state.replicas

    @property
    def move(self) -> str:
        return f"{self.cur} -> {self.final}" if self.final != self.cur else f"keeping {self.cur}"


Explained = tuple[ScaleReason, str]


def _coupled(c: PoolContext) -> Explained | None:
    """The couplings moved the pool off its own target: the GPU budget or the ratio."""
    if c.final == c.target:
        return None
    config, pol = c.config, c.pol
    budget = config.max_gpus
    p, d = c.pair
    used = p * config.prefill.gpus_per_replica + d * config.decode.gpus_per_replica
    if c.final < c.target and budget is not None and used + pol.gpus_per_replica > budget:
        return ScaleReason.GPU_BUDGET, (
            f"{c.move}: wants {c.target} but the pools use {used} of {budget} GPUs "
            f"({pol.gpus_per_replica} per {c.role} replica); {c.need.detail}"
        )
    other = Role.DECODE if c.role is Role.PREFILL else Role.PREFILL
    return ScaleReason.RATIO_BOUND, (
        f"{c.move}: wants {c.target}, adjusted so prefill:decode {p}:{d} stays within "
        f"{config.ratio_min:g}..{config.ratio_max:g} ({other} has more pressure or is "
        f"bounded); {c.need.detail}"
    )


def _held(c: PoolContext) -> Explained | None:
    if c.need.hold is None or c.final > c.cur:
        return None
    return c.need.hold, f"{c.move}: holding, never scaling down on these metrics; {c.need.detail}"


def _bounded(c: PoolContext) -> Explained | None:
    """min/maxReplicas cut what the load asked for."""
    pol = c.pol
    if c.stabilized > pol.max_replicas and c.final == pol.max_replicas:
        return ScaleReason.AT_MAX, (
            f"{c.move}: needs {c.stabilized}, maxReplicas {pol.max_replicas}; {c.need.detail}"
        )
    if c.stabilized < pol.min_replicas and c.final == pol.min_replicas:
        return ScaleReason.AT_MIN, (
            f"{c.move}: needs {c.stabilized}, minReplicas {pol.min_replicas}; {c.need.detail}"
        )
    return None


def _moved(c: PoolContext) -> Explained | None:
    """The load moved the pool (a step limit may have cut the move short)."""
    if c.final > c.cur:
        step = " (step-limited)" if c.final < c.stabilized else ""
        return c.need.driver, f"{c.move}{step}: {c.need.detail}"
    if c.final < c.cur:
        step = " (step-limited)" if c.final > c.stabilized else ""
        down = (ScaleReason.IDLE, ScaleReason.LOAD_BELOW_TARGET)
        reason = c.need.driver if c.need.driver in down else ScaleReason.LOAD_BELOW_TARGET
        return reason, f"{c.move}{step} after the stabilization window: {c.need.detail}"
    return None


def _cold_start(c: PoolContext) -> Explained | None:
    if not c.state.ready_replicas < c.need.recommended <= c.cur:
        return None
    return ScaleReason.COLD_START, (
        f"{c.move}: {c.state.starting} starting replicas will absorb the load; {c.need.detail}"
    )


def _stabilizing(c: PoolContext) -> Explained | None:
    """A stabilization window holds back the change the load asks for."""
    if c.blocked is ScaleReason.SCALE_DOWN_STABILIZING:
        return c.blocked, (
            f"{c.move}: load fits {c.need.recommended}, waiting out the "
            f"{c.pol.scale_down_stabilization_s:.0f}s scale-down window; {c.need.detail}"
        )
    if c.blocked is ScaleReason.SCALE_UP_STABILIZING:
        return c.blocked, (
            f"{c.move}: load asks {c.need.recommended}, waiting out the "
            f"{c.pol.scale_up_stabilization_s:.0f}s scale-up window; {c.need.detail}"
        )
    return None


# The first rule that explains the pool wins; a pool none of them explains is Stable.
REASON_RULES: tuple[Callable[[PoolContext], Explained | None], ...] = (
    _coupled,
    _held,
    _bounded,
    _moved,
    _cold_start,
    _stabilizing,
)


def _reason(c: PoolContext) -> Explained:
    for rule in REASON_RULES:
        found = rule(c)
        if found is not None:
            return found
    return ScaleReason.STABLE, f"{c.move}: {c.need.detail}"


def evaluate(
    config: PolicyConfig,
    states: Mapping[Role, PoolState],
    observations: Mapping[Role, PoolObservation],
    memory: PolicyMemory,
    now: float,
) -> Evaluation:
    """Decide both pools' replicas for this tick (see the module docstring)."""
    needs: dict[Role, Need] = {}
    stabilized: dict[Role, int] = {}
    histories: dict[Role, tuple[Recommendation, ...]] = {}
    blocked: dict[Role, ScaleReason | None] = {}
    for role in ROLES:
        pol, mem, state = config.pool(role), memory.pool(role), states[role]
        needs[role] = assess(pol, observations[role], state, mem, now, config.stale_after_s)
        stabilized[role], histories[role], blocked[role] = _stabilize(
            pol, needs[role], mem, state.replicas, now
        )

    cur_p, cur_d = states[Role.PREFILL].replicas, states[Role.DECODE].replicas
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
        boxes[Role.PREFILL],
        boxes[Role.DECODE],
        ratio_min=config.ratio_min,
        ratio_max=config.ratio_max,
        max_gpus=budget,
    )

    decisions: dict[Role, PoolDecision] = {}
    mems: dict[Role, PoolMemory] = {}
    for role, final in zip(ROLES, pair, strict=True):
        pol, state, need, mem = config.pool(role), states[role], needs[role], memory.pool(role)
        reason, message = _reason(
            PoolContext(
                role=role,
                pol=pol,
                config=config,
                need=need,
                state=state,
                blocked=blocked[role],
                stabilized=stabilized[role],
                target=boxes[role].target,
                final=final,
                pair=pair,
            )
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
            rates=need.rates,
        )
    return Evaluation(
        prefill=decisions[Role.PREFILL],
        decode=decisions[Role.DECODE],
        memory=PolicyMemory(prefill=mems[Role.PREFILL], decode=mems[Role.DECODE]),
    )
