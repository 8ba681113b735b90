"""All children of one InferenceService, in apply order, from its plan."""

from __future__ import annotations

from typing import Any

from tandem.api.v1alpha1 import InferenceServiceSpec
from tandem.plan import ConfigFile, Owner, ServicePlan, plan_service
from tandem.plan.names import labels
from tandem.render.meta import metadata
from tandem.render.pool import pool_deployment, pool_service
from tandem.render.router import router_deployment, router_rbac, router_services

Manifest = dict[str, Any]


def config_map(file: ConfigFile, owner: Owner) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(owner, file.name, labels(owner.name, file.role_label, file.component)),
        "data": dict(file.data),
    }


def render_children(plan: ServicePlan) -> list[Manifest]:
    """Desired children. Config first, then Services, then workloads that use them."""
    owner = plan.owner
    out: list[Manifest] = [config_map(f, owner) for f in plan.config_files]
    out += router_rbac(plan.router, owner)
    out += [pool_service(pool, owner) for pool in plan.pools.values()]
    out += router_services(plan.router, owner)
    out += [pool_deployment(pool, owner) for pool in plan.pools.values()]
    out.append(router_deployment(plan.router, owner))
    return out


def build_children(spec: InferenceServiceSpec, owner: Owner) -> list[Manifest]:
    """Plan and render in one call (``tandem render``, tests)."""
    return render_children(plan_service(spec, owner))
