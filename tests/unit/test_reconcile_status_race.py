"""Status writes under concurrency: a conflict means recompute, never re-send stale status.

Several reconciles of one InferenceService run at once in the operator (its own handler, a
child Deployment's event, the resync, the autoscaler's refresh after a tick). All write status
through one writer; one that listed the Deployments a moment earlier, or read an older
autoscaler report, must not overwrite what a newer one wrote. The Kube here is an in-memory
stand-in with resourceVersions and the status subresource's precondition.
"""

from __future__ import annotations

from typing import Any

from tandem.api.v1alpha1 import InferenceServiceSpec
from tandem.api.vocabulary import Role
from tandem.autoscale.policy import Evaluation as Ev
from tandem.autoscale.policy import PolicyMemory, PoolDecision, ScaleReason
from tandem.autoscale.report import Reports, TickReport
from tandem.reconcile.reconciler import reconcile
from tandem.render import Owner, build_children
from tests.conftest import make_spec
from tests.memory_kube import MemoryKube

NS, NAME, UID = "ml", "svc", "uid-isvc"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def set_ready(kube: MemoryKube, role: str, ready: int) -> None:
    dep = kube.objects[("Deployment", f"{NAME}-{role}")]
    want = dep["spec"].setdefault("replicas", 2 if role == "prefill" else 1)
    dep["status"] = {
        "replicas": want,
        "readyReplicas": ready,
        "updatedReplicas": want,
        "observedGeneration": 1,
    }
    dep["metadata"]["generation"] = 1
    kube._bump(dep)


def cluster(**overrides: Any) -> MemoryKube:
    raw = make_spec(prefill={"replicas": 2}, **overrides)
    spec = InferenceServiceSpec.model_validate(raw)
    kube = MemoryKube(NS)
    kube.put(
        {
            "apiVersion": "tandem.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": NAME, "namespace": NS, "uid": UID, "generation": 1},
            "spec": raw,
        }
    )
    for child in build_children(spec, Owner(name=NAME, namespace=NS, uid=UID)):
        kube.put(child)
    set_ready(kube, "decode", 1)
    set_ready(kube, "router", 2)
    return kube


def ready_of(status: dict[str, Any]) -> tuple[str, str]:
    cond = next(c for c in status["conditions"] if c["type"] == "Ready")
    return cond["status"], status["prefill"]["ready"]


def body(kube: MemoryKube) -> dict[str, Any]:
    return kube.get("InferenceService", NS, NAME)


def test_stale_refresh_does_not_overwrite_a_newer_status() -> None:
    kube = cluster()
    set_ready(kube, "prefill", 1)
    stale_body = body(kube)

    def newer_refresh_lands_first() -> None:
        # While the stale refresh was computing "1/2", the second prefill pod became ready and
        # a concurrent refresh wrote Ready=True.
        set_ready(kube, "prefill", 2)
        reconcile(kube, body(kube))  # type: ignore[arg-type]

    kube.before_status_write = newer_refresh_lands_first
    reconcile(kube, stale_body)  # type: ignore[arg-type]

    final = body(kube)["status"]
    assert ready_of(final) == ("True", "2/2")
    # The stale "1/2" was never written: only the concurrent refresh's status is stored.
    assert [ready_of(s) for s in kube.status_writes] == [("True", "2/2")]


def test_conflict_recomputes_from_what_is_stored_now() -> None:
    kube = cluster()
    set_ready(kube, "prefill", 2)
    stale = body(kube)

    def someone_writes() -> None:
        obj = kube.objects[("InferenceService", NAME)]
        obj.setdefault("status", {})["endpoint"] = "http://elsewhere/v1"
        kube._bump(obj)

    kube.before_status_write = someone_writes
    reconcile(kube, stale)  # type: ignore[arg-type]
    final = body(kube)["status"]
    assert ready_of(final) == ("True", "2/2")
    assert final["endpoint"] == f"http://{NAME}-router.{NS}.svc:8000/v1"  # recomputed, not kept


def test_conflict_with_a_newer_generation_leaves_status_to_its_reconcile() -> None:
    kube = cluster()
    set_ready(kube, "prefill", 1)
    stale = body(kube)

    def spec_changes() -> None:
        obj = kube.objects[("InferenceService", NAME)]
        obj["metadata"]["generation"] = 2
        kube._bump(obj)

    kube.before_status_write = spec_changes
    reconcile(kube, stale)  # type: ignore[arg-type]
    assert kube.status_writes == []


# ------------------------------------------------------------ autoscaler vs reconcile


def decision(role: Role, current: int, desired: int, reason: ScaleReason) -> PoolDecision:
    return PoolDecision(role, current, current, desired, desired, reason, "m", 1.0)


