"""An in-memory API server stand-in for reconcile tests.

Objects by (kind, name) in one namespace, one resourceVersion counter, the status
subresource's precondition, JSON merge patch, server-side apply reduced to what the reconcile
relies on (a merge of the applied intent; ``spec.replicas`` dropped when the manager that last
sent it stops sending it and nobody else owns it), ``dryRun=All``, and error injection. The
reconcile logic under test is the real one.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Any

from tandem.reconcile.k8s import ApiError, Conflict, NotFound
from tests.merge_patch import merge_patch

Obj = dict[str, Any]


def _merge(target: Any, intent: Any) -> Any:
    """Apply's merge of an intent into what is stored: objects key by key, lists whole."""
    if not isinstance(intent, dict) or not isinstance(target, dict):
        return copy.deepcopy(intent)
    out = dict(target)
    for key, value in intent.items():
        out[key] = _merge(target.get(key), value)
    return out


def replicas_manager(obj: Obj) -> str | None:
    for mf in obj["metadata"].get("managedFields", []):
        if "f:replicas" in str(mf.get("fieldsV1", {})):
            return str(mf["manager"])
    return None


def _own_replicas(obj: Obj, stored: Obj | None, manifest: Obj, manager: str) -> None:
    """Track who owns ``spec.replicas``; it goes when its sole owner stops sending it."""
    spec = obj.get("spec")
    if not isinstance(spec, dict) or "replicas" not in spec:
        return
    if "replicas" in (manifest.get("spec") or {}):
        fields = {"f:spec": {"f:replicas": {}}}
        obj["metadata"]["managedFields"] = [{"manager": manager, "fieldsV1": fields}]
    elif stored is not None and replicas_manager(stored) == manager:
        del spec["replicas"]
        obj["metadata"]["managedFields"] = []


class MemoryKube:
    """The calls the reconcile makes, over one namespace held in a dict."""

    def __init__(self, namespace: str = "ml") -> None:
        self.namespace = namespace
        self.objects: dict[tuple[str, str], Obj] = {}
        self.rv = 0
        self._uids = itertools.count(1)
        self.before_status_write: Callable[[], None] | None = None
        self.status_writes: list[Obj] = []
        # Every request that could change something, in order: (verb, "Kind/name").
        self.calls: list[tuple[str, str]] = []
        # Errors to answer: on every apply of a child, or only on real (not dry-run) applies.
        self.refuse: dict[str, ApiError] = {}
        self.refuse_real: dict[str, ApiError] = {}
        self.refuse_dry_run: dict[str, ApiError] = {}
        # Each object as stored after each real apply: ("Kind/name", object).
        self.history: list[tuple[str, Obj]] = []

    # ----------------------------------------------------------------- helpers for tests

    def _bump(self, obj: Obj) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    def put(self, obj: Obj) -> Obj:
        """Store ``obj`` as is (a uid is added if it has none)."""
        obj = copy.deepcopy(obj)
        obj["metadata"].setdefault("uid", f"uid-{next(self._uids)}")
        obj["metadata"].setdefault("namespace", self.namespace)
        self._bump(obj)
        self.objects[(obj["kind"], obj["metadata"]["name"])] = obj
        return obj

    def writes(self) -> list[tuple[str, str]]:
        """The calls that changed something (dry runs and reads left out)."""
        return [c for c in self.calls if c[0] in ("apply", "delete", "patch", "status")]

    # ------------------------------------------------------------------ the Kube surface

    def get(self, kind: str, namespace: str | None, name: str) -> Obj:
        try:
            return copy.deepcopy(self.objects[(kind, name)])
        except KeyError:
            raise NotFound(404, "NotFound", f'{kind} "{name}" not found') from None

    def list_kind(self, kind: str, namespace: str | None, selector: str | None = None) -> list[Obj]:
        want = dict(p.split("=", 1) for p in (selector or "").split(",") if "=" in p)
        out = []
        for (k, _), obj in self.objects.items():
            labels = obj["metadata"].get("labels", {})
            if k == kind and all(labels.get(a) == b for a, b in want.items()):
                out.append(copy.deepcopy(obj))
        return out

    def nodes(self) -> list[Obj]:
        return []

    def apply(
        self,
        manifest: Obj,
        field_manager: str | None = None,
        force: bool = True,
        dry_run: bool = False,
    ) -> Obj:
        key = f"{manifest['kind']}/{manifest['metadata']['name']}"
        self.calls.append(("dry-run" if dry_run else "apply", key))
        by_kind = self.refuse_dry_run if dry_run else self.refuse_real
        error = self.refuse.get(key) or by_kind.get(key)
        if error is not None:
            raise error
        stored = self.objects.get((manifest["kind"], manifest["metadata"]["name"]))
        obj = _merge(copy.deepcopy(stored) if stored else {}, manifest)
        obj["metadata"].setdefault("uid", f"uid-{next(self._uids)}")
        _own_replicas(obj, stored, manifest, field_manager or "tandem")
        if dry_run:
            return copy.deepcopy(obj)
        if stored is not None and stored.get("spec") != obj.get("spec"):
            obj["metadata"]["generation"] = int(stored["metadata"].get("generation", 1)) + 1
        obj["metadata"].setdefault("generation", 1)
        self._bump(obj)
        self.objects[(obj["kind"], obj["metadata"]["name"])] = obj
        self.history.append((key, copy.deepcopy(obj)))
        return copy.deepcopy(obj)

    def delete(self, kind: str, namespace: str | None, name: str, uid: str | None = None) -> None:
        self.calls.append(("delete", f"{kind}/{name}"))
        self.objects.pop((kind, name), None)

    def patch(self, kind: str, namespace: str | None, name: str, body: Obj) -> Obj:
        self.calls.append(("patch", f"{kind}/{name}"))
        obj = self.objects[(kind, name)]
        self.objects[(kind, name)] = merge_patch(obj, body)
        self._bump(self.objects[(kind, name)])
        return copy.deepcopy(self.objects[(kind, name)])

    def patch_status(self, namespace: str, name: str, status: Obj, resource_version: str) -> Obj:
        if self.before_status_write is not None:
            hook, self.before_status_write = self.before_status_write, None
            hook()
        obj = self.objects[("InferenceService", name)]
        if obj["metadata"]["resourceVersion"] != resource_version:
            raise Conflict(409, "Conflict", "the object has been modified")
        self.calls.append(("status", f"InferenceService/{name}"))
        obj["status"] = merge_patch(obj.get("status"), status)
        self._bump(obj)
        self.status_writes.append(copy.deepcopy(obj["status"]))
        return copy.deepcopy(obj)
