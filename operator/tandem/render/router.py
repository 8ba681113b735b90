"""The P/D router: Deployment, Service, ServiceAccount and the RBAC to read EndpointSlices.

The router's command line is the contract with ``tandem router``: every flag here is one the
router parses, and the router discovers engines from the pools' headless Services.
"""

from __future__ import annotations

from typing import Any, Final

from tandem.api.v1alpha1 import Connector, InferenceServiceSpec
from tandem.api.vocabulary import Role
from tandem.render import lmcache
from tandem.render.engine import served_name
from tandem.render.meta import Owner, metadata
from tandem.render.names import (
    ROUTER,
    labels,
    pool_name,
    router_name,
    selector_labels,
)

ROUTER_COMMAND: Final = ["tandem", "router"]
ROUTER_COMPONENT: Final = "tandem-router"
ROUTER_PORT_NAME: Final = "http"
KV_READY_PORT_NAME: Final = "kv-ready"
CONTAINER_PORT: Final = 8000


def router_args(spec: InferenceServiceSpec, owner: Owner) -> list[str]:
    r = spec.router
    args = [
        "--host", "0.0.0.0",
        "--port", str(CONTAINER_PORT),
        "--model", served_name(spec, owner.name),
        "--connector", str(spec.kv_transfer.connector),
        "--policy", str(r.policy),
        "--min-prompt-tokens", str(r.disaggregation.min_prompt_tokens),
        "--on-prefill-failure", str(r.on_prefill_failure),
        "--request-timeout", str(r.request_timeout_seconds),
        "--max-inflight-per-engine", str(r.max_inflight_per_engine),
        "--namespace", owner.namespace,
        "--prefill-service", pool_name(owner.name, Role.PREFILL),
        "--decode-service", pool_name(owner.name, Role.DECODE),
        "--engine-port", str(spec.engine.port),
    ]  # fmt: skip
    if spec.kv_transfer.connector == Connector.LMCACHE:
        init_ports, alloc_ports = lmcache.decoder_ports(spec)
        args += [
            "--kv-ready-port", str(spec.kv_transfer.lmcache_settings.proxy_port),
            "--advertise-host", "$(POD_IP)",
            "--decoder-init-ports", ",".join(map(str, init_ports)),
            "--decoder-alloc-ports", ",".join(map(str, alloc_ports)),
        ]  # fmt: skip
    return args


def _labels(owner: Owner) -> dict[str, str]:
    return labels(owner.name, ROUTER, ROUTER_COMPONENT)


def router_deployment(spec: InferenceServiceSpec, owner: Owner) -> dict[str, Any]:
    r = spec.router
    ports = [{"name": ROUTER_PORT_NAME, "containerPort": CONTAINER_PORT, "protocol": "TCP"}]
    if spec.kv_transfer.connector == Connector.LMCACHE:
        port = spec.kv_transfer.lmcache_settings.proxy_port
        ports.append({"name": KV_READY_PORT_NAME, "containerPort": port, "protocol": "TCP"})
    requests = {"cpu": r.resources.cpu or "500m", "memory": r.resources.memory or "512Mi"}
    container = {
        "name": "router",
        "image": r.image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(ROUTER_COMMAND),
        "args": router_args(spec, owner),
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": ports,
        "resources": {"requests": requests, "limits": {"memory": requests["memory"]}},
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": ROUTER_PORT_NAME},
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "tcpSocket": {"port": ROUTER_PORT_NAME},
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
        "metadata": metadata(owner, router_name(owner.name), _labels(owner)),
        "spec": {
            "replicas": r.replicas,
            "selector": {"matchLabels": selector_labels(owner.name, ROUTER)},
            "template": {
                "metadata": {"labels": _labels(owner)},
                "spec": {
                    "serviceAccountName": router_name(owner.name),
                    "containers": [container],
                    "enableServiceLinks": False,
                },
            },
        },
    }


def router_service(spec: InferenceServiceSpec, owner: Owner) -> dict[str, Any]:
    ports: list[dict[str, Any]] = [
        {
            "name": ROUTER_PORT_NAME,
            "port": spec.router.port,
            "targetPort": ROUTER_PORT_NAME,
            "protocol": "TCP",
        }
    ]
    if spec.kv_transfer.connector == Connector.LMCACHE:
        port = spec.kv_transfer.lmcache_settings.proxy_port
        ports.append(
            {"name": KV_READY_PORT_NAME, "port": port, "targetPort": port, "protocol": "TCP"}
        )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, router_name(owner.name), _labels(owner)),
        "spec": {
            "type": str(spec.router.service_type),
            "selector": selector_labels(owner.name, ROUTER),
            "ports": ports,
        },
    }


def router_rbac(owner: Owner) -> list[dict[str, Any]]:
    """ServiceAccount + Role + RoleBinding: read the pools' EndpointSlices, nothing else."""
    name = router_name(owner.name)
    lbl = _labels(owner)
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
