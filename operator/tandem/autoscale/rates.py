"""Arrival and service rates of a pool, from vLLM's request counter between ticks. Pure.

Queue length alone cannot tell a backlog from a rate, nor see a ramp coming: after a load step
the queue keeps growing for the whole cold start of the replicas already on their way (about a
minute for an 8B model, performance.md 3.2), so sizing on it overshoots; and on a rising ramp
the queue appears one cold start too late. bench/autoscale_sim.py showed both. So:

- throughput = requests completed per second over the pods seen in consecutive ticks
  (``vllm:request_success_total``; a prefill hand-off request counts when its token is sampled);
- arrival rate = throughput + growth of the pool's in-flight demand per second, one raw
  estimate per tick, kept for ``WINDOW_S``; a least-squares line through them gives the current
  rate and its trend, far less noisy than consecutive differences;
- service rate = completions per second of one replica while its queue is at least the target
  deep (saturated), exponentially averaged.

All are learnt from the engines' own counters, never configured: no offline profiling
(notes/anchors.md gap 3). Until a pool has been saturated once its service rate is unknown and
the policy falls back to queue length alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from tandem.autoscale.observation import PoolObservation

# Weight of the newest service-rate estimate in its exponential average.
ALPHA = 0.5
# Ticks further apart than this (missed ticks, held metrics) do not make a rate.
MAX_GAP_S = 120.0
# Arrival estimates kept for the trend line.
WINDOW_S = 60.0


@dataclass(frozen=True)
class RateMemory:
    at: float | None = None
    demand: float = 0.0
    completed: tuple[tuple[str, float], ...] = ()
    arrivals: tuple[tuple[float, float], ...] = ()  # (time, raw arrival-rate estimate)
    service: float | None = None  # requests per second one saturated replica completes

    def arrival(self) -> float | None:
        """Arrival rate now (the trend line's value at the newest estimate)."""
        line = self._line()
        return None if line is None else max(0.0, line[0])

    def trend(self) -> float:
        """Change of the arrival rate per second (0 until there are three estimates)."""
        line = self._line()
        return 0.0 if line is None else line[1]

    def forecast(self, ahead: float) -> float | None:
        """Arrivals ``ahead`` seconds from now if they keep rising; never below the rate now.

        Only a rising trend is extrapolated: a falling one must not bring a scale-down forward.
        """
        now = self.arrival()
        return None if now is None else now + max(0.0, self.trend()) * ahead

    def _line(self) -> tuple[float, float] | None:
        pts = self.arrivals
        if not pts:
            return None
        if len(pts) < 3:
            return pts[-1][1], 0.0
        n = len(pts)
        mt = sum(t for t, _ in pts) / n
        mv = sum(v for _, v in pts) / n
        var = sum((t - mt) ** 2 for t, _ in pts)
        slope = sum((t - mt) * (v - mv) for t, v in pts) / var if var > 0 else 0.0
        return mv + slope * (pts[-1][0] - mt), slope


def _deltas(
    previous: tuple[tuple[str, float], ...], counters: dict[str, float]
) -> dict[str, float]:
    """Completions per pod since the last tick, for pods in both ticks whose counter did not
    reset (a restarted engine starts from zero)."""
    prev = dict(previous)
    return {pod: c - prev[pod] for pod, c in counters.items() if pod in prev and c >= prev[pod]}


def _service(
    service: float | None,
    obs: PoolObservation,
    deltas: dict[str, float],
    dt: float,
    saturated_at: float,
) -> float | None:
    """The service-rate average, updated with the pods that were saturated this tick."""
    busy = [
        deltas[p.pod] / dt
        for p in obs.pods
        if p.pod in deltas and p.waiting - p.deferred >= saturated_at
    ]
    if busy:
        rate = sum(busy) / len(busy)
        service = rate if service is None else service + ALPHA * (rate - service)
    return service if service else None


def update(
    mem: RateMemory, obs: PoolObservation, demand: float, now: float, saturated_at: float
) -> RateMemory:
    """New estimates after one observation; ``saturated_at`` is the per-pod queue that counts
    as saturated (the pool's target waiting per replica)."""
    counters = {p.pod: p.completed for p in obs.pods if p.completed is not None}
    kept = tuple((t, v) for t, v in mem.arrivals if now - t < WINDOW_S)
    fresh = RateMemory(
        at=now,
        demand=demand,
        completed=tuple(sorted(counters.items())),
        arrivals=kept,
        service=mem.service,
    )
    if mem.at is None or not counters or not 0 < now - mem.at <= MAX_GAP_S:
        return fresh
    dt = now - mem.at
    deltas = _deltas(mem.completed, counters)
    if not deltas:
        return fresh
    # Pods that appeared since the last tick served too; assume they served like the others.
    throughput = sum(deltas.values()) / dt * len(counters) / len(deltas)
    arrival = max(0.0, throughput + (demand - mem.demand) / dt)
    return RateMemory(
        at=now,
        demand=demand,
        completed=fresh.completed,
        arrivals=(*kept, (now, arrival)),
        service=_service(mem.service, obs, deltas, dt, saturated_at),
    )
