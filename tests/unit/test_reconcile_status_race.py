"""Status writes under concurrency: a conflict means recompute, never re-send stale status.

Two status refreshes run at once in the operator (the InferenceService's own handler and a
child Deployment's event). One that listed the Deployments a moment earlier must not overwrite
what a newer one wrote. The Kube here is an in-memory stand-in with resourceVersions and the
status subresource's precondition; the reconcile logic under test is the real one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from tandem.api.v1alpha1 import InferenceServiceSpec
from tandem.reconcile.k8s import Conflict, NotFound
from tandem.reconcile.reconciler import reconcile
from tandem.render import Owner, build_children
from tests.conftest import make_spec
from tests.merge_patch import merge_patch

NS, NAME, UID = "ml", "svc", "uid-1"


class MemoryKube:
    """Objects by (kind, name); every write bumps one resourceVersion counter."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.rv = 0
        self.before_status_write: Callable[[], None] | None = None
        self.status_writes: list[dict[str, Any]] = []

    def _bump(self, obj: dict[str, Any]) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    def put(self, obj: dict[str, Any]) -> None:
        obj = copy.deepcopy(obj)
        self._bump(obj)
        self.objects[(obj["kind"], obj["metadata"]["name"])] = obj

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        try:
            return copy.deepcopy(self.objects[(kind, name)])
        except KeyError:
            raise NotFound(404, "NotFound", name) from None

    def list_kind(
        self, kind: str, namespace: str | None, selector: str | None = None
    ) -> list[dict[str, Any]]:
        want = dict(p.split("=", 1) for p in (selector or "").split(",") if "=" in p)
        out = []
        for (k, _), obj in self.objects.items():
            labels = obj["metadata"].get("labels", {})
            if k == kind and all(labels.get(a) == b for a, b in want.items()):
                out.append(copy.deepcopy(obj))
        return out

    def nodes(self) -> list[dict[str, Any]]:
        return []

    def apply(self, manifest: dict[str, Any], field_manager: str | None = None) -> dict[str, Any]:
        self.put(manifest)
        return self.get(manifest["kind"], NS, manifest["metadata"]["name"])

    def delete(self, kind: str, namespace: str | None, name: str, uid: str | None = None) -> None:
        self.objects.pop((kind, name), None)

    def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str
    ) -> dict[str, Any]:
        if self.before_status_write is not None:
            hook, self.before_status_write = self.before_status_write, None
            hook()
        obj = self.objects[("InferenceService", name)]
        if obj["metadata"]["resourceVersion"] != resource_version:
            raise Conflict(409, "Conflict", "the object has been modified")
        obj["status"] = merge_patch(obj.get("status"), status)
        self._bump(obj)
        self.status_writes.append(copy.deepcopy(obj["status"]))
        return copy.deepcopy(obj)


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
    kube = MemoryKube()
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


def test_stale_refresh_does_not_overwrite_a_newer_status() -> None:
    kube = cluster()
    set_ready(kube, "prefill", 1)
    stale_body = kube.get("InferenceService", NS, NAME)

    def newer_refresh_lands_first() -> None:
        # While the stale refresh was computing "1/2", the second prefill pod became ready and
        # a concurrent refresh wrote Ready=True.
        set_ready(kube, "prefill", 2)
        reconcile(kube, kube.get("InferenceService", NS, NAME), apply=False)  # type: ignore[arg-type]

    kube.before_status_write = newer_refresh_lands_first
    reconcile(kube, stale_body, apply=False)  # type: ignore[arg-type]

    final = kube.get("InferenceService", NS, NAME)["status"]
    assert ready_of(final) == ("True", "2/2")
    # The stale "1/2" was never written: only the concurrent refresh's status is stored.
    assert [ready_of(s) for s in kube.status_writes] == [("True", "2/2")]


def test_conflict_recomputes_and_keeps_what_the_autoscaler_wrote() -> None:
    kube = cluster(autoscaling={"enabled": True})
    set_ready(kube, "prefill", 2)
    body = kube.get("InferenceService", NS, NAME)

    def autoscaler_writes() -> None:
        obj = kube.objects[("InferenceService", NAME)]
        obj.setdefault("status", {})["autoscaling"] = {"lastError": "scrape failed"}
        kube._bump(obj)

    kube.before_status_write = autoscaler_writes
    reconcile(kube, body, apply=False)  # type: ignore[arg-type]
    final = kube.get("InferenceService", NS, NAME)["status"]
    assert ready_of(final) == ("True", "2/2")
    assert final["autoscaling"]["lastError"] == "scrape failed"


def test_conflict_with_a_newer_generation_leaves_status_to_its_reconcile() -> None:
    kube = cluster()
    set_ready(kube, "prefill", 1)
    body = kube.get("InferenceService", NS, NAME)

    def spec_changes() -> None:
        obj = kube.objects[("InferenceService", NAME)]
        obj["metadata"]["generation"] = 2
        kube._bump(obj)

    kube.before_status_write = spec_changes
    reconcile(kube, body, apply=False)  # type: ignore[arg-type]
    assert kube.status_writes == []
