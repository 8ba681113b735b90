"""Status roll-up: a pure function of the plan, the observed children, the autoscaler's newest
report and the previous status.

Nothing is accumulated: every reconcile recomputes the whole status and the caller writes the
difference (a JSON merge patch) only when there is one, so an idle resync writes nothing. Each
part has its own small rule: :func:`pool_condition` and :func:`pool_status` per pool,
:func:`router_condition`, :func:`autoscaling_condition` and each pool's ``recommendation``
(from :mod:`tandem.reconcile.scaling_status`), and :func:`ready_rollup` over the rest.

Display facts (GPUs per replica, parallelism, endpoint) come from the plan. While a spec is
rejected there is no plan, and status keeps describing the pools as they run: those facts, and
everything the autoscaler recorded, stay as stored.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from tandem.api.conditions import (
    FALSE,
    TRUE,
    UNKNOWN,
    Condition,
    ConditionReason,
    ConditionType,
    get_condition,
    set_condition,
)
from tandem.api.v1alpha1 import (
    AutoscalingStatus,
    InferenceServiceStatus,
    LastScale,
    PoolStatus,
    RouterStatus,
    ScaleRecommendation,
)
from tandem.api.vocabulary import ROLES, Role
from tandem.autoscale.report import AutoscalerReport, Scale
from tandem.kvtruth import KvVerdict
from tandem.plan import PoolPlan, ServicePlan
from tandem.plan.names import ROUTER
from tandem.reconcile.scaling_status import autoscaling_condition, recommendation, rfc3339

POOL_CONDITION = {
    Role.PREFILL: ConditionType.PREFILL_READY,
    Role.DECODE: ConditionType.DECODE_READY,
}
# Ready is True when all of these are; otherwise it takes the reason of the first that is not.
READY_INPUTS = (
    ConditionType.ACCEPTED,
    ConditionType.PREFILL_READY,
    ConditionType.DECODE_READY,
    ConditionType.ROUTER_READY,
)
CONDITION_ORDER = [t.value for t in ConditionType]

# (status, reason, message) of one condition.
Verdict = tuple[str, str, str]


def utcnow() -> str:
    """The operator's one clock for status times."""
    return rfc3339(time.time())


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


def parse_status(raw: Mapping[str, Any] | None) -> InferenceServiceStatus:
    """Stored status as the model; one that no longer parses counts as empty."""
    try:
        return InferenceServiceStatus.model_validate(dict(raw or {}))
    except ValidationError:
        return InferenceServiceStatus()


# ------------------------------------------------------------------------------- rules


def pool_condition(view: DeploymentView | None, unschedulable: str | None) -> Verdict:
    if view is None:
        return FALSE, ConditionReason.DEPLOYMENT_MISSING, "the Deployment does not exist yet"
    if view.spec_replicas == 0:
        return FALSE, ConditionReason.SCALED_TO_ZERO, "the pool has 0 replicas"
    if unschedulable:
        return FALSE, ConditionReason.PODS_UNSCHEDULABLE, unschedulable
    settled = (
        view.observed_generation >= view.generation
        and view.updated >= view.spec_replicas
        and view.ready >= view.spec_replicas
        and view.replicas == view.spec_replicas
    )
    ready = f"{view.ready}/{view.spec_replicas} replicas ready"
    if settled:
        return TRUE, ConditionReason.REPLICAS_READY, ready
    return FALSE, ConditionReason.PROGRESSING, f"{ready}, {view.updated} updated"


def desired_replicas(
    pool: PoolPlan | None, view: DeploymentView | None, previous: PoolStatus | None
) -> int:
    """The replicas the spec fixes; else (autoscaled, or no plan) what the Deployment asks."""
    if pool is not None and pool.replicas.fixed is not None:
        return pool.replicas.fixed
    if view is not None:
        return view.spec_replicas
    if pool is not None:
        return pool.replicas.start
    return previous.desired_replicas if previous else 0


def _last_scale(scale: Scale | None, previous: PoolStatus | None) -> LastScale | None:
    if scale is None:
        return previous.last_scale if previous else None
    return LastScale(time=rfc3339(scale.at), from_=scale.from_, to=scale.to, reason=scale.reason)


def pool_status(
    pool: PoolPlan | None,
    view: DeploymentView | None,
    previous: PoolStatus | None,
    scale: Scale | None,
    advice: ScaleRecommendation | None = None,
) -> PoolStatus:
    """One pool's status: counts from its Deployment, display facts from the plan (or, without
    one, as stored), ``lastScale`` from the autoscaler's report (or as stored), and the
    autoscaler's ``recommendation`` as given."""
    desired = desired_replicas(pool, view, previous)
    ready = view.ready if view else 0
    if pool is not None:
        gpus, parallelism = pool.gpus, pool.parallelism
    elif previous is not None:
        gpus, parallelism = previous.gpus_per_replica, previous.parallelism
    else:
        gpus, parallelism = 0, ""
    return PoolStatus(
        replicas=view.replicas if view else 0,
        ready_replicas=ready,
        desired_replicas=desired,
        gpus_per_replica=gpus,
        parallelism=parallelism,
        ready=f"{ready}/{desired}",
        last_scale=_last_scale(scale, previous),
        recommendation=advice,
    )


def router_condition(view: DeploymentView | None) -> Verdict:
    if view is None:
        return FALSE, ConditionReason.DEPLOYMENT_MISSING, "the router does not exist yet"
    if view.ready >= 1:
        ready = f"{view.ready}/{view.spec_replicas} router replicas ready"
        return TRUE, ConditionReason.REPLICAS_READY, ready
    if view.spec_replicas == 0:
        return FALSE, ConditionReason.SCALED_TO_ZERO, "the router has 0 replicas"
    return FALSE, ConditionReason.PROGRESSING, "no router replica is ready yet"


