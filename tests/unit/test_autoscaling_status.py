"""How autoscaler decisions land in status: lastScale, desiredReplicas, the condition."""

from __future__ import annotations

from typing import Any

from tandem.api.conditions import get_condition
from tandem.api.v1alpha1 import InferenceServiceStatus, PoolStatus
from tandem.autoscale.policy import PoolDecision, Reason
from tandem.reconcile.autoscaling import (
    _ready_pods,
    apply_tick_to_status,
    autoscaling_condition,
    status_patch,
    write_autoscaler_status,
)
from tests.merge_patch import merge_patch

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:00:10Z"


def decision(role: str, current: int, desired: int, reason: Reason) -> PoolDecision:
    return PoolDecision(role, current, current, desired, desired, reason, "m", 1.0)  # type: ignore[arg-type]


def test_scale_up_recorded() -> None:
    prev = InferenceServiceStatus(
        prefill=PoolStatus(replicas=1, ready_replicas=1, desired_replicas=1)
    )
    d = {
        "prefill": (decision("prefill", 1, 3, Reason.QUEUE_ABOVE_TARGET), True),
        "decode": (decision("decode", 1, 1, Reason.STABLE), False),
    }
    st = apply_tick_to_status(prev, d, "scrape", None, 4, T0)
    assert st.prefill is not None and st.prefill.last_scale is not None
    assert (
        st.prefill.last_scale.from_,
        st.prefill.last_scale.to,
        st.prefill.last_scale.reason,
    ) == (1, 3, "QueueAboveTarget")
    assert st.prefill.desired_replicas == 3 and st.prefill.ready == "1/3"
    c = get_condition(st.conditions, "Autoscaling")
    assert (
        c is not None and c.status == "True" and c.reason == "Active" and c.observed_generation == 4
    )
    assert st.autoscaling is not None and st.autoscaling.source == "scrape"


def test_steady_tick_changes_nothing() -> None:
    d = {
        "prefill": (decision("prefill", 2, 2, Reason.STABLE), False),
        "decode": (decision("decode", 1, 1, Reason.STABLE), False),
    }
    first = apply_tick_to_status(InferenceServiceStatus(), d, "scrape", None, 1, T0)
    again = apply_tick_to_status(first, d, "scrape", None, 1, T1)
    assert again.wire() == first.wire()


def test_missing_metrics_condition() -> None:
    status, reason, message = autoscaling_condition(
        {
            "prefill": decision("prefill", 2, 2, Reason.METRICS_MISSING),
            "decode": decision("decode", 1, 1, Reason.STABLE),
        }
    )
    assert (status, reason) == ("False", "MetricsUnavailable")
    assert "prefill: MetricsMissing, holding 2 replicas" in message


def test_gpu_budget_condition() -> None:
    status, reason, _ = autoscaling_condition(
        {
            "prefill": decision("prefill", 4, 4, Reason.GPU_BUDGET),
            "decode": decision("decode", 1, 1, Reason.STABLE),
        }
    )
    assert (status, reason) == ("True", "GPUBudgetReached")


def test_cold_start_is_not_a_metrics_problem() -> None:
    status, reason, _ = autoscaling_condition(
        {"prefill": decision("prefill", 3, 3, Reason.COLD_START)}
    )
    assert (status, reason) == ("True", "Active")


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
    assert [p.name for p in _ready_pods(pods)] == ["a"]


class StatusStore:
    """The two calls write_autoscaler_status makes, over one stored InferenceService."""

    def __init__(self) -> None:
        self.obj: dict[str, Any] = {
            "metadata": {"name": "s", "namespace": "ns", "generation": 1, "resourceVersion": "1"},
            "status": {},
        }
        self.patches: list[dict[str, Any]] = []

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return self.obj

    def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str
    ) -> dict[str, Any]:
        self.patches.append(status)
        self.obj["status"] = merge_patch(self.obj["status"], status)
        self.obj["metadata"]["resourceVersion"] = str(int(resource_version) + 1)
        return self.obj


def test_recovered_metrics_clear_last_error() -> None:
    kube = StatusStore()
    held = {
        "prefill": (decision("prefill", 3, 3, Reason.METRICS_MISSING), False),
        "decode": (decision("decode", 1, 1, Reason.STABLE), False),
    }
    ok = {
        "prefill": (decision("prefill", 3, 3, Reason.STABLE), False),
        "decode": (decision("decode", 1, 1, Reason.STABLE), False),
    }
    err = "prefill: all 3 pods failed; p (127.10.0.1): connection refused"
    write_autoscaler_status(kube, "ns", "s", held, "scrape", err)  # type: ignore[arg-type]
    assert kube.obj["status"]["autoscaling"]["lastError"] == err
    write_autoscaler_status(kube, "ns", "s", ok, "scrape", None)  # type: ignore[arg-type]
    assert kube.patches[-1]["autoscaling"] == {"source": "scrape", "lastError": None}
    assert kube.obj["status"]["autoscaling"] == {"source": "scrape"}
    c = get_condition(
        InferenceServiceStatus.model_validate(kube.obj["status"]).conditions, "Autoscaling"
    )
    assert c is not None and c.status == "True"
    # Nothing changed since: no further write (a steady service costs no status writes).
    writes = len(kube.patches)
    assert write_autoscaler_status(kube, "ns", "s", ok, "scrape", None) is None  # type: ignore[arg-type]
    assert len(kube.patches) == writes


def test_status_patch_nulls_only_the_cleared_error() -> None:
    st = InferenceServiceStatus.model_validate({"autoscaling": {"source": "scrape"}})
    assert status_patch(st)["autoscaling"] == {"source": "scrape", "lastError": None}
    assert "autoscaling" not in status_patch(InferenceServiceStatus())
