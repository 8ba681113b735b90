"""Status roll-up, one rule at a time, and condition transition rules (pure)."""

from __future__ import annotations

from typing import Any

from tandem.api.conditions import Condition, get_condition, set_condition
from tandem.api.v1alpha1 import InferenceServiceSpec, InferenceServiceStatus, LastScale, PoolStatus
from tandem.api.vocabulary import Role
from tandem.autoscale.policy import Evaluation, PolicyMemory, PoolDecision, ScaleReason
from tandem.autoscale.report import AutoscalerReport, Scale, TickReport
from tandem.plan import Owner, ServicePlan, plan_service
from tandem.reconcile.status import (
    Acceptance,
    DeploymentView,
    Observed,
    compute_status,
    desired_replicas,
    merge_diff,
    pool_condition,
    pool_status,
    ready_rollup,
    router_condition,
    unschedulable_message,
)
from tests.conftest import make_spec
from tests.merge_patch import merge_patch

T0, T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"
OWNER = Owner(name="svc", namespace="ml", uid="uid-1")
OK = Acceptance(True, "Accepted", "ok")


def plan_of(**overrides: object) -> ServicePlan:
    return plan_service(InferenceServiceSpec.model_validate(make_spec(**overrides)), OWNER)


# NIXL lets the pools' parallelism differ (decode at least as wide as prefill).
PLAN = plan_of(kvTransfer={"connector": "nixl"}, decode={"parallelism": {"tensor": 2}})


def view(
    want: int, ready: int, updated: int | None = None, gen: int = 1, observed: int = 1
) -> DeploymentView:
    return DeploymentView(want, want, ready, want if updated is None else updated, gen, observed)


def all_ready() -> Observed:
    return Observed({"prefill": view(1, 1), "decode": view(1, 1), "router": view(2, 2)})


def status(
    obs: Observed,
    prev: InferenceServiceStatus | None = None,
    now: str = T0,
    acc: Acceptance = OK,
    plan: ServicePlan | None = PLAN,
    gen: int = 1,
) -> InferenceServiceStatus:
    return compute_status(plan, gen, acc, obs, prev or InferenceServiceStatus(), now)


def cond(s: InferenceServiceStatus, t: str) -> Condition:
    c = get_condition(s.conditions, t)
    assert c is not None
    return c


def test_all_ready() -> None:
    s = status(all_ready())
    assert cond(s, "Ready").status == "True" and cond(s, "Ready").reason == "Serving"
    assert [c.type for c in s.conditions] == [
        "Ready",
        "Accepted",
        "PrefillReady",
        "DecodeReady",
        "RouterReady",
    ]
    assert s.endpoint == "http://svc-router.ml.svc:8000/v1"
    assert s.prefill is not None and s.prefill.ready == "1/1" and s.prefill.gpus_per_replica == 1
    assert s.decode is not None and s.decode.gpus_per_replica == 2
    assert s.parallelism == "P:1x1 D:2x1"
    assert s.observed_generation == 1
    assert all(c.observed_generation == 1 for c in s.conditions)


def test_transition_time_changes_only_on_flip() -> None:
    s0 = status(all_ready(), now=T0)
    s1 = status(all_ready(), prev=s0, now=T1)
    assert s1 == s0  # idle: identical, so nothing is written
    obs = Observed({"prefill": view(2, 1), "decode": view(1, 1), "router": view(2, 2)})
    s2 = status(obs, prev=s1, now=T2)
    assert cond(s2, "PrefillReady").status == "False"
    assert cond(s2, "PrefillReady").last_transition_time == T2
    assert cond(s2, "DecodeReady").last_transition_time == T0
    assert cond(s2, "Ready").reason == "Progressing"


def test_observed_generation_alone_keeps_transition_time() -> None:
    s0 = status(all_ready(), now=T0, gen=1)
    s1 = status(all_ready(), prev=s0, now=T1, gen=2)
    assert cond(s1, "Ready").last_transition_time == T0
    assert cond(s1, "Ready").observed_generation == 2


def test_reason_change_without_flip_keeps_time() -> None:
    conds = set_condition([], "X", "False", "A", "a", T0, 1)
    conds = set_condition(conds, "X", "False", "B", "b", T1, 1)
    assert conds[0].reason == "B" and conds[0].last_transition_time == T0


