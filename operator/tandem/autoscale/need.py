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
from tandem.autoscale.reasons import Reason
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
    driver: Reason
    hold: Reason | None
    pressure: float
    capacity: float
    detail: str
    rates: RateMemory


def held(current: int, reason: Reason, detail: str, mem: PoolMemory) -> Need:
    return Need(current, reason, reason, 1.0, mem.capacity, detail, mem.rates)


def assess(
    pol: PoolPolicy,
    obs: PoolObservation,
    state: PoolState,
    mem: PoolMemory,
    now: float,
    stale_after: float,
) -> Need:
    cur = state.replicas
    if obs.error is not None:
        return held(cur, Reason.METRICS_MISSING, f"metrics unavailable: {obs.error}", mem)
    if state.ready_replicas == 0 and cur > 0:
        return held(cur, Reason.COLD_START, f"no replica ready yet, {cur} starting", mem)
    if state.ready_replicas > 0 and obs.pods_reporting == 0:
        return held(
            cur,
            Reason.METRICS_MISSING,
            f"none of {state.ready_replicas} ready pods reported metrics",
            mem,
        )
    if obs.sampled_at is None or now - obs.sampled_at > stale_after:
        age = "unknown" if obs.sampled_at is None else f"{now - obs.sampled_at:.0f}s"
        return held(
            cur,
            Reason.METRICS_STALE,
            f"newest sample is {age} old (limit {stale_after:.0f}s)",
            mem,
        )

    capacity = max(mem.capacity, obs.running_max)
    engine_waiting = max(0.0, obs.waiting - obs.deferred)
    waiting = engine_waiting + obs.router_pending
    demand = waiting + obs.running
    kv_target = pol.target_kv_cache_usage
    kv_sum = obs.kv_usage_sum if obs.kv_pods else 0.0
    # Replicas at the scale-up thresholds (a full batch plus the target queue; the KV target).
    target = pol.target_waiting_per_replica
    queue_need = demand / (capacity + target)
    kv_need = kv_sum / kv_target if kv_target else 0.0
    need = max(queue_need, kv_need)
    partial = obs.pods_reporting < state.ready_replicas or bool(obs.failures)
    # Sums over some of the pods would skew throughput, and the next complete tick would read
    # the jump as arrivals: learn nothing, and make the next tick start a fresh difference.
    rates = (
        replace(mem.rates, at=None)
        if partial
        else update(mem.rates, obs, demand, now, saturated_at=target)
    )
    arrival, service = rates.arrival(), rates.service
    rate_note, rising, keep_rate = "", False, 0
    if arrival is not None and service:
        forecast = rates.forecast(HORIZON_S) or arrival
        shrinking = mem.rates.at is not None and demand < mem.rates.demand
        if state.starting > 0 or shrinking:
            # A transient backlog (replicas still starting, or the queue already draining) is
            # not a rate: serve the arrivals and clear the excess queue within HORIZON_S, no
            # more. A steady queue above target is still answered by queue_need.
            excess = max(0.0, waiting - target * cur)
            need = min(need, (arrival + excess / HORIZON_S) / service)
        # Arrivals that already saturate the pool ask for replicas before its queue shows it.
        rising = arrival / service > need
        need = max(need, arrival / service)
        # Never shrink below what serves the arrivals expected one cold start ahead at
        # RATE_UTILISATION: a rising rate blocks the scale-down a window of calm allowed (the
        # trend is not used to scale up: a burst's onset would extrapolate far past it).
        keep_rate = math.ceil(forecast / (service * RATE_UTILISATION) - 1e-9)
        rate_note = (
            f"; arrivals {arrival:.1f}/s ({forecast:.1f}/s in {HORIZON_S:.0f}s), "
            f"{service:.1f}/s per saturated replica"
        )
    # Replicas that keep every one at or below HEADROOM of those thresholds: the only count a
    # scale-down may go to, because the remaining replicas slow down as their batches grow.
    keep_queue = demand / (capacity * HEADROOM) if capacity > 0 else queue_need
    keep_kv = kv_sum / (kv_target * HEADROOM) if kv_target else 0.0
    keep = max(math.ceil(max(keep_queue, keep_kv) - 1e-9), keep_rate)
    up = math.ceil(need - 1e-9)
    grows = up > cur and not (cur > 0 and need <= cur * (1.0 + TOLERANCE))
    rec = up if grows else min(cur, keep)

    if rec > cur and rising:
        driver = Reason.ARRIVALS_RISING
    elif rec > cur:
        driver = Reason.KV_CACHE_PRESSURE if kv_need > queue_need else Reason.QUEUE_ABOVE_TARGET
    elif rec < cur:
        idle = demand == 0 and kv_sum == 0
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
        + rate_note
        + f": needs {need:.2f} replicas, {keep} at {HEADROOM:.0%} headroom"
    )

    hold: Reason | None = None
    if partial:
        # Sums over the pods that answered are lower bounds: good for scaling up, not down.
        hold = Reason.METRICS_PARTIAL
        detail += (
            f" ({obs.pods_reporting}/{state.ready_replicas} pods reported"
            + (f"; {len(obs.failures)} failures" if obs.failures else "")
            + ")"
        )
        rec = max(rec, cur)
    return Need(rec, driver, hold, need / max(cur, 1), capacity, detail, rates)
