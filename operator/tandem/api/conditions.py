"""Condition vocabulary of InferenceService and the transition rules.

Every condition is set on every reconcile (Unknown until known), follows the Kubernetes API
conventions (``type/status/reason/message/lastTransitionTime/observedGeneration``), and its
``lastTransitionTime`` moves only when ``status`` flips.

Taxonomy (who sets it, when True/False, how it rolls up):

- ``Accepted`` (reconciler): True when the spec validated and every child was built and applied.
  False with ``InvalidSpec`` (the models reject it), ``ConflictingEngineArgs`` (args or env
  override a flag or variable Tandem derives), ``ReplicaExceedsNode`` (tensor x pipeline >
  gpusPerNode; multi-node replicas are not built yet), ``NoNodeFitsReplica`` (no node offers
  that many GPUs), ``KVBufferExceedsHeadroom`` (a connector buffer cannot fit beside vLLM's KV
  cache on the nodes' GPUs), ``ApplyFailed`` (the API server refused a child) or
  ``ChildConflict`` (an object with a child's name exists and is not this CR's). While False
  the running children are left exactly as they were, so the other conditions describe the last
  accepted spec.
- ``PrefillReady`` / ``DecodeReady`` (reconciler, from the pool's Deployment and pods): True
  (``ReplicasReady``) when at least one replica is ready and every desired replica is ready and
  updated; False with ``PodsUnschedulable`` (the scheduler could not place a pod: message from
  the pod's PodScheduled condition), ``Progressing`` (pods starting or rolling), ``ScaledToZero``
  or ``DeploymentMissing``.
- ``RouterReady`` (reconciler): True when at least one router replica is ready.
- ``Autoscaling`` (autoscaler; present only when spec.autoscaling.enabled): True
  (``Active``) while decisions are made from fresh metrics, False with ``MetricsUnavailable``
  (the source failed or the data is stale; replicas are held) or ``GPUBudgetReached``. In
  ``spec.autoscaling.mode: Shadow`` it is True with ``Shadow`` while metrics are fresh: the
  autoscaler only recommends, and the message says what it would do per pool.
- ``KVTransferEffective`` (the KV monitor, ``tandem.kvtruth``; from the routers' per-pair
  hand-off outcomes and the decoders' prompt tokens by source, judged every interval): True
  (``Effective``) while hand-offs move KV and decoders load it; False with ``TransferFailing``
  (hand-offs fail, NIXL transfers fail or leases expire, pairs are out of rotation, or decoders
  recompute what was handed off) or ``DecodeOnlyFallback`` (with the rate); Unknown with
  ``NoTraffic``. It does not roll into Ready: a service that falls back still answers, but the
  condition, a Warning event and the operator metrics say so.
- ``Ready`` (reconciler): True (``Serving``) when Accepted, PrefillReady, DecodeReady and
  RouterReady are all True; otherwise False with the reason of the first that is not.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from pydantic import Field

from tandem.api.base import ApiModel


class ConditionType(StrEnum):
    READY = "Ready"
    ACCEPTED = "Accepted"
    PREFILL_READY = "PrefillReady"
    DECODE_READY = "DecodeReady"
    ROUTER_READY = "RouterReady"
    AUTOSCALING = "Autoscaling"
    KV_TRANSFER_EFFECTIVE = "KVTransferEffective"


class ConditionReason(StrEnum):
    """Why a condition has its status (autoscaling decisions have their own reasons)."""

    # Accepted
    ACCEPTED = "Accepted"
    INVALID_SPEC = "InvalidSpec"
    CONFLICTING_ENGINE_ARGS = "ConflictingEngineArgs"
    REPLICA_EXCEEDS_NODE = "ReplicaExceedsNode"
    NO_NODE_FITS_REPLICA = "NoNodeFitsReplica"
    KV_BUFFER_EXCEEDS_HEADROOM = "KVBufferExceedsHeadroom"
    APPLY_FAILED = "ApplyFailed"
    CHILD_CONFLICT = "ChildConflict"
    # pools and router
    REPLICAS_READY = "ReplicasReady"
    PODS_UNSCHEDULABLE = "PodsUnschedulable"
    PROGRESSING = "Progressing"
    SCALED_TO_ZERO = "ScaledToZero"
    DEPLOYMENT_MISSING = "DeploymentMissing"
    # ready
    SERVING = "Serving"
    RECONCILING = "Reconciling"
    # autoscaling
    ACTIVE = "Active"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    GPU_BUDGET_REACHED = "GPUBudgetReached"
    SHADOW = "Shadow"
    # KV transfer (tandem.kvtruth)
    EFFECTIVE = "Effective"
    DECODE_ONLY_FALLBACK = "DecodeOnlyFallback"
    TRANSFER_FAILING = "TransferFailing"
    NO_TRAFFIC = "NoTraffic"


TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


class Condition(ApiModel):
    type: str = Field(description="Condition type, e.g. Ready.")
    status: str = Field(description="True, False or Unknown.", pattern=r"^(True|False|Unknown)$")
    reason: str = Field(description="One-word CamelCase reason.")
    message: str = Field(default="", description="Human-readable detail.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        default=None, description="metadata.generation the condition was computed for."
    )


def set_condition(
    existing: Iterable[Condition],
    new_type: str,
    status: str,
    reason: str,
    message: str,
    now: str,
    generation: int | None,
) -> list[Condition]:
    """Return the condition list with ``new_type`` set.

    ``lastTransitionTime`` is kept unless ``status`` changes; a changed reason, message or
    generation alone does not reset it (the LWS status rules).
    """
    existing = list(existing)
    old = get_condition(existing, new_type)
    new = Condition(
        type=new_type,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=old.last_transition_time if old and old.status == status else now,
        observed_generation=generation,
    )
    if old is None:
        return [*existing, new]
    return [new if c.type == new_type else c for c in existing]


def get_condition(conditions: Iterable[Condition], ctype: str) -> Condition | None:
    for c in conditions:
        if c.type == ctype:
            return c
    return None
