"""Status roll-up: a pure function from the spec, the observed children and the previous status.

Nothing is accumulated: every reconcile recomputes the whole status and the caller writes it
only when it differs from what is stored, so an idle resync writes nothing. Autoscaler-owned
parts (``lastScale``, ``status.autoscaling`` and the ``Autoscaling`` condition) are carried over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tandem.api.conditions import (
    FALSE,
    TRUE,
    UNKNOWN,
    Condition,
    ConditionType,
    Reason,
    get_condition,
    set_condition,
)
from tandem.api.v1alpha1 import (
    InferenceServiceSpec,
    InferenceServiceStatus,
    PoolStatus,
    RouterStatus,
)
from tandem.api.vocabulary import ROLES, Role
from tandem.render.names import router_name

POOL_CONDITION = {
    Role.PREFILL: ConditionType.PREFILL_READY,
    Role.DECODE: ConditionType.DECODE_READY,
}


@dataclass(frozen=True)
class DeploymentView:
    """What status needs from a Deployment."""

    spec_replicas: int
    replicas: int
    ready: int
    updated: int
    generation: int
    observed_generation: int

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> DeploymentView:
        st = obj.get("status", {}) or {}
        return cls(
            spec_replicas=int(obj.get("spec", {}).get("replicas", 1)),
            replicas=int(st.get("replicas", 0)),
            ready=int(st.get("readyReplicas", 0)),
            updated=int(st.get("updatedReplicas", 0)),
            generation=int(obj.get("metadata", {}).get("generation", 0)),
            observed_generation=int(st.get("observedGeneration", 0)),
        )


@dataclass(frozen=True)
class Observed:
    """The children as read from the API server."""

    deployments: dict[str, DeploymentView | None]  # role -> view ("router" included)
    unschedulable: dict[str, str] = field(default_factory=dict)  # role -> scheduler message


@dataclass(frozen=True)
class Acceptance:
    accepted: bool
    reason: str
    message: str


def _pool_condition(view: DeploymentView | None, unschedulable: str | None) -> tuple[str, str, str]:
    if view is None:
        return FALSE, Reason.DEPLOYMENT_MISSING, "the Deployment does not exist yet"
    if view.spec_replicas == 0:
        return FALSE, Reason.SCALED_TO_ZERO, "the pool has 0 replicas"
    if unschedulable:
        return FALSE, Reason.PODS_UNSCHEDULABLE, unschedulable
    settled = (
        view.observed_generation >= view.generation
        and view.updated >= view.spec_replicas
        and view.ready >= view.spec_replicas
        and view.replicas == view.spec_replicas
    )
    if settled:
        return TRUE, Reason.REPLICAS_READY, f"{view.ready}/{view.spec_replicas} replicas ready"
    return (
        FALSE,
        Reason.PROGRESSING,
        f"{view.ready}/{view.spec_replicas} replicas ready, {view.updated} updated",
    )


def compute_status(
    spec: InferenceServiceSpec | None,
    name: str,
    namespace: str,
    generation: int,
    acceptance: Acceptance,
    observed: Observed,
    previous: InferenceServiceStatus,
    now: str,
) -> InferenceServiceStatus:
    conds: list[Condition] = list(previous.conditions)

    def put(ctype: str, status: str, reason: str, message: str) -> None:
        nonlocal conds
        conds = set_condition(conds, ctype, status, reason, message, now, generation)

    put(
        ConditionType.ACCEPTED,
        TRUE if acceptance.accepted else FALSE,
        acceptance.reason,
        acceptance.message,
    )
    pools: dict[Role, PoolStatus] = {}
    for role in ROLES:
        view = observed.deployments.get(role)
        st, reason, msg = _pool_condition(view, observed.unschedulable.get(role))
        put(POOL_CONDITION[role], st, reason, msg)
        prev = previous.pool(role)
        pool_spec = spec.pool(role) if spec is not None else None
        gpus = (
            pool_spec.parallelism.gpus
            if pool_spec is not None
            else (prev.gpus_per_replica if prev else 0)
        )
        par = (
            f"{pool_spec.parallelism.tensor}x{pool_spec.parallelism.pipeline}"
            if pool_spec is not None
            else (prev.parallelism if prev else "")
        )
        desired = (
            view.spec_replicas if view is not None else (pool_spec.replicas if pool_spec else 0)
        )
        if spec is not None and not spec.autoscaling.enabled and pool_spec is not None:
            desired = pool_spec.replicas
        ready = view.ready if view else 0
        pools[role] = PoolStatus(
            replicas=view.replicas if view else 0,
            ready_replicas=ready,
            desired_replicas=desired,
            gpus_per_replica=gpus,
            parallelism=par,
            ready=f"{ready}/{desired}",
            last_scale=prev.last_scale if prev else None,
        )
    rview = observed.deployments.get("router")
    if rview is None:
        put(
            ConditionType.ROUTER_READY,
            FALSE,
            Reason.DEPLOYMENT_MISSING,
            "the router does not exist yet",
        )
    elif rview.ready >= 1:
        put(
            ConditionType.ROUTER_READY,
            TRUE,
            Reason.REPLICAS_READY,
            f"{rview.ready}/{rview.spec_replicas} router replicas ready",
        )
    elif rview.spec_replicas == 0:
        put(ConditionType.ROUTER_READY, FALSE, Reason.SCALED_TO_ZERO, "the router has 0 replicas")
    else:
        put(ConditionType.ROUTER_READY, FALSE, Reason.PROGRESSING, "no router replica is ready yet")

    if spec is not None and not spec.autoscaling.enabled:
        conds = [c for c in conds if c.type != ConditionType.AUTOSCALING]

    blocking = None
    for ctype in (
        ConditionType.ACCEPTED,
        ConditionType.PREFILL_READY,
        ConditionType.DECODE_READY,
        ConditionType.ROUTER_READY,
    ):
        c = get_condition(conds, ctype)
        if c is None or c.status != TRUE:
            blocking = c
            break
    if blocking is None:
        put(ConditionType.READY, TRUE, Reason.SERVING, "prefill, decode and router are ready")
    else:
        status = FALSE if blocking.status == FALSE else UNKNOWN
        put(ConditionType.READY, status, blocking.reason, f"{blocking.type}: {blocking.message}")

    order = [t.value for t in ConditionType]
    conds.sort(key=lambda c: order.index(c.type) if c.type in order else len(order))
    port = spec.router.port if spec is not None else 8000
    return InferenceServiceStatus(
        observed_generation=generation,
        endpoint=f"http://{router_name(name)}.{namespace}.svc:{port}/v1",
        parallelism=f"P:{pools[Role.PREFILL].parallelism} D:{pools[Role.DECODE].parallelism}",
        conditions=conds,
        prefill=pools[Role.PREFILL],
        decode=pools[Role.DECODE],
        router=RouterStatus(
            replicas=rview.replicas if rview else 0, ready_replicas=rview.ready if rview else 0
        ),
        autoscaling=previous.autoscaling if spec is None or spec.autoscaling.enabled else None,
    )


def unschedulable_message(pods: list[dict[str, Any]]) -> str | None:
    """The scheduler's message for the first Pending pod it could not place."""
    for pod in pods:
        if pod.get("status", {}).get("phase") != "Pending":
            continue
        for c in pod.get("status", {}).get("conditions", []) or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False":
                msg = c.get("message") or c.get("reason") or "unschedulable"
                return f"pod {pod['metadata']['name']} is Pending: {msg}"
    return None
