"""Object metadata shared by every child: owner reference, labels, namespace."""

from __future__ import annotations

from typing import Any

from tandem.plan.model import Owner


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
