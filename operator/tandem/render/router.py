"""The P/D router: Deployment, Service, ServiceAccount and the RBAC to read EndpointSlices."""

from __future__ import annotations

from typing import Any, Final

from tandem.api.v1alpha1 import InferenceServiceSpec
from tandem.plan import plan_service
from tandem.plan.model import Owner, RouterPlan
from tandem.render.meta import metadata
from tandem.render.pool import container_ports

ROUTER_COMMAND: Final = ["tandem", "router"]


def router_deployment(router: RouterPlan, owner: Owner) -> dict[str, Any]:
    http = router.ports[0].name
    requests = dict(router.resources)
    container = {
        "name": "router",
        "image": router.image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(ROUTER_COMMAND),
        "args": router.config.to_args(),
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": container_ports(router.ports),
        "resources": {"requests": requests, "limits": {"memory": requests["memory"]}},
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": http},
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "tcpSocket": {"port": http},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(owner, router.name, router.labels),
        "spec": {
            "replicas": router.replicas,
            "selector": {"matchLabels": dict(router.selector)},
            "template": {
                "metadata": {"labels": dict(router.labels)},
                "spec": {
                    "serviceAccountName": router.name,
                    "containers": [container],
                    "enableServiceLinks": False,
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                },
            },
        },
    }


def router_services(router: RouterPlan, owner: Owner) -> list[dict[str, Any]]:
    """The router Service (HTTP, of the type the spec asks) and, for a connector that needs
    one, a ClusterIP Service of its internal ports (LMCache's KV-ready), so those never get
    exposed when the router Service is a LoadBalancer."""
    http, *internal = router.ports
    out = [
        _service(
            router,
            owner,
            router.name,
            router.service_type,
            [{"name": http.name, "port": router.service_port, "targetPort": http.name}],
        )
    ]
    if router.internal_service and internal:
        ports = [{"name": p.name, "port": p.port, "targetPort": p.port} for p in internal]
        out.append(_service(router, owner, router.internal_service, "ClusterIP", ports))
    return out


def _service(
    router: RouterPlan, owner: Owner, name: str, kind: str, ports: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, name, router.labels),
        "spec": {
            "type": kind,
            "selector": dict(router.selector),
            "ports": [{**p, "protocol": "TCP"} for p in ports],
        },
    }


def router_rbac(router: RouterPlan, owner: Owner) -> list[dict[str, Any]]:
    """ServiceAccount + Role + RoleBinding: read the pools' EndpointSlices, nothing else."""
    name, lbl = router.name, router.labels
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": metadata(owner, name, lbl),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": metadata(owner, name, lbl),
            "rules": [
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": metadata(owner, name, lbl),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
        },
    ]


def router_args(spec: InferenceServiceSpec, owner: Owner) -> list[str]:
    """The router's command line for a spec, as the router Deployment carries it."""
    return plan_service(spec, owner).router.config.to_args()
