"""The plan: a validated spec → every fact about the service, derived once (pure).

:func:`plan_service` is called once per reconcile. The renderers (``tandem.render``) turn the
plan into manifests, status reads its display facts (parallelism, GPUs per replica, endpoint),
and the autoscaler takes its configuration from it. Connector specifics live in ``plan/kv/``,
one strategy per connector. Nothing here imports kopf, the Kubernetes client or aiohttp.
"""

from __future__ import annotations

from tandem.plan.model import (
    ConfigFile,
    ContainerPort,
    Owner,
    PoolPlan,
    Replicas,
    RouterPlan,
    ServicePlan,
)
from tandem.plan.service import plan_service

__all__ = [
    "ConfigFile",
    "ContainerPort",
    "Owner",
    "PoolPlan",
    "Replicas",
    "RouterPlan",
    "ServicePlan",
    "plan_service",
]