def test_rejected_spec() -> None:
    s = status(all_ready(), acc=Acceptance(False, "ReplicaExceedsNode", "too big"), plan=None)
    assert cond(s, "Accepted").status == "False"
    assert cond(s, "Ready").status == "False"
    assert cond(s, "Ready").reason == "ReplicaExceedsNode"
    # Pools are still described as they run.
    assert cond(s, "PrefillReady").status == "True"


def test_unschedulable_pool() -> None:
    obs = Observed(
        {"prefill": view(2, 0), "decode": view(1, 1), "router": view(1, 1)},
        {"prefill": "pod p is Pending: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu."},
    )
    s = status(obs)
    c = cond(s, "PrefillReady")
    assert (c.status, c.reason) == ("False", "PodsUnschedulable")
    assert "Insufficient nvidia.com/gpu" in c.message
    assert cond(s, "Ready").reason == "PodsUnschedulable"


def test_missing_and_zero() -> None:
    s = status(Observed({"prefill": None, "decode": view(0, 0), "router": None}))
    assert cond(s, "PrefillReady").reason == "DeploymentMissing"
    assert cond(s, "DecodeReady").reason == "ScaledToZero"
    assert cond(s, "RouterReady").reason == "DeploymentMissing"


def test_rollout_not_settled() -> None:
    obs = Observed(
        {
            "prefill": view(1, 1, gen=3, observed=2),
            "decode": view(2, 2, updated=1),
            "router": view(1, 1),
        }
    )
    s = status(obs)
    assert cond(s, "PrefillReady").reason == "Progressing"
    assert cond(s, "DecodeReady").reason == "Progressing"


def test_autoscaler_fields_carried_over() -> None:
    auto = plan_of(autoscaling={"enabled": True})
    prev = InferenceServiceStatus(
        prefill=PoolStatus(last_scale=LastScale(time=T0, from_=1, to=3, reason="QueueAboveTarget")),
        conditions=set_condition([], "Autoscaling", "True", "Active", "", T0, 1),
    )
    obs = Observed({"prefill": view(3, 3), "decode": view(1, 1), "router": view(1, 1)})
    s = status(obs, prev=prev, plan=auto)
    assert (
        s.prefill is not None and s.prefill.last_scale is not None and s.prefill.last_scale.to == 3
    )
    assert s.prefill.desired_replicas == 3
    assert get_condition(s.conditions, "Autoscaling") is not None
    off = status(obs, prev=prev)
    assert get_condition(off.conditions, "Autoscaling") is None


def test_desired_replicas_follow_spec_without_autoscaling() -> None:
    plan = plan_of(decode={"replicas": 4})
    s = status(
        Observed({"prefill": view(1, 1), "decode": view(2, 2), "router": view(1, 1)}), plan=plan
    )
    assert s.decode is not None and s.decode.desired_replicas == 4 and s.decode.ready == "2/4"


def test_unschedulable_message() -> None:
    pods = [
        {"metadata": {"name": "a"}, "status": {"phase": "Running"}},
        {
            "metadata": {"name": "b"},
            "status": {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/5 nodes are available",
                    }
                ],
            },
        },
    ]
    assert unschedulable_message(pods) == "pod b is Pending: 0/5 nodes are available"
    assert unschedulable_message(pods[:1]) is None


# ------------------------------------------------------------------ one rule at a time


def test_pool_condition_rules() -> None:
    assert pool_condition(None, None)[1] == "DeploymentMissing"
    assert pool_condition(view(0, 0), None)[1] == "ScaledToZero"
    assert pool_condition(view(2, 0), "pod p is Pending")[1:] == (
        "PodsUnschedulable",
        "pod p is Pending",
    )
    assert pool_condition(view(2, 2), None) == ("True", "ReplicasReady", "2/2 replicas ready")
    assert pool_condition(view(2, 1, updated=1), None) == (
        "False",
        "Progressing",
        "1/2 replicas ready, 1 updated",
    )