def ready_rollup(conditions: Iterable[Condition]) -> Verdict:
    conditions = list(conditions)
    for ctype in READY_INPUTS:
        c = get_condition(conditions, ctype)
        if c is None:
            return UNKNOWN, ConditionReason.RECONCILING, f"{ctype}: not evaluated yet"
        if c.status != TRUE:
            status = FALSE if c.status == FALSE else UNKNOWN
            return status, c.reason, f"{c.type}: {c.message}"
    return TRUE, ConditionReason.SERVING, "prefill, decode and router are ready"


# ------------------------------------------------------------------------------ roll-up


class _Conditions:
    """The condition list being rebuilt, with ``now`` and the generation fixed."""

    def __init__(self, previous: Iterable[Condition], now: str, generation: int) -> None:
        self.items, self.now, self.generation = list(previous), now, generation

    def put(self, ctype: str, verdict: Verdict) -> None:
        status, reason, message = verdict
        self.items = set_condition(
            self.items, ctype, status, reason, message, self.now, self.generation
        )

    def drop(self, ctype: str) -> None:
        self.items = [c for c in self.items if c.type != ctype]

    def sorted(self) -> list[Condition]:
        return sorted(self.items, key=_rank)


def _rank(c: Condition) -> int:
    return CONDITION_ORDER.index(c.type) if c.type in CONDITION_ORDER else len(CONDITION_ORDER)


def _autoscaled(plan: ServicePlan) -> bool:
    return any(pool.replicas.autoscaled for pool in plan.pools.values())


def _fold_autoscaler(
    conds: _Conditions,
    plan: ServicePlan | None,
    report: AutoscalerReport | None,
    previous: InferenceServiceStatus,
) -> AutoscalingStatus | None:
    """Set (or drop) the Autoscaling condition; return ``status.autoscaling``.

    Without a plan (rejected spec) or a report (the operator restarted and has not ticked yet)
    both stay as stored; without autoscaling both go.
    """
    if plan is not None and not _autoscaled(plan):
        conds.drop(ConditionType.AUTOSCALING)
        return None
    if plan is None or report is None:
        return previous.autoscaling
    tick = report.tick
    conds.put(ConditionType.AUTOSCALING, autoscaling_condition(tick.decisions, tick.shadow))
    return AutoscalingStatus(mode=tick.mode, source=tick.source, last_error=tick.error)


def _fold_kv(conds: _Conditions, plan: ServicePlan | None, kv: KvVerdict | None) -> None:
    """The KVTransferEffective condition from the KV monitor's newest verdict. Without one
    (the operator restarted, or the spec is rejected) the stored condition stays."""
    if plan is not None and kv is not None:
        conds.put(ConditionType.KV_TRANSFER_EFFECTIVE, (kv.status, kv.reason, kv.message))


def compute_status(
    plan: ServicePlan | None,
    generation: int,
    acceptance: Acceptance,
    observed: Observed,
    previous: InferenceServiceStatus,
    now: str,
    autoscaler: AutoscalerReport | None = None,
    kv: KvVerdict | None = None,
) -> InferenceServiceStatus:
    """The whole status. ``plan`` is None while the spec is rejected; ``autoscaler`` is the
    autoscaler's newest report (None when autoscaling is off or has not ticked yet); ``kv`` the
    KV monitor's newest verdict."""
    if plan is not None and not _autoscaled(plan):
        autoscaler = None
    conds = _Conditions(previous.conditions, now, generation)
    conds.put(
        ConditionType.ACCEPTED,
        (TRUE if acceptance.accepted else FALSE, acceptance.reason, acceptance.message),
    )
    pools: dict[Role, PoolStatus] = {}
    autoscaled = plan is None or _autoscaled(plan)
    for role in ROLES:
        view = observed.deployments.get(role)
        conds.put(POOL_CONDITION[role], pool_condition(view, observed.unschedulable.get(role)))
        advice = autoscaler.advice.get(role) if autoscaler else None
        pools[role] = pool_status(
            plan.pool(role) if plan else None,
            view,
            previous.pool(role),
            autoscaler.last_scale.get(role) if autoscaler else None,
            recommendation(advice, previous.pool(role), autoscaled),
        )
    rview = observed.deployments.get(ROUTER)
    conds.put(ConditionType.ROUTER_READY, router_condition(rview))
    autoscaling = _fold_autoscaler(conds, plan, autoscaler, previous)
    _fold_kv(conds, plan, kv)
    conds.put(ConditionType.READY, ready_rollup(conds.items))
    return InferenceServiceStatus(
        observed_generation=generation,
        endpoint=plan.endpoint if plan else previous.endpoint,
        parallelism=plan.parallelism if plan else previous.parallelism,
        conditions=conds.sorted(),
        prefill=pools[Role.PREFILL],
        decode=pools[Role.DECODE],
        router=RouterStatus(
            replicas=rview.replicas if rview else 0, ready_replicas=rview.ready if rview else 0
        ),
        autoscaling=autoscaling,
    )


def merge_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``; empty when equal.

    Keys that ``new`` no longer has are sent as null (a merge patch keeps every key it does not
    name, so a cleared ``autoscaling.lastError`` would otherwise stay for good); objects are
    diffed key by key, lists replaced whole.
    """
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = merge_diff(before, value)
            if sub:
                patch[key] = sub
        elif key not in old or value != before:
            patch[key] = value
    return patch


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
