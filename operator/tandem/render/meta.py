"""Object metadata shared by every child: owner reference, labels, namespace."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tandem.api.v1alpha1 import GROUP, KIND, VERSION


@dataclass(frozen=True)
class Owner:
    """The InferenceService that owns the children (garbage collection follows it)."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def metadata(
    owner: Owner, name: str, labels: dict[str, str], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "namespace": owner.namespace,
        "labels": dict(labels),
        "ownerReferences": [owner.reference()],
    }
    if annotations:
        out["annotations"] = dict(annotations)
    return out
