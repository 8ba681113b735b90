"""Applying children: bad input never stalls or half-applies, foreign objects are never taken
over, replicas change hands once, an idle reconcile writes nothing.

The API server is the in-memory stand-in of tests/memory_kube.py with error injection; the
reconcile, the error classification and the status writer are the real ones.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tandem.reconcile.k8s import Invalid, Transient, _error
from tandem.reconcile.reconciler import reconcile
from tests.conftest import make_spec
from tests.memory_kube import MemoryKube, replicas_manager

NS, NAME, UID = "ml", "svc", "uid-isvc"


def isvc(kube: MemoryKube, **overrides: Any) -> dict[str, Any]:
    """Create (or change) the InferenceService; returns its body as a handler would get it."""
    stored = kube.objects.get(("InferenceService", NAME))
    generation = int(stored["metadata"]["generation"]) + 1 if stored else 1
    obj = {
        "apiVersion": "tandem.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": NAME, "namespace": NS, "uid": UID, "generation": generation},
        "spec": make_spec(**overrides),
    }
    if stored is not None:
        obj["status"] = stored.get("status", {})
    kube.put(obj)
    return kube.get("InferenceService", NS, NAME)


def run(kube: MemoryKube) -> Any:
    return reconcile(kube, kube.get("InferenceService", NS, NAME))  # type: ignore[arg-type]


def accepted(kube: MemoryKube) -> dict[str, Any]:
    status = kube.get("InferenceService", NS, NAME)["status"]
    return dict(next(c for c in status["conditions"] if c["type"] == "Accepted"))


def api_error(status: int, reason: str, message: str, **details: Any) -> Exception:
    body = {"kind": "Status", "status": "Failure", "reason": reason, "message": message}
    if details:
        body["details"] = details
    return _error(status, json.dumps(body))


UNPROCESSABLE = api_error(
    422,
    "Invalid",
    'Deployment.apps "svc-decode" is invalid: spec.template.spec.containers[0].image: '
    "Required value",
    causes=[{"field": "spec.template.spec.containers[0].image", "reason": "FieldValueRequired"}],
)
TYPED_PATCH = api_error(
    400,
    "BadRequest",
    "failed to create typed patch object (ml/svc-decode; apps/v1, Kind=Deployment): "
    '.spec.template.spec.containers[name="vllm"].ports: duplicate entries for key '
    '[containerPort=8000,protocol="TCP"]',
)
DUPLICATE_500 = api_error(
    500,
    "InternalError",
    'Internal error occurred: failed to merge: .spec.template.spec.containers[name="vllm"].env: '
    'duplicate entries for key [name="HF_HOME"]',
)


# ------------------------------------------------------------------ error classification


@pytest.mark.parametrize("error", [UNPROCESSABLE, TYPED_PATCH, DUPLICATE_500])
def test_errors_about_the_object_are_permanent(error: Exception) -> None:
    assert isinstance(error, Invalid)


def test_other_server_errors_stay_transient() -> None:
    assert isinstance(api_error(500, "InternalError", "etcdserver: request timed out"), Transient)
    assert isinstance(api_error(503, "ServiceUnavailable", "try again"), Transient)
    assert isinstance(api_error(429, "TooManyRequests", "slow down"), Transient)


def test_the_fields_the_api_server_named_are_kept() -> None:
    assert isinstance(UNPROCESSABLE, Invalid)
    assert UNPROCESSABLE.fields == ("spec.template.spec.containers[0].image",)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("error", [UNPROCESSABLE, TYPED_PATCH, DUPLICATE_500])
def test_a_refused_child_applies_nothing(error: Invalid) -> None:
    kube = MemoryKube(NS)
    isvc(kube)
    kube.refuse["Deployment/svc-decode"] = error
    outcome = run(kube)
    # The dry run found it before the first real write: nothing at all was created.
    assert [c for c in kube.writes() if c[0] != "status"] == []
    assert ("dry-run", "Deployment/svc-decode") in kube.calls
    assert not [k for k in kube.objects if k[0] != "InferenceService"]
    cond = accepted(kube)
    assert (cond["status"], cond["reason"]) == ("False", "ApplyFailed")
    assert "Deployment/svc-decode" in cond["message"]
    assert ".ports" in cond["message"] or "containers" in cond["message"]
    assert [e.type for e in outcome.events if e.reason == "ApplyFailed"] == ["Warning"]


def test_the_same_rejection_again_writes_nothing_and_raises_nothing() -> None:
    kube = MemoryKube(NS)
    isvc(kube)
    kube.refuse["Deployment/svc-decode"] = TYPED_PATCH
    assert run(kube).newly_rejected
    writes = len(kube.status_writes)
    again = run(kube)  # a resync, or a child event: no exception for kopf to retry on
    assert len(kube.status_writes) == writes
    assert again.events == [] and not again.newly_rejected and again.rejection is not None


def test_the_message_names_fields_the_api_server_named_apart() -> None:
    kube = MemoryKube(NS)
    isvc(kube)
    kube.refuse["Deployment/svc-decode"] = Invalid(
        422, "Invalid", 'Deployment.apps "svc-decode" is invalid', ("spec.replicas",)
    )
    run(kube)
    assert accepted(kube)["message"].endswith("is invalid (fields: spec.replicas)")


def test_a_refused_change_leaves_the_running_children_untouched() -> None:
    kube = MemoryKube(NS)
    isvc(kube, decode={"replicas": 1})
    run(kube)
    before = {k: v["metadata"]["resourceVersion"] for k, v in kube.objects.items()}
    isvc(kube, decode={"replicas": 3}, router={"replicas": 3})
    kube.refuse["Deployment/svc-router"] = UNPROCESSABLE
    kube.calls.clear()
    run(kube)
    assert [c for c in kube.writes() if c[0] != "status"] == []
    # The decode Deployment also differed (3 replicas) but was not applied either.
    assert ("dry-run", "Deployment/svc-decode") in kube.calls
    after = {k: v["metadata"]["resourceVersion"] for k, v in kube.objects.items()}
    assert {k: v for k, v in after.items() if k[0] != "InferenceService"} == {
        k: v for k, v in before.items() if k[0] != "InferenceService"
    }
    assert accepted(kube)["reason"] == "ApplyFailed"


def test_a_fixed_spec_is_accepted_again() -> None:
    kube = MemoryKube(NS)
    isvc(kube)
    kube.refuse["Deployment/svc-decode"] = UNPROCESSABLE
    run(kube)
    del kube.refuse["Deployment/svc-decode"]
    isvc(kube, decode={"replicas": 2})
    outcome = run(kube)
    assert accepted(kube)["status"] == "True"
    assert "Deployment/svc-decode" in outcome.applied


def test_a_child_refused_only_for_real_stops_there() -> None:
    """The dry run can pass and the real write still fail (a quota, a webhook): the children
    after it are not applied, and the rejection is reported, not retried hot."""
    kube = MemoryKube(NS)
    isvc(kube)
    kube.refuse_real["Service/svc-router"] = UNPROCESSABLE
    outcome = run(kube)
    assert "Service/svc-router" not in outcome.applied
    assert not [k for k in kube.objects if k[0] == "Deployment"]
    assert accepted(kube)["reason"] == "ApplyFailed"


def test_a_dry_run_that_needs_an_earlier_child_does_not_block() -> None:
    """Without the bind verb, the API server checks a RoleBinding against its Role; in a dry
    run of a new service that Role does not exist yet and the answer is 404."""
    kube = MemoryKube(NS)
    isvc(kube)
    kube.refuse_dry_run["RoleBinding/svc-router"] = api_error(
        404, "NotFound", 'rolebindings.rbac.authorization.k8s.io "svc-router" not found'
    )
    outcome = run(kube)
    assert "RoleBinding/svc-router" in outcome.applied and outcome.rejection is None
    assert accepted(kube)["status"] == "True"


def test_transient_errors_propagate_for_a_retry() -> None:
    kube = MemoryKube(NS)
    isvc(kube)
    kube.refuse["Deployment/svc-decode"] = api_error(503, "ServiceUnavailable", "try again")
    with pytest.raises(Transient):
        run(kube)
    assert [c for c in kube.writes() if c[0] != "status"] == []


# ------------------------------------------------------------------ ownership


def test_a_foreign_object_with_a_childs_name_is_never_taken_over() -> None:
    kube = MemoryKube(NS)
    kube.put(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "svc-router", "namespace": NS, "labels": {"app": "other"}},
            "spec": {"ports": [{"port": 80}]},
        }
    )
    isvc(kube)
    outcome = run(kube)
    assert [c for c in kube.writes() if c[0] != "status"] == []
    assert kube.objects[("Service", "svc-router")]["metadata"]["labels"] == {"app": "other"}
    cond = accepted(kube)
    assert (cond["status"], cond["reason"]) == ("False", "ChildConflict")
    assert "Service/svc-router" in cond["message"] and "no owner" in cond["message"]
    assert [e.reason for e in outcome.events if e.type == "Warning"] == ["ChildConflict"]


def test_an_object_controlled_by_another_owner_is_named() -> None:
    kube = MemoryKube(NS)
    kube.put(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "svc-lmcache",
                "namespace": NS,
                "ownerReferences": [
                    {"kind": "InferenceService", "name": "svc", "uid": "old", "controller": True}
                ],
            },
        }
    )
    isvc(kube, kvTransfer={"connector": "lmcache"})
    run(kube)
    cond = accepted(kube)
    assert cond["reason"] == "ChildConflict"
    assert "ConfigMap/svc-lmcache" in cond["message"]
    assert "InferenceService/svc" in cond["message"]


# ------------------------------------------------------------------ hand-over and idleness


def test_autoscaled_pools_start_at_their_replicas_under_the_autoscaler() -> None:
    kube = MemoryKube(NS)
    isvc(kube, autoscaling={"enabled": True}, prefill={"replicas": 2})
    run(kube)
    prefill = kube.objects[("Deployment", "svc-prefill")]
    assert prefill["spec"]["replicas"] == 2
    assert replicas_manager(prefill) == "tandem-autoscaler"
    kube.calls.clear()
    run(kube)
    assert kube.writes() == []  # handed over once


def test_turning_autoscaling_on_hands_the_running_replicas_over() -> None:
    kube = MemoryKube(NS)
    isvc(kube, decode={"replicas": 3})
    run(kube)
    assert replicas_manager(kube.objects[("Deployment", "svc-decode")]) == "tandem"
    isvc(
        kube,
        decode={"replicas": 2, "autoscaling": {"minReplicas": 1, "maxReplicas": 2}},
        autoscaling={"enabled": True},
    )
    kube.history.clear()
    run(kube)
    decode = kube.objects[("Deployment", "svc-decode")]
    # The 3 running replicas were handed over (clamped to maxReplicas) before Tandem stopped
    # sending the field: never dropped (back to 1) on the way.
    seen = [o["spec"].get("replicas") for k, o in kube.history if k == "Deployment/svc-decode"]
    assert seen == [2, 2]
    assert decode["spec"]["replicas"] == 2
    assert replicas_manager(decode) == "tandem-autoscaler"
    kube.calls.clear()
    run(kube)
    assert kube.writes() == []  # handed over once


def test_an_idle_reconcile_sends_nothing() -> None:
    kube = MemoryKube(NS)
    isvc(kube)
    run(kube)
    kube.calls.clear()
    outcome = run(kube)
    assert kube.calls == []  # no dry run, no apply, no status write
    assert outcome.applied == [] and not outcome.status_written


def test_a_deleted_child_is_put_back_by_the_next_reconcile() -> None:
    """Child events run the full reconcile: a Deployment deleted by hand comes back at once."""
    kube = MemoryKube(NS)
    isvc(kube)
    run(kube)
    del kube.objects[("Deployment", "svc-router")]
    outcome = run(kube)
    assert outcome.applied == ["Deployment/svc-router"]
    assert ("Deployment", "svc-router") in kube.objects


def test_a_service_being_deleted_is_left_to_garbage_collection() -> None:
    """A child event while the owner waits on its finalizer must not re-create children."""
    kube = MemoryKube(NS)
    isvc(kube)
    run(kube)
    del kube.objects[("Deployment", "svc-router")]
    kube.objects[("InferenceService", NAME)]["metadata"]["deletionTimestamp"] = (
        "2026-01-01T00:00:00Z"
    )
    kube.calls.clear()
    assert run(kube).applied == []
    assert kube.calls == []