def test_desired_replicas_rules() -> None:
    fixed = plan_of(decode={"replicas": 4}).pool(Role.DECODE)
    auto = plan_of(autoscaling={"enabled": True}, decode={"replicas": 2}).pool(Role.DECODE)
    prev = PoolStatus(desired_replicas=7)
    assert desired_replicas(fixed, view(2, 2), prev) == 4  # the spec fixes it
    assert desired_replicas(auto, view(3, 3), prev) == 3  # the autoscaler's, on the Deployment
    assert desired_replicas(auto, None, prev) == 2  # not created yet: where it will start
    assert desired_replicas(None, view(3, 3), prev) == 3  # rejected spec: as it runs
    assert desired_replicas(None, None, prev) == 7
    assert desired_replicas(None, None, None) == 0


def test_pool_status_takes_display_facts_from_the_plan_or_keeps_them() -> None:
    pool = PLAN.pool(Role.DECODE)
    s = pool_status(pool, view(1, 1), None, None)
    assert (s.gpus_per_replica, s.parallelism, s.ready) == (2, "2x1", "1/1")
    kept = pool_status(None, view(1, 0), s, None)
    assert (kept.gpus_per_replica, kept.parallelism, kept.ready) == (2, "2x1", "0/1")
    assert pool_status(None, None, None, None).parallelism == ""


def test_last_scale_comes_from_the_report_else_stays_as_stored() -> None:
    stored = LastScale(time=T0, from_=1, to=2, reason="QueueAboveTarget")
    prev = PoolStatus(last_scale=stored)
    assert pool_status(PLAN.pool(Role.DECODE), view(2, 2), prev, None).last_scale == stored
    newer = Scale(at=1_767_225_660.0, from_=2, to=3, reason="ArrivalRateRising")
    got = pool_status(PLAN.pool(Role.DECODE), view(3, 3), prev, newer).last_scale
    assert got == LastScale(time=T1, from_=2, to=3, reason="ArrivalRateRising")


def test_router_condition_rules() -> None:
    assert router_condition(None)[1] == "DeploymentMissing"
    assert router_condition(view(2, 1)) == ("True", "ReplicasReady", "1/2 router replicas ready")
    assert router_condition(view(0, 0))[1] == "ScaledToZero"
    assert router_condition(view(1, 0))[1] == "Progressing"


def test_ready_rollup_takes_the_first_condition_that_is_not_true() -> None:
    def conds(*states: str) -> list[Condition]:
        out: list[Condition] = []
        types = ("Accepted", "PrefillReady", "DecodeReady", "RouterReady")
        for ctype, st in zip(types, states, strict=False):
            out = set_condition(out, ctype, st, f"{ctype}Reason", f"{ctype} says", T0, 1)
        return out

    assert ready_rollup(conds("True", "True", "True", "True"))[:2] == ("True", "Serving")
    assert ready_rollup(conds("True", "True", "False", "False")) == (
        "False",
        "DecodeReadyReason",
        "DecodeReady: DecodeReady says",
    )
    assert ready_rollup(conds("True", "Unknown", "True", "True"))[0] == "Unknown"
    assert ready_rollup(conds("True"))[:2] == ("Unknown", "Reconciling")


def test_display_facts_come_from_the_plan() -> None:
    plan = plan_of(
        router={"port": 9000},
        kvTransfer={"connector": "nixl"},
        decode={"parallelism": {"tensor": 4}},
    )
    s = status(all_ready(), plan=plan)
    assert s.endpoint == "http://svc-router.ml.svc:9000/v1"
    assert s.parallelism == "P:1x1 D:4x1"
    assert s.decode is not None and s.decode.gpus_per_replica == 4


def test_a_rejected_spec_keeps_the_previous_display_facts() -> None:
    before = status(all_ready(), plan=PLAN)
    rejected = Acceptance(False, "InvalidSpec", "bad")
    s = status(all_ready(), prev=before, acc=rejected, plan=None, gen=2)
    assert (s.endpoint, s.parallelism) == (before.endpoint, before.parallelism)
    assert s.decode is not None and before.decode is not None
    assert s.decode.gpus_per_replica == before.decode.gpus_per_replica == 2
    # Before anything was accepted there is nothing to show (no made-up port).
    first = status(all_ready(), acc=rejected, plan=None)
    assert first.endpoint is None and first.parallelism is None


# ------------------------------------------------------------------ the autoscaler's report

AUTO = plan_of(autoscaling={"enabled": True})


