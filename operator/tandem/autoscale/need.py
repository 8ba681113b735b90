"""One pool's need in replicas, from its signals alone. Pure.

See :mod:`tandem.autoscale.policy` for the rules in prose; this module is their arithmetic:
queue and KV thresholds, the learnt batch size and rates, the scale-down band, and the holds on
missing, stale or partial metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from tandem.autoscale.config import PoolPolicy
from tandem.autoscale.observation import PoolObservation
from tandem.autoscale.rates import RateMemory, update
from tandem.autoscale.reasons import ScaleReason
from tandem.autoscale.state import PoolMemory, PoolState

# HPA's default --horizontal-pod-autoscaler-tolerance: a need within 10% of the current
# replicas is treated as met.
TOLERANCE = 0.1
# Scale down only to a count whose replicas stay at or below half of the scale-up thresholds.
# Step time grows with batch size, so the load left on fewer replicas grows faster than
# linearly; without a band the policy scales into overload and back (seen in
# bench/autoscale_sim.py). llm-d's SLO-aware loop uses a 0.40-0.55 band (performance.md 3.1).
HEADROOM = 0.5
# About one engine cold start (~60 s to first response for an 8B model, performance.md 3.2):
# how far ahead rising arrivals are extrapolated, and how soon a queue beyond the target
# should be gone.
HORIZON_S = 60.0
# The busiest a scale-down may leave the pool by arrival rate. Unlike occupancy, utilisation is
# linear in the replica count, so it needs no wide band: 0.8 keeps an M/D/1 queue under two
# waiting requests per replica (rho^2 / 2(1 - rho) = 1.6).
RATE_UTILISATION = 0.8


@dataclass(frozen=True)
class Need:
    recommended: int
    driver: ScaleReason
    hold: ScaleReason | None
    pressure: float
    capacity: float
    detail: str
    rates: RateMemory


def held(current: int, reason: ScaleReason, detail: str, mem: PoolMemory) -> Need:
    return Need(current, reason, reason, 1.0, mem.capacity, detail, mem.rates)


@dataclass(frozen=True)
class Load:
    """One tick's signals of a pool, reduced to the quantities the rules compare."""

    capacity: float  # learnt batch size of one replica
    engine_waiting: float  # waiting minus deferred
    waiting: float  # engine waiting plus the router's pending prefills
    demand: float  # waiting plus running
    target: int  # target waiting per replica
    kv_target: float | None
    kv_sum: float
    queue_need: float  # replicas at the queue threshold (a full batch plus the target queue)
    kv_need: float  # replicas at the KV-usage threshold


@dataclass(frozen=True)
class RateNeed:
    """What the learnt rates add: a need, whether arrivals drive it, a scale-down floor."""

    need: float
    rising: bool = False
    keep: int = 0
    note: str = ""


def _guard(
    obs: PoolObservation, state: PoolState, mem: PoolMemory, now: float, stale_after: float
) -> Need | None:
    """A hold when the metrics cannot be trusted (or nothing is ready yet), else None."""
    cur = state.replicas
    if obs.error is not None:
        return held(cur, ScaleReason.METRICS_MISSING, f"metrics unavailable: {obs.error}", mem)
    if state.ready_replicas == 0 and cur > 0:
        return held(cur, ScaleReason.COLD_START, f"no replica ready yet, {cur} starting", mem)
    if state.ready_replicas > 0 and obs.pods_reporting == 0:
        return held(
            cur,
            ScaleReason.METRICS_MISSING,
            f"none of {state.ready_replicas} ready pods reported metrics",
            mem,
        )
    if obs.sampled_at is None or now - obs.sampled_at > stale_after:
        age = "unknown" if obs.sampled_at is None else f"{now - obs.sampled_at:.0f}s"
        return held(
            cur,
            ScaleReason.METRICS_STALE,
            f"newest sample is {age} old (limit {stale_after:.0f}s)",
            mem,
        )
    return None


def _load(pol: PoolPolicy, obs: PoolObservation, mem: PoolMemory) -> Load:
    capacity = max(mem.capacity, obs.running_max)
    engine_waiting = max(0.0, obs.waiting - obs.deferred)
    waiting = engine_waiting + obs.router_pending
    demand = waiting + obs.running
    kv_target = pol.target_kv_cache_usage
    kv_sum = obs.kv_usage_sum if obs.kv_pods else 0.0
    target = pol.target_waiting_per_replica
    return Load(
        capacity=capacity,
        engine_waiting=engine_waiting,
        waiting=waiting,
        demand=demand,
        target=target,
        kv_target=kv_target,
        kv_sum=kv_sum,
        queue_need=demand / (capacity + target),
        kv_need=kv_sum / kv_target if kv_target else 0.0,
    )


