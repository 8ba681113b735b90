"""An engine pool's Deployment and headless Service, copied from its :class:`PoolPlan`."""

from __future__ import annotations

from typing import Any, Final

from tandem.plan.model import ContainerPort, Owner, PoolPlan
from tandem.plan.names import ENGINE_PORT_NAME
from tandem.render.meta import metadata

PRESTOP_SECONDS: Final = 15
# Long enough for in-flight requests to finish after the endpoint is removed.
TERMINATION_GRACE_SECONDS: Final = 60


def container_ports(ports: tuple[ContainerPort, ...]) -> list[dict[str, Any]]:
    return [{"name": p.name, "containerPort": p.port, "protocol": "TCP"} for p in ports]


def pod_template(pool: PoolPlan) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "engine",
        "image": pool.image,
        "imagePullPolicy": pool.image_pull_policy,
        "command": list(pool.command),
        "args": list(pool.args),
        "env": [dict(e) for e in pool.env],
        "ports": container_ports(pool.ports),
        "resources": pool.resources,
        "volumeMounts": list(pool.mounts),
        **pool.probes,
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {
                "drop": ["ALL"],
                **({"add": list(pool.capabilities)} if pool.capabilities else {}),
            },
        },
        # Keep serving while the router notices the endpoint is gone (EndpointSlice update),
        # then let vLLM finish in-flight requests within the grace period.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SECONDS)]}}},
    }
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": list(pool.volumes),
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "enableServiceLinks": False,
        # Engines never talk to the API server.
        "automountServiceAccountToken": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
    }
    if pool.runtime_class_name:
        pod_spec["runtimeClassName"] = pool.runtime_class_name
    if pool.affinity:
        pod_spec["affinity"] = dict(pool.affinity)
    if pool.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in pool.image_pull_secrets]
    if pool.node_selector:
        pod_spec["nodeSelector"] = dict(pool.node_selector)
    if pool.tolerations:
        pod_spec["tolerations"] = list(pool.tolerations)
    meta: dict[str, Any] = {"labels": dict(pool.labels)}
    if pool.pod_annotations:
        meta["annotations"] = dict(pool.pod_annotations)
    return {"metadata": meta, "spec": pod_spec}


def pool_deployment(pool: PoolPlan, owner: Owner) -> dict[str, Any]:
    """The pool's Deployment. ``replicas`` is left out when the autoscaler owns it."""
    dep_spec: dict[str, Any] = {
        "selector": {"matchLabels": dict(pool.selector)},
        "strategy": {
            "type": "RollingUpdate",
            # GPUs are scarce: never surge, replace one replica at a time.
            "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
        },
        "revisionHistoryLimit": 5,
        "progressDeadlineSeconds": pool.progress_deadline_seconds,
        "template": pod_template(pool),
    }
    if pool.replicas.fixed is not None:
        dep_spec = {"replicas": pool.replicas.fixed, **dep_spec}
    return {
        "apiVersion": "apps/v1",
        "kind": pool.workload_kind,
        "metadata": metadata(owner, pool.name, pool.labels),
        "spec": dep_spec,
    }


def pool_service(pool: PoolPlan, owner: Owner) -> dict[str, Any]:
    """Headless Service: its EndpointSlices list the pool's ready engines for the router."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, pool.name, pool.labels),
        "spec": {
            "clusterIP": "None",
            "selector": dict(pool.selector),
            "ports": [
                {
                    "name": ENGINE_PORT_NAME,
                    "port": pool.service_port,
                    "targetPort": ENGINE_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }
