"""Deterministic child names and the labels every child carries.

Names derive from the InferenceService name and the role only (never ``generateName``), so the
reconciler can find, apply and prune children by name and label alone.
"""

from __future__ import annotations

from typing import Final

from tandem.api.vocabulary import Role

# The router is a component, not a pool: it has no Role.
ROUTER: Final = "router"

LABEL_ROLE: Final = "tandem.dev/role"
LABEL_INSTANCE: Final = "tandem.dev/instance"
MANAGED_BY: Final = "tandem-operator"
PART_OF: Final = "tandem"

ENGINE_PORT_NAME: Final = "http"


def pool_name(name: str, role: Role) -> str:
    """Deployment and headless Service of a pool: ``<name>-prefill`` / ``<name>-decode``."""
    return f"{name}-{role}"


def router_name(name: str) -> str:
    return f"{name}-router"


def lmcache_config_name(name: str) -> str:
    return f"{name}-lmcache"


def selector_labels(name: str, role: str) -> dict[str, str]:
    """Immutable Deployment selector: the instance and the role."""
    return {LABEL_INSTANCE: name, LABEL_ROLE: str(role)}


def labels(name: str, role: str, component_name: str, version: str | None = None) -> dict[str, str]:
    """Standard ``app.kubernetes.io/*`` labels plus Tandem's own."""
    out = {
        "app.kubernetes.io/name": component_name,
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": str(role),
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        **selector_labels(name, role),
    }
    if version:
        out["app.kubernetes.io/version"] = version
    return out


def kv_ready_name(name: str) -> str:
    """ClusterIP Service of the routers' KV-ready port (never exposed with the router)."""
    return f"{name}-kv-ready"


def kv_ready_host(name: str, namespace: str) -> str:
    return f"{kv_ready_name(name)}.{namespace}.svc"
