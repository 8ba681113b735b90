"""The children of one InferenceService: list, validate as a whole, apply, prune.

Nothing here decides what the children are (the plan and the renderers do); this is how they
reach the API server without stalling or half-applying on bad input:

- a same-named object this CR does not control is never taken over (``ChildConflict``);
- every child that differs is applied as a server-side dry run before the first real write, so
  a child the API server would refuse (``ApplyFailed``, naming the child and the fields the API
  server named) stops the reconcile with the running children untouched;
- ``spec.replicas`` of an autoscaled pool is handed to the autoscaler's field manager, once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from tandem.api.conditions import ConditionReason
from tandem.autoscale.actuator import AUTOSCALER_FIELD_MANAGER
from tandem.plan import Owner, PoolPlan, ServicePlan
from tandem.plan.admission import Rejection
from tandem.plan.names import LABEL_INSTANCE, MANAGED_BY
from tandem.reconcile.diff import up_to_date
from tandem.reconcile.k8s import CHILD_KINDS, Invalid, Kube, NotFound
from tandem.render import render_children

log = logging.getLogger("tandem.reconcile")

Obj = dict[str, Any]

# Accepted=False: an object with a child's name exists and this CR does not control it.


def _controlled_by(obj: Obj, uid: str) -> bool:
    return any(
        o.get("uid") == uid and o.get("controller")
        for o in obj.get("metadata", {}).get("ownerReferences", []) or []
    )


def _key(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def list_children(kube: Kube, owner: Owner) -> dict[str, Obj]:
    """The children ``owner`` controls, by ``Kind/name``."""
    selector = f"{LABEL_INSTANCE}={owner.name},app.kubernetes.io/managed-by={MANAGED_BY}"
    live: dict[str, Obj] = {}
    for kind in CHILD_KINDS:
        for obj in kube.list_kind(kind, owner.namespace, selector):
            if _controlled_by(obj, owner.uid):
                live[_key(obj)] = obj
    return live


def _rejected_child(key: str, e: Invalid) -> Rejection:
    """``ApplyFailed`` naming the child and the fields the API server named."""
    unnamed = [f for f in e.fields if f not in e.message]
    fields = f" (fields: {', '.join(unnamed)})" if unnamed else ""
    return Rejection(
        ConditionReason.APPLY_FAILED, f"the API server rejected {key}: {e.message}{fields}"
    )


def _foreign_child(
    kube: Kube, owner: Owner, pending: list[Obj], live: dict[str, Obj]
) -> Rejection | None:
    """``ChildConflict`` for the first child whose name is taken by an object this CR does not
    control (a child it controls is already in ``live``)."""
    for child in pending:
        key = _key(child)
        if key in live:
            continue
        try:
            obj = kube.get(child["kind"], owner.namespace, child["metadata"]["name"])
        except NotFound:
            continue
        if not _controlled_by(obj, owner.uid):
            refs = obj.get("metadata", {}).get("ownerReferences") or []
            holder = ", ".join(f"{r.get('kind')}/{r.get('name')}" for r in refs) or "no owner"
            return Rejection(
                ConditionReason.CHILD_CONFLICT,
                f"{key} already exists and is not controlled by this InferenceService "
                f"(owned by {holder}); delete it, or give this InferenceService another name",
            )
    return None


def validate_children(
    kube: Kube, owner: Owner, pending: list[Obj], live: dict[str, Obj]
) -> Rejection | None:
    """Check every child about to be applied before the first real write: ownership, then a
    server-side dry run of each. Transient and authorisation errors propagate (the caller
    retries)."""
    rejection = _foreign_child(kube, owner, pending, live)
    if rejection is not None:
        return rejection
    for child in pending:
        try:
            kube.apply(child, dry_run=True)
        except Invalid as e:
            return _rejected_child(_key(child), e)
        except NotFound:
            # It refers to a child that is not created yet (a RoleBinding's Role, checked for
            # privilege escalation): not a fault of the object, and the real apply comes in
            # order, after what it refers to.
            continue
    return None


def _autoscaler_owns_replicas(obj: Obj) -> bool:
    for mf in obj.get("metadata", {}).get("managedFields", []) or []:
        if mf.get("manager") == AUTOSCALER_FIELD_MANAGER and "f:replicas" in str(
            mf.get("fieldsV1", {}).get("f:spec", {})
        ):
            return True
    return False


def hand_over_replicas(kube: Kube, live: Obj, replicas: int) -> Obj:
    """Set ``spec.replicas`` under the autoscaler's field manager.

    If the reconcile simply dropped ``replicas`` from its apply, server-side apply would remove
    the field it solely owned and the Deployment would fall back to 1 replica.
    """
    meta = live["metadata"]
    return kube.apply(
        {
            "apiVersion": live.get("apiVersion", "apps/v1"),
            "kind": live["kind"],
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "spec": {"replicas": replicas},
        },
        field_manager=AUTOSCALER_FIELD_MANAGER,
    )


def _hand_over_if_needed(pool: PoolPlan | None, current: Obj | None) -> int | None:
    """Replicas to give the autoscaler's field manager with this apply, or None.

    A new autoscaled pool starts at its start count; an existing one the autoscaler does not own
    yet keeps what it runs, within the autoscaling bounds.
    """
    if pool is None or not pool.replicas.autoscaled:
        return None
    if current is None:
        return pool.replicas.start
    if _autoscaler_owns_replicas(current):
        return None
    return pool.replicas.clamp(int(current.get("spec", {}).get("replicas", 1)))


def _apply(kube: Kube, child: Obj, current: Obj | None, pool: PoolPlan | None) -> Obj:
    """Apply one child; an existing pool's replicas change hands before Tandem stops sending
    them, a new pool's right after it exists."""
    replicas = _hand_over_if_needed(pool, current)
    if replicas is not None and current is not None:
        hand_over_replicas(kube, current, replicas)
    applied = kube.apply(child)
    if replicas is not None and current is None:
        return hand_over_replicas(kube, applied, replicas)
    return applied


