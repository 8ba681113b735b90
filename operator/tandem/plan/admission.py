"""Semantic checks only the operator can make (they need more than the object itself).

The CRD's schema and CEL rules reject everything judgeable from the manifest alone; what is left
here needs the cluster (node capacity) or knowledge of vLLM's command line. Each failure is an
``Accepted=False`` reason and message; nothing is applied while one stands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tandem.api.conditions import ConditionReason
from tandem.api.owned import owned_env_conflicts, owned_flag_conflicts
from tandem.api.v1alpha1 import InferenceServiceSpec
from tandem.api.vocabulary import ROLES
from tandem.plan.headroom import gpu_memory_bytes, headroom_problem
from tandem.plan.model import ServicePlan
from tandem.plan.quantity import to_bytes


@dataclass(frozen=True)
class Rejection:
    reason: str
    message: str


def _node_gpus(node: dict[str, Any], resource: str) -> int:
    alloc = node.get("status", {}).get("allocatable", {}) or {}
    try:
        return to_bytes(str(alloc.get(resource, "0")))
    except ValueError:
        return 0


def _matches(node: dict[str, Any], selector: dict[str, str]) -> bool:
    node_labels = node.get("metadata", {}).get("labels", {}) or {}
    return all(node_labels.get(k) == v for k, v in selector.items())


def check_spec(spec: InferenceServiceSpec, nodes: list[dict[str, Any]] | None) -> Rejection | None:
    """First reason the spec cannot be honoured, or None. ``nodes=None``: capacity unknown."""
    for found, what in (
        (owned_flag_conflicts(spec), "args set flags"),
        (owned_env_conflicts(spec), "env sets variables"),
    ):
        if found:
            return Rejection(
                ConditionReason.CONFLICTING_ENGINE_ARGS,
                f"{what} Tandem derives from the spec: " + ", ".join(found),
            )
    for role in ROLES:
        pool = spec.pool(role)
        gpus = pool.parallelism.gpus
        if gpus > pool.gpus_per_node:
            return Rejection(
                ConditionReason.REPLICA_EXCEEDS_NODE,
                f"spec.{role}: a replica needs tensor x pipeline = {gpus} GPUs but gpusPerNode "
                f"is {pool.gpus_per_node}; replicas spanning nodes are not supported yet",
            )
        if nodes is None:
            continue
        resource = pool.resources.gpu_resource_name
        candidates = [n for n in nodes if _matches(n, pool.node_selector)]
        best = max((_node_gpus(n, resource) for n in candidates), default=0)
        # No node offers the resource at all: perhaps a cluster that adds GPU nodes on demand.
        # Leave it to the scheduler; PrefillReady/DecodeReady will say the pods are Pending.
        if 0 < best < gpus:
            where = f" matching nodeSelector {pool.node_selector}" if pool.node_selector else ""
            return Rejection(
                ConditionReason.NO_NODE_FITS_REPLICA,
                f"spec.{role}: a replica needs {gpus} {resource} on one node, but the largest "
                f"node{where} offers {best}",
            )
    return None


def check_plan(plan: ServicePlan, nodes: list[dict[str, Any]] | None) -> Rejection | None:
    """What only the plan and the nodes can tell: a connector buffer that no GPU can hold."""
    if nodes is None:
        return None
    for pool in plan.pools.values():
        gpu_bytes = gpu_memory_bytes(nodes, pool.node_selector)
        problem = None if gpu_bytes is None else headroom_problem(pool, gpu_bytes)
        if problem is not None:
            return Rejection(ConditionReason.KV_BUFFER_EXCEEDS_HEADROOM, problem)
    return None
