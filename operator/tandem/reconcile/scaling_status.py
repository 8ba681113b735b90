"""The autoscaler's part of status, from its report: the ``Autoscaling`` condition and each
pool's ``recommendation``. Pure; :mod:`tandem.reconcile.status` folds them into the roll-up."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from tandem.api.conditions import FALSE, TRUE, ConditionReason
from tandem.api.v1alpha1 import PoolStatus, RecommendationInputs, ScaleRecommendation
from tandem.api.vocabulary import Role
from tandem.autoscale.policy import HOLD_REASONS, PoolDecision, ScaleReason
from tandem.autoscale.report import Advice

# (status, reason, message) of one condition.
Verdict = tuple[str, str, str]


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _would(r: Role, d: PoolDecision) -> str:
    if d.changed:
        return f"{r}: would scale {d.current} -> {d.desired} ({d.reason.value})"
    return f"{r}: {d.desired} replicas ({d.reason.value})"


def autoscaling_condition(decisions: Mapping[Role, PoolDecision], shadow: bool = False) -> Verdict:
    """The Autoscaling condition from one tick's decisions (stable text: no floats); in Shadow
    mode (fresh metrics) reason ``Shadow`` and what the autoscaler would do per pool."""
    held = {
        r: d
        for r, d in decisions.items()
        if d.reason in HOLD_REASONS and d.reason != ScaleReason.COLD_START
    }
    if held:
        detail = "; ".join(
            f"{r}: {d.reason.value}, holding {d.current} replicas" for r, d in sorted(held.items())
        )
        return FALSE, ConditionReason.METRICS_UNAVAILABLE, detail
    if shadow:
        would = "; ".join(_would(r, d) for r, d in sorted(decisions.items()))
        return TRUE, ConditionReason.SHADOW, would
    summary = "; ".join(
        f"{r}: {d.desired} replicas ({d.reason.value})" for r, d in sorted(decisions.items())
    )
    if any(d.reason == ScaleReason.GPU_BUDGET for d in decisions.values()):
        return TRUE, ConditionReason.GPU_BUDGET_REACHED, summary
    return TRUE, ConditionReason.ACTIVE, summary


def recommendation(
    advice: Advice | None, previous: PoolStatus | None, autoscaled: bool
) -> ScaleRecommendation | None:
    """``recommendation`` from the autoscaler's report; as stored until it has one; none once
    autoscaling is off."""
    if advice is None:
        return previous.recommendation if previous and autoscaled else None
    i = advice.inputs
    inputs = RecommendationInputs(
        replicas=i.replicas,
        ready_replicas=i.ready,
        pods_reporting=i.pods,
        waiting=i.waiting,
        running=i.running,
        kv_cache_usage_percent=i.kv_percent,
        error=i.error,
    )
    return ScaleRecommendation(
        replicas=advice.replicas, reason=advice.reason, time=rfc3339(advice.at), inputs=inputs
    )
