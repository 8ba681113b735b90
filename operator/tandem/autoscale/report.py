"""What the autoscaler tells the rest of the operator: one tick's report, and the newest change
and recommendation per pool. Pure values (no I/O), so status can fold them in without importing
the actuator.

The operator keeps one :class:`AutoscalerReport` per InferenceService in memory. Status is the
durable store: after a restart the report is gone, and status keeps what it last recorded
(``lastScale``, ``recommendation``, ``status.autoscaling``, the ``Autoscaling`` condition) until
the next tick.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tandem.api.vocabulary import Role
from tandem.autoscale.observation import PoolObservation
from tandem.autoscale.policy import Evaluation, PoolDecision


@dataclass(frozen=True)
class TickReport:
    """What one tick saw and did: the decisions, what was scaled, and what failed."""

    evaluation: Evaluation | None  # None: the pools could not be read, nothing was decided
    observations: Mapping[Role, PoolObservation] = field(default_factory=dict)
    scaled: Mapping[Role, tuple[int, int]] = field(default_factory=dict)  # role -> (from, to)
    errors: tuple[str, ...] = ()
    at: float = 0.0  # unix time of the tick
    source: str = ""  # kind of metric source ("scrape", "prometheus")
    # Every change the policy asked for, applied or not (Shadow applies none): role -> (from, to).
    recommended: Mapping[Role, tuple[int, int]] = field(default_factory=dict)
    shadow: bool = False  # spec.autoscaling.mode Shadow: nothing was written

    @property
    def mode(self) -> str:
        return "Shadow" if self.shadow else "Active"

    @property
    def error(self) -> str | None:
        """Every failure of the tick in one line (``status.autoscaling.lastError``), or None."""
        errors = [*self.errors]
        errors += [f"{role}: {o.error}" for role, o in self.observations.items() if o.error]
        return "; ".join(errors) or None

    @property
    def decisions(self) -> dict[Role, PoolDecision]:
        ev = self.evaluation
        return {} if ev is None else {d.role: d for d in ev.decisions}


@dataclass(frozen=True)
class Scale:
    """One change the autoscaler applied to a pool."""

    at: float
    from_: int
    to: int
    reason: str


@dataclass(frozen=True)
class Inputs:
    """One pool as the policy saw it: the inputs behind a recommendation (rounded, for status)."""

    replicas: int
    ready: int
    pods: int  # engine pods whose metrics were read
    waiting: float  # engine waiting plus the router's pending prefills
    running: float
    kv_percent: int | None  # mean KV-cache usage, percent
    error: str | None

    @classmethod
    def of(cls, d: PoolDecision, obs: PoolObservation | None) -> Inputs:
        if obs is None:
            return cls(d.current, d.ready, 0, 0.0, 0.0, None, None)
        kv = obs.kv_usage_mean
        return cls(
            replicas=d.current,
            ready=d.ready,
            pods=obs.pods_reporting,
            waiting=round(obs.waiting + obs.router_pending, 1),
            running=round(obs.running, 1),
            kv_percent=None if kv is None else round(kv * 100),
            error=obs.error,
        )


@dataclass(frozen=True)
class Advice:
    """The autoscaler's recommendation for one pool, and what drove it, as of ``at`` (when it
    last changed: the same recommendation on later ticks keeps its time and inputs)."""

    at: float
    current: int
    replicas: int
    reason: str
    inputs: Inputs

    @property
    def key(self) -> tuple[int, int, str]:
        return self.current, self.replicas, self.reason

    @property
    def moves(self) -> bool:
        return self.replicas != self.current


@dataclass(frozen=True)
class AutoscalerReport:
    """The newest tick that decided something, the newest applied change of each pool, and the
    newest recommendation of each pool.

    The changes are carried from tick to tick so a change is not lost when the status write
    that should record it fails and a quieter tick comes next. ``fresh`` names the pools whose
    recommendation this tick changed (the ``WouldScale*`` events fire on those only).
    """

    tick: TickReport
    last_scale: Mapping[Role, Scale] = field(default_factory=dict)
    advice: Mapping[Role, Advice] = field(default_factory=dict)
    fresh: frozenset[Role] = frozenset()

    @classmethod
    def of(
        cls,
        tick: TickReport,
        carried: Mapping[Role, Scale] | None = None,
        advice: Mapping[Role, Advice] | None = None,
    ) -> AutoscalerReport:
        """The report of ``tick``, on top of what was ``carried`` from earlier ticks."""
        last_scale = dict(carried or {})
        decisions = tick.decisions
        for role, (before, after) in tick.scaled.items():
            last_scale[role] = Scale(tick.at, before, after, decisions[role].reason.value)
        newest, fresh = dict(advice or {}), set()
        for role, d in decisions.items():
            inputs = Inputs.of(d, tick.observations.get(role))
            now = Advice(tick.at, d.current, d.desired, d.reason.value, inputs)
            old = newest.get(role)
            if old is None or old.key != now.key:
                newest[role] = now
                fresh.add(role)
        return cls(tick, last_scale, newest, frozenset(fresh))

    def after(self, tick: TickReport) -> AutoscalerReport:
        """This report updated with the next tick (a tick that decided nothing is ignored)."""
        if tick.evaluation is None:
            return self
        return AutoscalerReport.of(tick, self.last_scale, self.advice)


class Reports:
    """The newest :class:`AutoscalerReport` of each InferenceService, by (namespace, name).

    One instance per operator process, shared by the autoscaler daemons (which record) and the
    reconciles (which read it into status); only the daemon of an object records for it.
    """

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], AutoscalerReport] = {}

    def get(self, namespace: str, name: str) -> AutoscalerReport | None:
        return self._by_key.get((namespace, name))

    def record(self, namespace: str, name: str, tick: TickReport) -> AutoscalerReport | None:
        """Fold ``tick`` into the object's report and return it (None: nothing decided yet)."""
        key = (namespace, name)
        previous = self._by_key.get(key)
        if previous is not None:
            report = previous.after(tick)
        elif tick.evaluation is not None:
            report = AutoscalerReport.of(tick)
        else:
            return None
        self._by_key[key] = report
        return report

    def forget(self, namespace: str, name: str) -> None:
        self._by_key.pop((namespace, name), None)
