"""Status roll-up and condition transition rules (pure)."""

from __future__ import annotations

from tandem.api.conditions import Condition, get_condition, set_condition
from tandem.api.v1alpha1 import InferenceServiceSpec, InferenceServiceStatus, LastScale, PoolStatus
from tandem.reconcile.status import (
    Acceptance,
    DeploymentView,
    Observed,
    compute_status,
    unschedulable_message,
)
from tests.conftest import make_spec

T0, T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"
SPEC = InferenceServiceSpec.model_validate(make_spec(prefill={"parallelism": {"tensor": 2}}))
OK = Acceptance(True, "Accepted", "ok")


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
    spec: InferenceServiceSpec | None = SPEC,
    gen: int = 1,
) -> InferenceServiceStatus:
    return compute_status(spec, "svc", "ml", gen, acc, obs, prev or InferenceServiceStatus(), now)


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
    assert s.prefill is not None and s.prefill.ready == "1/1" and s.prefill.gpus_per_replica == 2
    assert s.parallelism == "P:2x1 D:1x1"
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
    s = status(all_ready(), acc=Acceptance(False, "ReplicaExceedsNode", "too big"), spec=None)
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
    auto = InferenceServiceSpec.model_validate(make_spec(autoscaling={"enabled": True}))
    prev = InferenceServiceStatus(
        prefill=PoolStatus(last_scale=LastScale(time=T0, from_=1, to=3, reason="QueueAboveTarget")),
        conditions=set_condition([], "Autoscaling", "True", "Active", "", T0, 1),
    )
    obs = Observed({"prefill": view(3, 3), "decode": view(1, 1), "router": view(1, 1)})
    s = status(obs, prev=prev, spec=auto)
    assert (
        s.prefill is not None and s.prefill.last_scale is not None and s.prefill.last_scale.to == 3
    )
    assert s.prefill.desired_replicas == 3
    assert get_condition(s.conditions, "Autoscaling") is not None
    off = status(obs, prev=prev)
    assert get_condition(off.conditions, "Autoscaling") is None


def test_desired_replicas_follow_spec_without_autoscaling() -> None:
    spec = InferenceServiceSpec.model_validate(make_spec(decode={"replicas": 4}))
    s = status(
        Observed({"prefill": view(1, 1), "decode": view(2, 2), "router": view(1, 1)}), spec=spec
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
