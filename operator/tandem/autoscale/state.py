"""What the policy reads about a workload and what it carries between ticks. Pure.

The policy is a function; the actuator keeps :class:`PolicyMemory` between ticks (one per
InferenceService) and hands it back. Losing it (an operator restart) is safe: an empty memory
forbids scale-down for a full stabilization window and re-learns batch size and rates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tandem.api.vocabulary import Role
from tandem.autoscale.rates import RateMemory


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
    rates: RateMemory = field(default_factory=RateMemory)


@dataclass(frozen=True)
class PolicyMemory:
    prefill: PoolMemory = field(default_factory=PoolMemory)
    decode: PoolMemory = field(default_factory=PoolMemory)

    def pool(self, role: Role) -> PoolMemory:
        return self.prefill if role is Role.PREFILL else self.decode
