"""All children of one InferenceService, in apply order."""

from __future__ import annotations

from typing import Any

from tandem.api.v1alpha1 import Connector, InferenceServiceSpec
from tandem.api.vocabulary import ROLES
from tandem.render.engine import config_hash, lmcache_configmap, pool_deployment, pool_service
from tandem.render.meta import Owner
from tandem.render.router import router_deployment, router_rbac, router_service

Manifest = dict[str, Any]


def build_children(spec: InferenceServiceSpec, owner: Owner) -> list[Manifest]:
    """Desired children. Config first, then Services, then workloads that use them."""
    out: list[Manifest] = []
    cm_hash: str | None = None
    if spec.kv_transfer.connector == Connector.LMCACHE:
        cm = lmcache_configmap(spec, owner)
        cm_hash = config_hash(cm["data"])
        out.append(cm)
    out += router_rbac(owner)
    out += [pool_service(spec, owner, role) for role in ROLES]
    out.append(router_service(spec, owner))
    out += [pool_deployment(spec, owner, role, cm_hash) for role in ROLES]
    out.append(router_deployment(spec, owner))
    return out
