"""One level-triggered reconcile of an InferenceService.

The same function serves create, update, resume and the periodic resync: read the spec, build
every desired child, apply what differs with server-side apply (field manager ``tandem``),
prune children this CR controls that are no longer desired, and write the status only when it
changed. A spec that cannot be honoured is recorded as ``Accepted=False`` and nothing is
applied or pruned, so running pools keep serving.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from tandem.api.conditions import ConditionType, Reason, get_condition
from tandem.api.v1alpha1 import InferenceServiceSpec, InferenceServiceStatus
from tandem.api.vocabulary import ROLES, Role
from tandem.reconcile import status as st
from tandem.reconcile.checks import Rejection, check_spec
from tandem.reconcile.diff import up_to_date
from tandem.reconcile.k8s import CHILD_KINDS, Conflict, Forbidden, Invalid, Kube, NotFound
from tandem.render import Owner, build_children
from tandem.render.names import LABEL_INSTANCE, LABEL_ROLE, MANAGED_BY, ROUTER

log = logging.getLogger("tandem.reconcile")

AUTOSCALER_MANAGER = "tandem-autoscaler"


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_validation_error(err: ValidationError) -> str:
    """``spec.prefill.parallelism.tensor: Input should be >= 1`` style, one per problem."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"spec.{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


@dataclass
class Outcome:
    """What one reconcile did, for events, metrics and logs."""

    applied: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    rejection: Rejection | None = None
    newly_rejected: bool = False
    status_written: bool = False
    ready_changed: str | None = None


def parse_spec(raw: dict[str, Any]) -> tuple[InferenceServiceSpec | None, Rejection | None]:
    try:
        return InferenceServiceSpec.model_validate(raw), None
    except ValidationError as e:
        return None, Rejection(Reason.INVALID_SPEC, format_validation_error(e))


def _owned_by(obj: dict[str, Any], uid: str) -> bool:
    return any(
        o.get("uid") == uid and o.get("controller")
        for o in obj.get("metadata", {}).get("ownerReferences", []) or []
    )


def _key(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def _list_children(kube: Kube, namespace: str, name: str, uid: str) -> dict[str, dict[str, Any]]:
    selector = f"{LABEL_INSTANCE}={name},app.kubernetes.io/managed-by={MANAGED_BY}"
    live: dict[str, dict[str, Any]] = {}
    for kind in CHILD_KINDS:
        for obj in kube.list_kind(kind, namespace, selector):
            if _owned_by(obj, uid):
                live[_key(obj)] = obj
    return live


def _autoscaler_owns_replicas(obj: dict[str, Any]) -> bool:
    for mf in obj.get("metadata", {}).get("managedFields", []) or []:
        if mf.get("manager") == AUTOSCALER_MANAGER and "f:replicas" in str(
            mf.get("fieldsV1", {}).get("f:spec", {})
        ):
            return True
    return False


def hand_over_replicas(kube: Kube, live: dict[str, Any], replicas: int) -> None:
    """Give ``spec.replicas`` to the autoscaler's field manager before Tandem stops sending it.

    If the reconcile simply dropped ``replicas`` from its apply, server-side apply would remove
    the field it solely owned and the Deployment would fall back to 1 replica.
    """
    kube.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": live["metadata"]["name"],
                "namespace": live["metadata"]["namespace"],
            },
            "spec": {"replicas": replicas},
        },
        field_manager=AUTOSCALER_MANAGER,
    )


def apply_children(
    kube: Kube, spec: InferenceServiceSpec, owner: Owner, live: dict[str, dict[str, Any]]
) -> tuple[list[str], list[str]]:
    desired = build_children(spec, owner)
    applied: list[str] = []
    for child in desired:
        key = _key(child)
        current = live.get(key)
        if up_to_date(child, current):
            continue
        if (
            child["kind"] == "Deployment"
            and spec.autoscaling.enabled
            and "replicas" not in child["spec"]
            and current is not None
            and not _autoscaler_owns_replicas(current)
        ):
            role = current["metadata"].get("labels", {}).get(LABEL_ROLE, "")
            pool = spec.pool(Role(role)) if role in set(Role) else None
            replicas = int(current.get("spec", {}).get("replicas", 1))
            if pool is not None:
                a = pool.autoscaling
                replicas = min(max(replicas, a.min_replicas), a.max_replicas)
            hand_over_replicas(kube, current, replicas)
        live[key] = kube.apply(child)
        if (
            child["kind"] == "Deployment"
            and spec.autoscaling.enabled
            and "replicas" not in child["spec"]
            and current is None
        ):
            # A new autoscaled pool starts at spec.<pool>.replicas (clamped to its bounds), set
            # under the autoscaler's field manager so the reconcile never owns the field.
            role = child["metadata"]["labels"].get(LABEL_ROLE, "")
            pool = spec.pool(Role(role)) if role in set(Role) else None
            if pool is not None:
                a = pool.autoscaling
                start = min(max(pool.replicas, a.min_replicas), a.max_replicas)
                hand_over_replicas(kube, live[key], start)
        applied.append(key)
        log.info("Applied %s", key, extra={"instance": owner.name})
    wanted = {_key(c) for c in desired}
    pruned = []
    for key, obj in list(live.items()):
        if key in wanted:
            continue
        kube.delete(
            obj["kind"], owner.namespace, obj["metadata"]["name"], obj["metadata"].get("uid")
        )
        live.pop(key)
        pruned.append(key)
        log.info("Pruned %s", key, extra={"instance": owner.name})
    return applied, pruned


