"""The P/D router's plan: its :class:`RouterConfig` (the command line) and its pod.

The router's command line is one typed contract (``tandem.contracts.router``): built here from
the spec, rendered with ``to_args()``, parsed back by ``tandem router``. The connector's part
(LMCache's KV-ready port and decoder ports) comes from the connector's strategy.
"""

from __future__ import annotations

from typing import Final

from tandem.api.v1alpha1 import InferenceServiceSpec
from tandem.api.vocabulary import Role
from tandem.contracts.router import KubernetesSource, RouterConfig
from tandem.plan.engine import served_name
from tandem.plan.kv import KvStrategy
from tandem.plan.model import ContainerPort, Owner, RouterPlan
from tandem.plan.names import (
    ROUTER,
    kv_ready_name,
    labels,
    pool_name,
    router_name,
    selector_labels,
)

ROUTER_COMPONENT: Final = "tandem-router"
ROUTER_PORT_NAME: Final = "http"


def router_config(spec: InferenceServiceSpec, owner: Owner, kv: KvStrategy) -> RouterConfig:
    r = spec.router
    return RouterConfig(
        model=served_name(spec, owner.name),
        connector=kv.connector,
        policy=r.policy,
        min_prompt_tokens=r.disaggregation.min_prompt_tokens,
        on_prefill_failure=r.on_prefill_failure,
        request_timeout=r.request_timeout_seconds,
        max_inflight_per_engine=r.max_inflight_per_engine,
        kubernetes=KubernetesSource(
            namespace=owner.namespace,
            prefill_service=pool_name(owner.name, Role.PREFILL),
            decode_service=pool_name(owner.name, Role.DECODE),
            engine_port=spec.engine.port,
        ),
        **kv.router_fields(),
    )


def router_plan(spec: InferenceServiceSpec, owner: Owner, kv: KvStrategy) -> RouterPlan:
    r = spec.router
    config = router_config(spec, owner, kv)
    internal = kv.router_ports()
    return RouterPlan(
        name=router_name(owner.name),
        labels=labels(owner.name, ROUTER, ROUTER_COMPONENT),
        selector=selector_labels(owner.name, ROUTER),
        config=config,
        replicas=r.replicas,
        image=r.image,
        service_type=str(r.service_type),
        service_port=r.port,
        ports=(ContainerPort(ROUTER_PORT_NAME, config.port), *internal),
        internal_service=kv_ready_name(owner.name) if internal else None,
        resources={"cpu": r.resources.cpu or "500m", "memory": r.resources.memory or "512Mi"},
    )
