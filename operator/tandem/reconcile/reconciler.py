"""One level-triggered reconcile of an InferenceService.

The same function serves create, update, resume, child events, the autoscaler's status refresh
and the periodic resync. The recipe, in order:

1. Admit: parse the spec and run the checks that need the cluster; derive the plan once.
2. List the children this CR controls.
3. Validate the whole desired set before changing anything: a same-named object this CR does
   not control is never taken over (``ChildConflict``), and every child that differs is applied
   as a server-side dry run, so a child the API server would refuse (``ApplyFailed``) stops the
   reconcile before the first real write.
4. Apply what differs (server-side apply, field manager ``tandem``), handing ``spec.replicas``
   of autoscaled pools to the autoscaler's field manager; prune children no longer desired.
5. Write the status, only if it changed (:func:`refresh_status`, the one status writer).

A spec that cannot be honoured is recorded as ``Accepted=False`` and nothing is applied or
pruned, so running pools keep serving. Such a rejection is not an error to retry: the next
attempt comes with a spec change or the periodic resync, and an unchanged rejection writes
nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from tandem.api.conditions import TRUE, ConditionReason, ConditionType, get_condition
from tandem.api.v1alpha1 import InferenceServiceSpec, name_problem
from tandem.api.vocabulary import ROLES
from tandem.autoscale.report import Reports
from tandem.kvtruth import KvVerdicts
from tandem.plan import Owner, ServicePlan, plan_service
from tandem.plan.admission import Rejection, check_plan, check_spec
from tandem.plan.names import LABEL_INSTANCE, LABEL_ROLE, ROUTER
from tandem.reconcile import status as st
from tandem.reconcile.children import Obj, converge, list_children
from tandem.reconcile.events import Event, newly_rejected, status_events
from tandem.reconcile.k8s import Conflict, Forbidden, Kube, NotFound

log = logging.getLogger("tandem.reconcile")


def format_validation_error(err: ValidationError) -> str:
    """``spec.prefill.parallelism.tensor: Input should be >= 1`` style, one per problem."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"spec.{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


@dataclass
class ReconcileResult:
    """What one reconcile did, for events, metrics and logs."""

    applied: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    rejection: Rejection | None = None
    newly_rejected: bool = False
    status_written: bool = False
    events: list[Event] = field(default_factory=list)  # from the status transition written


@dataclass(frozen=True)
class Ref:
    """The InferenceService being reconciled, as its body named it."""

    name: str
    namespace: str
    uid: str
    generation: int

    @classmethod
    def of(cls, body: Obj) -> Ref:
        meta = body["metadata"]
        generation = int(meta.get("generation", 0))
        return cls(meta["name"], meta["namespace"], meta["uid"], generation)

    @property
    def owner(self) -> Owner:
        return Owner(name=self.name, namespace=self.namespace, uid=self.uid)


def parse_spec(raw: dict[str, Any]) -> tuple[InferenceServiceSpec | None, Rejection | None]:
    try:
        return InferenceServiceSpec.model_validate(raw), None
    except ValidationError as e:
        return None, Rejection(ConditionReason.INVALID_SPEC, format_validation_error(e))


def accepted(body: Mapping[str, Any]) -> tuple[InferenceServiceSpec, ServicePlan] | None:
    """The spec and plan of an InferenceService whose spec is valid and ``Accepted=True`` (what
    the daemons act on), else None."""
    spec, rejection = parse_spec(dict(body.get("spec") or {}))
    condition = get_condition(
        st.parse_status(body.get("status")).conditions, ConditionType.ACCEPTED
    )
    if spec is None or rejection is not None or condition is None or condition.status != TRUE:
        return None
    return spec, plan_service(spec, Ref.of(dict(body)).owner)


def admit(
    kube: Kube, raw: dict[str, Any], owner: Owner
) -> tuple[ServicePlan | None, Rejection | None]:
    """The plan of an acceptable spec, or why the spec cannot be honoured."""
    problem = name_problem(owner.name)
    if problem is not None:
        return None, Rejection(ConditionReason.INVALID_SPEC, problem)
    spec, rejection = parse_spec(raw)
    if spec is None:
        return None, rejection
    try:
        nodes: list[Obj] | None = kube.nodes()
    except Forbidden:
        nodes = None  # namespaced install without node read access: skip capacity checks
    rejection = check_spec(spec, nodes)
    if rejection is not None:
        return None, rejection
    plan = plan_service(spec, owner)
    rejection = check_plan(plan, nodes)
    return (None, rejection) if rejection is not None else (plan, None)


# -------------------------------------------------------------------------------- status


def observe(kube: Kube, ref: Ref, live: dict[str, Obj]) -> st.Observed:
    deployments: dict[str, st.DeploymentView | None] = {}
    unschedulable: dict[str, str] = {}
    for role in (*ROLES, ROUTER):
        obj = live.get(f"Deployment/{ref.name}-{role}")
        view = st.DeploymentView.from_obj(obj) if obj else None
        deployments[role] = view
        if view is not None and view.ready < view.spec_replicas:
            selector = f"{LABEL_INSTANCE}={ref.name},{LABEL_ROLE}={role}"
            msg = st.unschedulable_message(kube.list_kind("Pod", ref.namespace, selector))
            if msg:
                unschedulable[role] = msg
    return st.Observed(deployments=deployments, unschedulable=unschedulable)


def _acceptance(rejection: Rejection | None) -> st.Acceptance:
    if rejection is not None:
        return st.Acceptance(False, rejection.reason, rejection.message)
    return st.Acceptance(True, ConditionReason.ACCEPTED, "the spec is valid and applied")


def _reread(kube: Kube, ref: Ref) -> Obj | None:
    """The object again, or None when the status is no longer this reconcile's to write."""
    try:
        fresh = kube.get("InferenceService", ref.namespace, ref.name)
    except NotFound:
        return None
    meta = fresh["metadata"]
    if meta.get("uid") != ref.uid or int(meta.get("generation", 0)) != ref.generation:
        return None  # a newer spec (or object): its own reconcile writes the status
    return fresh


def refresh_status(
    kube: Kube,
    body: Obj,
    plan: ServicePlan | None,
    acceptance: st.Acceptance,
    live: dict[str, Obj],
    outcome: ReconcileResult,
    reports: Reports | None = None,
    retries: int = 5,
    kv: KvVerdicts | None = None,
) -> None:
    """The one status writer: compute status and merge-patch the difference, if any.

    The write carries the resourceVersion it was computed against. On a conflict another
    writer got there first, possibly from *newer* observations (a concurrent refresh, or the
    autoscaler's with a newer tick), so the computed status is stale: it is thrown away and
    recomputed from a fresh read of the object, its children and the autoscaler's newest
    report, never re-sent. (Re-sending it let a refresh that had listed the Deployments a
    moment earlier overwrite a newer ``Ready=True`` with ``1/2 ready``.)
    """
    ref = Ref.of(body)
    resource_version = body["metadata"].get("resourceVersion", "")
    stored: Obj = dict(body.get("status") or {})
    for attempt in range(retries):
        previous = st.parse_status(stored)
        report = reports.get(ref.namespace, ref.name) if reports is not None else None
        verdict = kv.get(ref.namespace, ref.name) if kv is not None else None
        observed = observe(kube, ref, live)
        new = st.compute_status(
            plan, ref.generation, acceptance, observed, previous, st.utcnow(), report, verdict
        )
        patch = st.merge_diff(stored, new.wire())
        if not patch:
            return
        try:
            kube.patch_status(ref.namespace, ref.name, patch, resource_version)
        except Conflict:
            if attempt == retries - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
            fresh = _reread(kube, ref)
            if fresh is None:
                return
            resource_version = fresh["metadata"]["resourceVersion"]
            stored = dict(fresh.get("status") or {})
            live = list_children(kube, ref.owner)
            continue
        outcome.status_written = True
        outcome.events = status_events(previous, new)
        outcome.newly_rejected = newly_rejected(previous, new) is not None
        return


# ----------------------------------------------------------------------------- reconcile


def reconcile(
    kube: Kube, body: Obj, reports: Reports | None = None, kv: KvVerdicts | None = None
) -> ReconcileResult:
    """Bring the children and status of one InferenceService in line with its spec.

    ``reports`` holds the autoscaler's newest report per object and ``kv`` the KV monitor's
    newest verdict, both folded into status.
    """
    ref = Ref.of(body)
    outcome = ReconcileResult()
    if body["metadata"].get("deletionTimestamp"):
        return outcome  # being deleted: garbage collection takes the children, nothing to do
    plan, rejection = admit(kube, body.get("spec") or {}, ref.owner)  # 1
    live = list_children(kube, ref.owner)  # 2
    if plan is not None:
        done = converge(kube, plan, live)  # 3, 4
        outcome.applied, outcome.pruned, rejection = done.applied, done.pruned, done.rejection
    if rejection is not None:
        outcome.rejection = rejection
        log.warning("Rejected spec: %s", rejection.message, extra={"instance": ref.name})
    # A rejected spec is not applied: status keeps describing the pools as they run.
    status_plan = plan if rejection is None else None
    acceptance = _acceptance(rejection)
    refresh_status(kube, body, status_plan, acceptance, live, outcome, reports, kv=kv)  # 5
    return outcome