def _pools(plan: ServicePlan) -> dict[str, PoolPlan]:
    """The pools by the ``Kind/name`` of their workload."""
    return {f"{p.workload_kind}/{p.name}": p for p in plan.pools.values()}


def _pending(child: Obj, current: Obj | None, pool: PoolPlan | None) -> bool:
    """The child differs from what runs, or its replicas have yet to change hands."""
    return not up_to_date(child, current) or _hand_over_if_needed(pool, current) is not None


def apply_children(
    kube: Kube, plan: ServicePlan, pending: list[Obj], live: dict[str, Obj]
) -> tuple[list[str], Rejection | None]:
    """Apply ``pending`` in order; stop at the first child the API server refuses."""
    pools = _pools(plan)
    applied: list[str] = []
    for child in pending:
        key = _key(child)
        try:
            live[key] = _apply(kube, child, live.get(key), pools.get(key))
        except Invalid as e:
            return applied, _rejected_child(key, e)
        applied.append(key)
        log.info("Applied %s", key, extra={"instance": plan.owner.name})
    return applied, None


def prune(kube: Kube, owner: Owner, desired: list[Obj], live: dict[str, Obj]) -> list[str]:
    """Delete the children this CR controls that are no longer desired."""
    wanted = {_key(c) for c in desired}
    pruned = []
    for key, obj in list(live.items()):
        if key in wanted:
            continue
        meta = obj["metadata"]
        kube.delete(obj["kind"], owner.namespace, meta["name"], meta.get("uid"))
        live.pop(key)
        pruned.append(key)
        log.info("Pruned %s", key, extra={"instance": owner.name})
    return pruned


@dataclass
class Converged:
    applied: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    rejection: Rejection | None = None


def converge(kube: Kube, plan: ServicePlan, live: dict[str, Obj]) -> Converged:
    """Validate the desired set whole, then apply what differs and prune what is not desired.

    ``live`` (the children as listed) is updated with what was applied and pruned.
    """
    desired = render_children(plan)
    pools = _pools(plan)
    pending = [c for c in desired if _pending(c, live.get(_key(c)), pools.get(_key(c)))]
    rejection = validate_children(kube, plan.owner, pending, live)
    if rejection is not None:
        return Converged(rejection=rejection)
    applied, rejection = apply_children(kube, plan, pending, live)
    if rejection is not None:
        return Converged(applied, rejection=rejection)
    return Converged(applied, prune(kube, plan.owner, desired, live))