def observe(kube: Kube, namespace: str, name: str, live: dict[str, dict[str, Any]]) -> st.Observed:
    deployments: dict[str, st.DeploymentView | None] = {}
    unschedulable: dict[str, str] = {}
    for role in (*ROLES, ROUTER):
        obj = live.get(f"Deployment/{name}-{role}")
        view = st.DeploymentView.from_obj(obj) if obj else None
        deployments[role] = view
        if view is not None and view.ready < view.spec_replicas:
            pods = kube.list_kind("Pod", namespace, f"{LABEL_INSTANCE}={name},{LABEL_ROLE}={role}")
            msg = st.unschedulable_message(pods)
            if msg:
                unschedulable[role] = msg
    return st.Observed(deployments=deployments, unschedulable=unschedulable)


def _previous_status(raw: dict[str, Any] | None) -> InferenceServiceStatus:
    try:
        return InferenceServiceStatus.model_validate(raw or {})
    except ValidationError:
        return InferenceServiceStatus()


def reconcile(kube: Kube, body: dict[str, Any], *, apply: bool = True) -> Outcome:
    """Bring the children and status of one InferenceService in line with its spec.

    ``apply=False`` only refreshes status (used when a child changed, not the spec).
    """
    meta = body["metadata"]
    name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
    generation = int(meta.get("generation", 0))
    owner = Owner(name=name, namespace=namespace, uid=uid)
    previous = _previous_status(body.get("status"))
    outcome = Outcome()

    spec, rejection = parse_spec(body.get("spec") or {})
    if spec is not None and rejection is None:
        try:
            nodes: list[dict[str, Any]] | None = kube.nodes()
        except Forbidden:
            nodes = None  # namespaced install without node read access: skip capacity checks
        rejection = check_spec(spec, nodes)

    live = _list_children(kube, namespace, name, uid)
    if rejection is None and spec is not None and apply:
        try:
            outcome.applied, outcome.pruned = apply_children(kube, spec, owner, live)
        except Invalid as e:
            rejection = Rejection(
                Reason.APPLY_FAILED, f"the API server rejected a child: {e.message}"
            )
    if rejection is not None:
        prev_accepted = get_condition(previous.conditions, ConditionType.ACCEPTED)
        outcome.rejection = rejection
        outcome.newly_rejected = (
            prev_accepted is None
            or prev_accepted.status != "False"
            or prev_accepted.message != rejection.message
            or prev_accepted.observed_generation != generation
        )
        log.warning("Rejected spec: %s", rejection.message, extra={"instance": name})
    # A rejected spec is not applied: status keeps describing the pools as they run.
    status_spec = spec if rejection is None else None
    refresh_status(kube, body, status_spec, rejection, apply, live, outcome)
    return outcome


def _acceptance(
    rejection: Rejection | None, apply: bool, previous: InferenceServiceStatus
) -> st.Acceptance:
    if rejection is not None:
        return st.Acceptance(False, rejection.reason, rejection.message)
    prev_accepted = get_condition(previous.conditions, ConditionType.ACCEPTED)
    if not apply and prev_accepted is not None:
        # A status-only refresh keeps Accepted as it stands.
        return st.Acceptance(
            prev_accepted.status == "True", prev_accepted.reason, prev_accepted.message
        )
    return st.Acceptance(True, Reason.ACCEPTED, "the spec is valid and applied")


def refresh_status(
    kube: Kube,
    body: dict[str, Any],
    spec: InferenceServiceSpec | None,
    rejection: Rejection | None,
    apply: bool,
    live: dict[str, dict[str, Any]],
    outcome: Outcome,
    retries: int = 5,
) -> None:
    """Compute status from the children and write it if it changed, with optimistic concurrency.

    The write carries the resourceVersion it was computed against. On a conflict another writer
    (a concurrent status refresh, the autoscaler) got there first, possibly from *newer*
    observations, so the computed status is stale: it is thrown away and recomputed from a fresh
    read of the object and its children, never re-sent. (Re-sending it let a refresh that had
    listed the Deployments a moment earlier overwrite a newer ``Ready=True`` with ``1/2 ready``.)
    """
    meta = body["metadata"]
    name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
    generation = int(meta.get("generation", 0))
    resource_version = meta.get("resourceVersion", "")
    previous = _previous_status(body.get("status"))
    for attempt in range(retries):
        observed = observe(kube, namespace, name, live)
        new = st.compute_status(
            spec,
            name,
            namespace,
            generation,
            _acceptance(rejection, apply, previous),
            observed,
            previous,
            utcnow(),
        )
        if status_equal(new, previous):
            return
        try:
            kube.patch_status(namespace, name, _with_nulls(new.wire()), resource_version)
        except Conflict:
            if attempt == retries - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
            try:
                fresh = kube.get("InferenceService", namespace, name)
            except NotFound:
                return
            fresh_meta = fresh["metadata"]
            if fresh_meta.get("uid") != uid or int(fresh_meta.get("generation", 0)) != generation:
                return  # a newer spec (or object): its own reconcile writes the status
            resource_version = fresh_meta["resourceVersion"]
            previous = _previous_status(fresh.get("status"))
            live = _list_children(kube, namespace, name, uid)
            continue
        outcome.status_written = True
        old_ready = get_condition(previous.conditions, ConditionType.READY)
        new_ready = get_condition(new.conditions, ConditionType.READY)
        if new_ready and (old_ready is None or old_ready.status != new_ready.status):
            outcome.ready_changed = new_ready.status
        return


def status_equal(a: InferenceServiceStatus, b: InferenceServiceStatus) -> bool:
    return a.wire() == b.wire()


def _with_nulls(wire: dict[str, Any]) -> dict[str, Any]:
    """Merge patch: top-level fields we no longer set must be sent as null to be removed."""
    out: dict[str, Any] = dict(wire)
    for key in ("autoscaling", "endpoint", "parallelism"):
        out.setdefault(key, None)
    return out