def report(prefill: ScaleReason, error: str | None = None, scaled: bool = False) -> Any:
    p = PoolDecision(Role.PREFILL, 1, 1, 3 if scaled else 1, 3, prefill, "m", 1.0)
    d = PoolDecision(Role.DECODE, 1, 1, 1, 1, ScaleReason.STABLE, "m", 1.0)
    ev = Evaluation(prefill=p, decode=d, memory=PolicyMemory())
    errors = (error,) if error else ()
    tick = TickReport(
        ev, scaled={Role.PREFILL: (1, 3)} if scaled else {}, errors=errors, at=1_767_225_600.0,
        source="scrape",
    )  # fmt: skip
    return AutoscalerReport.of(tick)


def test_the_report_is_folded_into_status() -> None:
    obs = Observed({"prefill": view(3, 1), "decode": view(1, 1), "router": view(1, 1)})
    s = compute_status(AUTO, 4, OK, obs, InferenceServiceStatus(), T0, report(
        ScaleReason.QUEUE_ABOVE_TARGET, scaled=True
    ))  # fmt: skip
    assert s.prefill is not None and s.prefill.last_scale is not None
    assert (s.prefill.last_scale.from_, s.prefill.last_scale.to) == (1, 3)
    assert s.prefill.last_scale.reason == "QueueAboveTarget" and s.prefill.last_scale.time == T0
    assert (s.prefill.desired_replicas, s.prefill.ready) == (3, "1/3")
    c = cond(s, "Autoscaling")
    assert (c.status, c.reason, c.observed_generation) == ("True", "Active", 4)
    assert c.message == "decode: 1 replicas (Stable); prefill: 3 replicas (QueueAboveTarget)"
    assert s.autoscaling is not None and s.autoscaling.source == "scrape"
    # The Autoscaling condition does not count towards Ready.
    assert cond(s, "Ready").reason == "Progressing"


def test_a_cleared_error_is_removed_by_the_status_patch() -> None:
    obs = Observed({"prefill": view(1, 1), "decode": view(1, 1), "router": view(1, 1)})
    held = compute_status(
        AUTO, 1, OK, obs, InferenceServiceStatus(), T0, report(ScaleReason.METRICS_MISSING, "boom")
    )
    assert held.autoscaling is not None and held.autoscaling.last_error == "boom"
    assert cond(held, "Autoscaling").reason == "MetricsUnavailable"
    ok = compute_status(AUTO, 1, OK, obs, held, T1, report(ScaleReason.STABLE))
    patch = merge_diff(held.wire(), ok.wire())
    assert patch["autoscaling"] == {"lastError": None}
    assert merge_patch(held.wire(), patch) == ok.wire()
    assert merge_diff(ok.wire(), ok.wire()) == {}


def test_merge_diff_is_the_merge_patch_between_two_documents() -> None:
    old = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2], "gone": {"x": 1}}
    new = {"a": 1, "b": {"c": 2, "d": 4}, "e": [1], "f": None or 0}
    patch = merge_diff(old, new)
    assert patch == {"b": {"d": 4}, "e": [1], "f": 0, "gone": None}
    assert merge_patch(old, patch) == new


def test_without_a_report_status_keeps_what_the_autoscaler_recorded() -> None:
    """After an operator restart nothing is in memory: status is the durable store."""
    obs = Observed({"prefill": view(3, 3), "decode": view(1, 1), "router": view(1, 1)})
    before = compute_status(
        AUTO,
        1,
        OK,
        obs,
        InferenceServiceStatus(),
        T0,
        report(ScaleReason.QUEUE_ABOVE_TARGET, scaled=True),
    )
    after = compute_status(AUTO, 1, OK, obs, before, T1, None)
    assert after.prefill is not None and before.prefill is not None
    assert after.prefill.last_scale == before.prefill.last_scale
    assert after.autoscaling == before.autoscaling
    assert cond(after, "Autoscaling") == cond(before, "Autoscaling")
    # Turning autoscaling off drops the condition and status.autoscaling, even with a report.
    off = compute_status(PLAN, 1, OK, obs, before, T1, report(ScaleReason.STABLE))
    assert get_condition(off.conditions, "Autoscaling") is None and off.autoscaling is None
