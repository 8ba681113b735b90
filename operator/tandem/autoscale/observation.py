"""What a metric source saw of one pool in one tick: the type shared by sources and policy.

Sources (direct scrape, Prometheus, the simulator) all reduce to :class:`PoolObservation`, so the
policy never knows where numbers came from. Failures are values, not exceptions: a source that
could not read anything returns an observation with ``error`` set, and one that read only some
pods lists the rest in ``failures``; the policy holds (never scales down) in both cases.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tandem.api.vocabulary import Role


@dataclass(frozen=True)
class PodSample:
    """One engine pod's queue gauges (summed over its engines; KV usage averaged)."""

    pod: str
    waiting: float
    running: float
    kv_usage: float | None = None
    # Part of ``waiting`` that waits on something other than compute (KV transfer, LoRA):
    # vllm:num_requests_waiting_by_reason{reason="deferred"}. On NIXL decoders in-flight pulls
    # land here, and more replicas would not make them finish sooner.
    deferred: float = 0.0
    # vllm:request_success_total: requests finished since the engine started (a counter).
    completed: float | None = None


@dataclass(frozen=True)
class PoolObservation:
    """Aggregated signals of one pool; ``sampled_at`` is unix seconds of the oldest sample."""

    role: Role
    sampled_at: float | None
    pods: tuple[PodSample, ...] = ()
    # Requests the router holds for a prefill engine (tandem_router_queue_depth{role="prefill"}).
    router_pending: float = 0.0
    # Whole-source failure: nothing usable was read.
    error: str | None = None
    # Per-target failures (a pod or a router that did not answer); the rest is still usable.
    failures: tuple[str, ...] = ()

    @property
    def pods_reporting(self) -> int:
        return len(self.pods)

    @property
    def waiting(self) -> float:
        return sum(p.waiting for p in self.pods)

    @property
    def deferred(self) -> float:
        return sum(min(p.deferred, p.waiting) for p in self.pods)

    @property
    def running(self) -> float:
        return sum(p.running for p in self.pods)

    @property
    def running_max(self) -> float:
        """Most requests running on one pod: a lower bound on a replica's batch capacity."""
        return max((p.running for p in self.pods), default=0.0)

    @property
    def kv_usage_sum(self) -> float:
        return sum(p.kv_usage for p in self.pods if p.kv_usage is not None)

    @property
    def kv_pods(self) -> int:
        return sum(1 for p in self.pods if p.kv_usage is not None)

    @property
    def kv_usage_mean(self) -> float | None:
        n = self.kv_pods
        return self.kv_usage_sum / n if n else None


def missing(role: Role, error: str) -> PoolObservation:
    """An observation that carries only the reason nothing could be read."""
    return PoolObservation(role=role, sampled_at=None, error=error)


def observe(
    role: Role,
    samples: Iterable[PodSample],
    sampled_at: float | None,
    *,
    router_pending: float = 0.0,
    failures: Iterable[str] = (),
) -> PoolObservation:
    """Build an observation from per-pod samples."""
    return PoolObservation(
        role=role,
        sampled_at=sampled_at,
        pods=tuple(samples),
        router_pending=router_pending,
        failures=tuple(failures),
    )
