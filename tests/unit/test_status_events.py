"""Events from status transitions: a pure function of the status before and after a write."""

from __future__ import annotations

from tandem.api.conditions import Condition, set_condition
from tandem.api.v1alpha1 import InferenceServiceStatus
from tandem.reconcile.events import Event, status_events

T0 = "2026-01-01T00:00:00Z"


def st(*conds: tuple[str, str, str, str], gen: int = 1) -> InferenceServiceStatus:
    out: list[Condition] = []
    for ctype, status, reason, message in conds:
        out = set_condition(out, ctype, status, reason, message, T0, gen)
    return InferenceServiceStatus(conditions=out)


EMPTY = InferenceServiceStatus()
ACCEPTED = ("Accepted", "True", "Accepted", "ok")
READY = ("Ready", "True", "Serving", "ready")
NOT_READY = ("Ready", "False", "Progressing", "PrefillReady: 0/1")


def rejected(message: str = "bad port") -> tuple[str, str, str, str]:
    return ("Accepted", "False", "ApplyFailed", message)


def test_a_new_rejection_is_a_warning() -> None:
    assert status_events(st(ACCEPTED), st(rejected())) == [
        Event("Warning", "ApplyFailed", "bad port")
    ]
    assert status_events(EMPTY, st(rejected())) == [Event("Warning", "ApplyFailed", "bad port")]


def test_the_same_rejection_is_announced_once() -> None:
    assert status_events(st(rejected()), st(rejected())) == []


def test_a_different_rejection_or_a_new_generation_is_announced_again() -> None:
    assert [e.message for e in status_events(st(rejected()), st(rejected("other")))] == ["other"]
    assert len(status_events(st(rejected()), st(rejected(), gen=2))) == 1


def test_ready_turning_true_is_announced_once() -> None:
    assert status_events(st(NOT_READY), st(READY)) == [
        Event("Normal", "Ready", "All pools and the router are ready")
    ]
    assert status_events(EMPTY, st(READY))[0].reason == "Ready"
    assert status_events(st(READY), st(READY)) == []
    assert status_events(st(READY), st(NOT_READY)) == []


def test_autoscaling_turning_false_is_a_warning_once() -> None:
    active = ("Autoscaling", "True", "Active", "prefill: 1 replicas (Stable)")
    held = ("Autoscaling", "False", "MetricsUnavailable", "prefill: MetricsMissing, holding 3")
    assert status_events(st(active), st(held)) == [
        Event("Warning", "MetricsUnavailable", "prefill: MetricsMissing, holding 3")
    ]
    assert status_events(st(held), st(held)) == []
    assert status_events(st(held), st(active)) == []


def test_reaching_the_gpu_budget_is_a_warning_once() -> None:
    active = ("Autoscaling", "True", "Active", "a")
    budget = ("Autoscaling", "True", "GPUBudgetReached", "prefill: 4 replicas (GPUBudget)")
    assert [e.reason for e in status_events(st(active), st(budget))] == ["GPUBudgetReached"]
    assert status_events(st(budget), st(budget)) == []


def test_several_transitions_at_once() -> None:
    events = status_events(st(ACCEPTED, NOT_READY), st(rejected(), READY))
    assert [(e.type, e.reason) for e in events] == [("Warning", "ApplyFailed"), ("Normal", "Ready")]
