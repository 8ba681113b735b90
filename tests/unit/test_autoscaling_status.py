"""What the autoscaler hands status: its report per InferenceService, the Autoscaling condition,
and when a tick needs a status refresh at all."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from tandem.api.conditions import get_condition
from tandem.api.v1alpha1 import InferenceServiceSpec, InferenceServiceStatus
from tandem.api.vocabulary import Role
from tandem.autoscale.observation import PodSample, missing, observe
from tandem.autoscale.policy import Evaluation, PolicyMemory, PoolDecision, ScaleReason
from tandem.autoscale.report import Reports, Scale, TickReport
from tandem.plan import Owner, ServicePlan, plan_service
from tandem.reconcile.autoscaling import ready_pods, shown, would_scale_events
from tandem.reconcile.status import (
    Acceptance,
    DeploymentView,
    Observed,
    autoscaling_condition,
    compute_status,
)
from tests.conftest import make_spec

T0 = 1_767_225_600.0
NS, NAME = "ml", "svc"


def decision(role: Role, current: int, desired: int, reason: ScaleReason) -> PoolDecision:
    return PoolDecision(role, current, current, desired, desired, reason, "m", 1.0)


def tick(
    at: float,
    prefill: PoolDecision | None = None,
    scaled: bool = False,
    errors: tuple[str, ...] = (),
) -> TickReport:
    p = prefill or decision(Role.PREFILL, 2, 2, ScaleReason.STABLE)
    d = decision(Role.DECODE, 1, 1, ScaleReason.STABLE)
    ev = Evaluation(prefill=p, decode=d, memory=PolicyMemory())
    moved = {Role.PREFILL: (p.current, p.desired)} if scaled else {}
    return TickReport(ev, scaled=moved, errors=errors, at=at, source="scrape")


def test_missing_metrics_condition() -> None:
    status, reason, message = autoscaling_condition(
        {
            Role.PREFILL: decision(Role.PREFILL, 2, 2, ScaleReason.METRICS_MISSING),
            Role.DECODE: decision(Role.DECODE, 1, 1, ScaleReason.STABLE),
        }
    )
    assert (status, reason) == ("False", "MetricsUnavailable")
    assert "prefill: MetricsMissing, holding 2 replicas" in message


def test_gpu_budget_condition() -> None:
    status, reason, _ = autoscaling_condition(
        {
            Role.PREFILL: decision(Role.PREFILL, 4, 4, ScaleReason.GPU_BUDGET),
            Role.DECODE: decision(Role.DECODE, 1, 1, ScaleReason.STABLE),
        }
    )
    assert (status, reason) == ("True", "GPUBudgetReached")


def test_cold_start_is_not_a_metrics_problem() -> None:
    status, reason, _ = autoscaling_condition(
        {Role.PREFILL: decision(Role.PREFILL, 3, 3, ScaleReason.COLD_START)}
    )
    assert (status, reason) == ("True", "Active")


def test_tick_error_joins_tick_and_source_errors() -> None:
    t = TickReport(
        None,
        observations={Role.DECODE: missing(Role.DECODE, "all 1 pods failed; 503")},
        errors=("listing routers failed: forbidden",),
    )
    assert t.error == "listing routers failed: forbidden; decode: all 1 pods failed; 503"
    assert tick(T0).error is None


def test_reports_keep_the_newest_change_of_each_pool_across_quiet_ticks() -> None:
    reports = Reports()
    up = decision(Role.PREFILL, 1, 3, ScaleReason.QUEUE_ABOVE_TARGET)
    reports.record(NS, NAME, tick(T0, up, scaled=True))
    quiet = reports.record(NS, NAME, tick(T0 + 10))
    assert quiet is not None
    assert quiet.tick.at == T0 + 10
    assert quiet.last_scale == {Role.PREFILL: Scale(T0, 1, 3, "QueueAboveTarget")}


def test_a_tick_that_decided_nothing_changes_no_report() -> None:
    reports = Reports()
    assert reports.record(NS, NAME, TickReport(None, errors=("reading pools failed",))) is None
    first = reports.record(NS, NAME, tick(T0))
    assert reports.record(NS, NAME, TickReport(None, errors=("reading pools failed",))) == first
    reports.forget(NS, NAME)
    assert reports.get(NS, NAME) is None


def test_only_a_tick_that_changes_what_status_shows_asks_for_a_refresh() -> None:
    reports = Reports()
    first = shown(reports.record(NS, NAME, tick(T0)))
    assert first != shown(None)
    assert shown(reports.record(NS, NAME, tick(T0 + 10))) == first  # steady: no refresh
    held = decision(Role.PREFILL, 2, 2, ScaleReason.METRICS_MISSING)
    assert shown(reports.record(NS, NAME, tick(T0 + 20, held, errors=("x",)))) != first
    up = decision(Role.PREFILL, 2, 3, ScaleReason.QUEUE_ABOVE_TARGET)
    again = shown(reports.record(NS, NAME, tick(T0 + 30, up, scaled=True)))
    assert again != first


def test_ready_pods_only() -> None:
    pods = [
        {
            "metadata": {"name": "a"},
            "status": {"podIP": "127.0.0.5", "conditions": [{"type": "Ready", "status": "True"}]},
        },
        {
            "metadata": {"name": "b"},
            "status": {"podIP": "127.0.0.6", "conditions": [{"type": "Ready", "status": "False"}]},
        },
        {
            "metadata": {"name": "c", "deletionTimestamp": "x"},
            "status": {"podIP": "127.0.0.7", "conditions": [{"type": "Ready", "status": "True"}]},
        },
        {
            "metadata": {"name": "d"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        },
    ]
    assert [p.name for p in ready_pods(pods)] == ["a"]


# ------------------------------------------------------------------------ Shadow mode


def shadow_tick(
    at: float, desired: int, reason: ScaleReason = ScaleReason.QUEUE_ABOVE_TARGET
) -> TickReport:
    """Prefill at 1 replica, recommended ``desired``; nothing written (Shadow)."""
    p = decision(Role.PREFILL, 1, desired, reason)
    d = decision(Role.DECODE, 1, 1, ScaleReason.AT_MIN)
    ev = Evaluation(prefill=p, decode=d, memory=PolicyMemory())
    samples = [PodSample("p-0", waiting=40.0, running=8.0, kv_usage=0.615)]
    seen = {Role.PREFILL: observe(Role.PREFILL, samples, at, router_pending=2.0)}
    moved = {Role.PREFILL: (1, desired)} if desired != 1 else {}
    return TickReport(ev, seen, at=at, source="scrape", recommended=moved, shadow=True)


def test_shadow_condition_says_what_would_happen() -> None:
    status, reason, message = autoscaling_condition(shadow_tick(T0, 3).decisions, shadow=True)
    assert (status, reason) == ("True", "Shadow")
    assert message == (
        "decode: 1 replicas (AtMinReplicas); prefill: would scale 1 -> 3 (QueueAboveTarget)"
    )
    held = {Role.PREFILL: decision(Role.PREFILL, 2, 2, ScaleReason.METRICS_STALE)}
    assert autoscaling_condition(held, shadow=True)[1] == "MetricsUnavailable"


class Events:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[tuple[str, str]] = []
        monkeypatch.setattr(kopf, "info", self._info)

    def _info(self, body: Any, *, reason: str, message: str = "") -> None:
        self.seen.append((reason, message))


def test_one_would_scale_event_per_change_of_recommendation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events, reports = Events(monkeypatch), Reports()
    body: Any = {}
    for i, desired in enumerate([3, 3, 3, 4, 4, 1, 1, 3]):
        t = shadow_tick(T0 + 10 * i, desired)
        would_scale_events(body, reports.record(NS, NAME, t), t)
    assert [r for r, _ in events.seen] == ["WouldScaleUp", "WouldScaleUp", "WouldScaleUp"]
    assert events.seen[0][1].startswith("prefill: would scale 1 -> 3 replicas (QueueAboveTarget")
    assert "would scale 1 -> 4" in events.seen[1][1]
    down = decision(Role.PREFILL, 3, 2, ScaleReason.LOAD_BELOW_TARGET)
    t = TickReport(
        Evaluation(down, decision(Role.DECODE, 1, 1, ScaleReason.STABLE), PolicyMemory()),
        at=T0 + 100, shadow=True,
    )  # fmt: skip
    would_scale_events(body, reports.record(NS, NAME, t), t)
    assert events.seen[-1][0] == "WouldScaleDown"
    # Active mode applies changes (ScaledUp/ScaledDown) and emits no WouldScale* events.
    active = tick(T0 + 200, decision(Role.PREFILL, 2, 5, ScaleReason.QUEUE_ABOVE_TARGET))
    would_scale_events(body, reports.record(NS, NAME, active), active)
    # A tick that decided nothing does not repeat the last change's event.
    dead = TickReport(None, errors=("reading pools failed",), shadow=True)
    would_scale_events(body, reports.record(NS, NAME, dead), dead)
    assert len(events.seen) == 4


def test_the_recommendation_keeps_its_time_and_inputs_until_it_changes() -> None:
    reports = Reports()
    first = reports.record(NS, NAME, shadow_tick(T0, 3))
    again = reports.record(NS, NAME, shadow_tick(T0 + 10, 3))
    assert first is not None and again is not None
    assert again.advice[Role.PREFILL] == first.advice[Role.PREFILL]
    assert again.fresh == frozenset() and first.fresh == {Role.PREFILL, Role.DECODE}
    assert shown(again) == shown(first)  # no status write for a repeated recommendation
    inputs = first.advice[Role.PREFILL].inputs
    assert (inputs.waiting, inputs.running, inputs.kv_percent, inputs.pods) == (42.0, 8.0, 62, 1)
    changed = reports.record(NS, NAME, shadow_tick(T0 + 20, 4))
    assert changed is not None and changed.advice[Role.PREFILL].at == T0 + 20
    assert shown(changed) != shown(again)


OWNER = Owner(name=NAME, namespace=NS, uid="uid-1")
OK = Acceptance(True, "Accepted", "ok")
STAMP = "2026-01-01T00:00:00Z"  # T0


def shadow_plan(mode: str = "Shadow", **pools: object) -> ServicePlan:
    spec = make_spec(autoscaling={"enabled": True, "mode": mode}, **pools)
    return plan_service(InferenceServiceSpec.model_validate(spec), OWNER)


def one_replica_each() -> Observed:
    one = DeploymentView(1, 1, 1, 1, 1, 1)
    return Observed({"prefill": one, "decode": one, "router": one})


def test_shadow_status_shows_the_recommendation_and_changes_nothing() -> None:
    reports = Reports()
    report = reports.record(NS, NAME, shadow_tick(T0, 3))
    s = compute_status(
        shadow_plan(), 2, OK, one_replica_each(), InferenceServiceStatus(), STAMP, report
    )
    assert s.prefill is not None and s.prefill.recommendation is not None
    assert (s.prefill.desired_replicas, s.prefill.ready, s.prefill.last_scale) == (1, "1/1", None)
    rec = s.prefill.recommendation
    assert (rec.replicas, rec.reason, rec.time) == (3, "QueueAboveTarget", STAMP)
    assert rec.inputs is not None and rec.inputs.wire() == {
        "replicas": 1, "readyReplicas": 1, "podsReporting": 1, "waiting": 42.0,
        "running": 8.0, "kvCacheUsagePercent": 62,
    }  # fmt: skip
    assert s.autoscaling is not None and s.autoscaling.mode == "Shadow"
    c = get_condition(s.conditions, "Autoscaling")
    assert c is not None and (c.status, c.reason) == ("True", "Shadow")
    assert "prefill: would scale 1 -> 3 (QueueAboveTarget)" in c.message
    # After a restart (no report) status keeps it; with autoscaling off it goes.
    kept = compute_status(shadow_plan(), 2, OK, one_replica_each(), s, STAMP, None)
    assert kept.prefill is not None and kept.prefill.recommendation == rec
    off_plan = plan_service(InferenceServiceSpec.model_validate(make_spec()), OWNER)
    off = compute_status(off_plan, 2, OK, one_replica_each(), s, STAMP, report)
    assert off.prefill is not None and off.prefill.recommendation is None


def test_shadow_hands_replicas_over_as_they_run() -> None:
    """Shadow changes nothing: the hand-over to the autoscaler's field manager keeps what a
    Deployment runs (here 12, from before autoscaling), even outside min/maxReplicas; Active
    clamps it into them."""
    pools = {"prefill": {"replicas": 4, "autoscaling": {"minReplicas": 1, "maxReplicas": 8}}}
    shadow = shadow_plan(**pools).pool(Role.PREFILL).replicas
    assert shadow.autoscaled and (shadow.start, shadow.clamp(12)) == (4, 12)
    active = shadow_plan("Active", **pools).pool(Role.PREFILL).replicas
    assert (active.start, active.clamp(12)) == (4, 8)