def _rate_need(
    load: Load, rates: RateMemory, mem: PoolMemory, state: PoolState, need: float
) -> RateNeed:
    """The queue/KV ``need`` corrected by the learnt arrival and service rates, if known."""
    arrival, service = rates.arrival(), rates.service
    if arrival is None or not service:
        return RateNeed(need)
    forecast = rates.forecast(HORIZON_S) or arrival
    shrinking = mem.rates.at is not None and load.demand < mem.rates.demand
    if state.starting > 0 or shrinking:
        # A transient backlog (replicas still starting, or the queue already draining) is not a
        # rate: serve the arrivals and clear the excess queue within HORIZON_S, no more. A
        # steady queue above target is still answered by queue_need.
        excess = max(0.0, load.waiting - load.target * state.replicas)
        need = min(need, (arrival + excess / HORIZON_S) / service)
    # Arrivals that already saturate the pool ask for replicas before its queue shows it.
    rising = arrival / service > need
    need = max(need, arrival / service)
    # Never shrink below what serves the arrivals expected one cold start ahead at
    # RATE_UTILISATION: a rising rate blocks the scale-down a window of calm allowed (the trend
    # is not used to scale up: a burst's onset would extrapolate far past it).
    keep = math.ceil(forecast / (service * RATE_UTILISATION) - 1e-9)
    note = (
        f"; arrivals {arrival:.1f}/s ({forecast:.1f}/s in {HORIZON_S:.0f}s), "
        f"{service:.1f}/s per saturated replica"
    )
    return RateNeed(need, rising, keep, note)


def _keep(load: Load, keep_rate: int) -> int:
    """Replicas that keep every one at or below HEADROOM of the thresholds: the only count a
    scale-down may go to, because the remaining replicas slow down as their batches grow."""
    keep_queue = load.demand / (load.capacity * HEADROOM) if load.capacity > 0 else load.queue_need
    keep_kv = load.kv_sum / (load.kv_target * HEADROOM) if load.kv_target else 0.0
    return max(math.ceil(max(keep_queue, keep_kv) - 1e-9), keep_rate)


def _driver(rec: int, cur: int, rising: bool, load: Load) -> ScaleReason:
    if rec > cur and rising:
        return ScaleReason.ARRIVALS_RISING
    if rec > cur:
        if load.kv_need > load.queue_need:
            return ScaleReason.KV_CACHE_PRESSURE
        return ScaleReason.QUEUE_ABOVE_TARGET
    if rec < cur:
        idle = load.demand == 0 and load.kv_sum == 0
        return ScaleReason.IDLE if idle else ScaleReason.LOAD_BELOW_TARGET
    return ScaleReason.STABLE


def _detail(obs: PoolObservation, load: Load, rate_note: str, need: float, keep: int) -> str:
    """The explanation that goes into the decision's message."""
    parts = [f"waiting {load.engine_waiting:g}"]
    if obs.router_pending:
        parts.append(f"router pending {obs.router_pending:g}")
    parts.append(f"running {obs.running:g} on {obs.pods_reporting} pods")
    if obs.kv_pods:
        parts.append(f"KV usage {100 * obs.kv_usage_sum / obs.kv_pods:.0f}%")
    kv = f", KV {100 * load.kv_target:.0f}%" if load.kv_target else ""
    return (
        f"{', '.join(parts)}; batch ~{load.capacity:g}/replica, target waiting "
        f"{load.target}/replica{kv}{rate_note}"
        f": needs {need:.2f} replicas, {keep} at {HEADROOM:.0%} headroom"
    )


def _partial_note(obs: PoolObservation, state: PoolState) -> str:
    failures = f"; {len(obs.failures)} failures" if obs.failures else ""
    return f" ({obs.pods_reporting}/{state.ready_replicas} pods reported{failures})"


def assess(
    pol: PoolPolicy,
    obs: PoolObservation,
    state: PoolState,
    mem: PoolMemory,
    now: float,
    stale_after: float,
) -> Need:
    """One pool's need: guards (:func:`_guard`), then the arithmetic, then the explanation."""
    guarded = _guard(obs, state, mem, now, stale_after)
    if guarded is not None:
        return guarded
    cur = state.replicas
    load = _load(pol, obs, mem)
    partial = obs.pods_reporting < state.ready_replicas or bool(obs.failures)
    # Sums over some of the pods would skew throughput, and the next complete tick would read
    # the jump as arrivals: learn nothing, and make the next tick start a fresh difference.
    rates = (
        replace(mem.rates, at=None)
        if partial
        else update(mem.rates, obs, load.demand, now, saturated_at=load.target)
    )
    by_rate = _rate_need(load, rates, mem, state, max(load.queue_need, load.kv_need))
    need = by_rate.need
    keep = _keep(load, by_rate.keep)
    up = math.ceil(need - 1e-9)
    grows = up > cur and not (cur > 0 and need <= cur * (1.0 + TOLERANCE))
    rec = up if grows else min(cur, keep)
    driver = _driver(rec, cur, by_rate.rising, load)
    detail = _detail(obs, load, by_rate.note, need, keep)
    hold: ScaleReason | None = None
    if partial:
        # Sums over the pods that answered are lower bounds: good for scaling up, not down.
        hold = ScaleReason.METRICS_PARTIAL
        detail += _partial_note(obs, state)
        rec = max(rec, cur)
    return Need(rec, driver, hold, need / max(cur, 1), load.capacity, detail, rates)
