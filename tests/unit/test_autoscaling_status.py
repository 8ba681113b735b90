"""What the autoscaler hands status: its report per InferenceService, the Autoscaling condition,
and when a tick needs a status refresh at all."""

from __future__ import annotations

from tandem.api.vocabulary import Role
from tandem.autoscale.observation import missing
from tandem.autoscale.policy import Evaluation, PolicyMemory, PoolDecision, ScaleReason
from tandem.autoscale.report import Reports, Scale, TickReport
from tandem.reconcile.autoscaling import ready_pods, shown
from tandem.reconcile.status import autoscaling_condition

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