def tick(at: float, prefill: PoolDecision, scaled: bool = False) -> TickReport:
    decode = decision(Role.DECODE, 1, 1, ScaleReason.STABLE)
    ev = Ev(prefill=prefill, decode=decode, memory=PolicyMemory())
    moved = {Role.PREFILL: (prefill.current, prefill.desired)} if scaled else {}
    return TickReport(ev, scaled=moved, at=at, source="scrape")


def scale_prefill(kube: MemoryKube, replicas: int) -> None:
    dep = kube.objects[("Deployment", f"{NAME}-prefill")]
    dep["spec"]["replicas"] = replicas
    dep["status"] = {**dep["status"], "replicas": replicas, "updatedReplicas": replicas}
    kube._bump(dep)


def test_an_autoscaler_decision_and_a_concurrent_refresh_do_not_overwrite_each_other() -> None:
    kube = cluster(autoscaling={"enabled": True})
    set_ready(kube, "prefill", 2)
    reports = Reports()
    reports.record(NS, NAME, tick(T0, decision(Role.PREFILL, 2, 2, ScaleReason.STABLE)))
    reconcile(kube, body(kube), reports)  # type: ignore[arg-type]
    resync_body = body(kube)  # a resync read the object before the autoscaler acted

    def autoscaler_acts() -> None:
        # The autoscaler scales prefill 2 -> 4, records its report and refreshes status (its
        # write lands first), all while the resync computes from what it read earlier.
        scale_prefill(kube, 4)
        up = decision(Role.PREFILL, 2, 4, ScaleReason.QUEUE_ABOVE_TARGET)
        reports.record(NS, NAME, tick(T0 + 10, up, scaled=True))
        reconcile(kube, body(kube), reports)  # type: ignore[arg-type]

    kube.before_status_write = autoscaler_acts
    set_ready(kube, "decode", 0)  # something for the resync to write
    reconcile(kube, resync_body, reports)  # type: ignore[arg-type]

    final = body(kube)["status"]
    assert final["prefill"]["lastScale"] == {
        "time": "2026-01-01T00:00:10Z",
        "from": 2,
        "to": 4,
        "reason": "QueueAboveTarget",
    }
    assert final["prefill"]["desiredReplicas"] == 4
    auto = next(c for c in final["conditions"] if c["type"] == "Autoscaling")
    assert "prefill: 4 replicas (QueueAboveTarget)" in auto["message"]
    # ... and the resync's own news (decode not ready) is there too.
    assert final["decode"]["ready"] == "0/1"


def test_a_refresh_with_an_older_report_cannot_undo_a_newer_one() -> None:
    kube = cluster(autoscaling={"enabled": True})
    set_ready(kube, "prefill", 2)
    reports = Reports()
    held = decision(Role.PREFILL, 2, 2, ScaleReason.METRICS_MISSING)
    reports.record(NS, NAME, tick(T0, held))
    stale = body(kube)

    def metrics_come_back() -> None:
        ok = decision(Role.PREFILL, 2, 2, ScaleReason.STABLE)
        reports.record(NS, NAME, tick(T0 + 10, ok))
        reconcile(kube, body(kube), reports)  # type: ignore[arg-type]

    kube.before_status_write = metrics_come_back
    reconcile(kube, stale, reports)  # type: ignore[arg-type]
    auto = next(c for c in body(kube)["status"]["conditions"] if c["type"] == "Autoscaling")
    assert (auto["status"], auto["reason"]) == ("True", "Active")


def test_last_scale_survives_a_restart() -> None:
    kube = cluster(autoscaling={"enabled": True})
    set_ready(kube, "prefill", 2)
    reports = Reports()
    up = decision(Role.PREFILL, 1, 2, ScaleReason.QUEUE_ABOVE_TARGET)
    reports.record(NS, NAME, tick(T0, up, scaled=True))
    reconcile(kube, body(kube), reports)  # type: ignore[arg-type]
    recorded = body(kube)["status"]["prefill"]["lastScale"]
    assert recorded["to"] == 2
    # A new operator process: no reports in memory. Status keeps what it recorded, and so
    # does the first tick that changes nothing.
    fresh = Reports()
    reconcile(kube, body(kube), fresh)  # type: ignore[arg-type]
    assert body(kube)["status"]["prefill"]["lastScale"] == recorded
    fresh.record(NS, NAME, tick(T0 + 60, decision(Role.PREFILL, 2, 2, ScaleReason.STABLE)))
    reconcile(kube, body(kube), fresh)  # type: ignore[arg-type]
    assert body(kube)["status"]["prefill"]["lastScale"] == recorded
