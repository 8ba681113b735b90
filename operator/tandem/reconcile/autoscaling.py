"""The autoscaler inside the operator: one kopf daemon per autoscaled InferenceService.

The daemon wires :class:`tandem.autoscale.actuator.Autoscaler` to Kubernetes: it reads the pools'
Deployments, lists ready engine and router pods, patches ``spec.replicas`` by server-side apply
under its own field manager (``tandem-autoscaler``; the reconcile never sends ``replicas`` while
autoscaling is on), marks the least busy pods cheapest to delete before a scale-down, and records
each decision in status (``desiredReplicas``, ``lastScale``, the ``Autoscaling`` condition), as an
event and as metrics. Status is written only when it changes, so a steady service costs no writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import kopf

from tandem.api.conditions import FALSE, TRUE, ConditionType, Reason, get_condition, set_condition
from tandem.api.v1alpha1 import (
    GROUP,
    PLURAL,
    VERSION,
    AutoscalingStatus,
    InferenceServiceStatus,
    LastScale,
    PoolStatus,
)
from tandem.api.vocabulary import Role
from tandem.autoscale.actuator import FIELD_MANAGER, Autoscaler, ClusterHooks
from tandem.autoscale.config import from_spec
from tandem.autoscale.drain import annotation_patches
from tandem.autoscale.metrics import AutoscalerMetrics
from tandem.autoscale.policy import HOLD_REASONS, PoolDecision, PoolState
from tandem.autoscale.policy import Reason as ScaleReason
from tandem.autoscale.sources import PodRef, make_source
from tandem.reconcile.k8s import Conflict, Kube, NotFound
from tandem.reconcile.reconciler import parse_spec
from tandem.render.names import LABEL_INSTANCE, LABEL_ROLE, pool_name
from tandem.render.router import CONTAINER_PORT as ROUTER_PORT

log = logging.getLogger("tandem.autoscaler")


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ready_pods(pods: list[dict[str, Any]]) -> list[PodRef]:
    out = []
    for p in pods:
        st = p.get("status", {}) or {}
        if p.get("metadata", {}).get("deletionTimestamp") or not st.get("podIP"):
            continue
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in st.get("conditions", []) or []
        )
        if ready:
            out.append(PodRef(name=p["metadata"]["name"], ip=st["podIP"]))
    return out


class KubeHooks:
    """ClusterHooks over the synchronous client, run in threads."""

    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name
        self.decisions: dict[str, tuple[PoolDecision, bool]] = {}

    def _pods(self, role: str) -> list[PodRef]:
        selector = f"{LABEL_INSTANCE}={self.name},{LABEL_ROLE}={role}"
        return _ready_pods(self.kube.list_kind("Pod", self.namespace, selector))

    async def read_pool(self, role: Role) -> PoolState:
        dep = await asyncio.to_thread(
            self.kube.get, "Deployment", self.namespace, pool_name(self.name, role)
        )
        return PoolState(
            replicas=int(dep.get("spec", {}).get("replicas", 1)),
            ready_replicas=int((dep.get("status") or {}).get("readyReplicas", 0)),
        )

    async def list_pods(self, role: Role) -> Sequence[PodRef]:
        return await asyncio.to_thread(self._pods, role)

    async def list_routers(self) -> Sequence[PodRef]:
        return await asyncio.to_thread(self._pods, "router")

    async def scale(self, role: Role, replicas: int) -> None:
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": pool_name(self.name, role), "namespace": self.namespace},
            "spec": {"replicas": replicas},
        }
        await asyncio.to_thread(self.kube.apply, body, FIELD_MANAGER)

    async def record(self, role: Role, decision: PoolDecision, applied: bool) -> None:
        self.decisions[role] = (decision, applied)

    async def set_deletion_costs(self, role: Role, costs: Mapping[str, int]) -> None:
        for pod, patch in annotation_patches(costs).items():
            await asyncio.to_thread(
                self.kube.patch, "Pod", self.namespace, pod, {"metadata": {"annotations": patch}}
            )


def autoscaling_condition(decisions: Mapping[str, PoolDecision]) -> tuple[str, str, str]:
    """The Autoscaling condition from this tick's decisions (stable text: no floats)."""
    held = {
        r: d
        for r, d in decisions.items()
        if d.reason in HOLD_REASONS and d.reason != ScaleReason.COLD_START
    }
    if held:
        detail = "; ".join(
            f"{r}: {d.reason.value}, holding {d.current} replicas" for r, d in sorted(held.items())
        )
        return FALSE, Reason.METRICS_UNAVAILABLE, detail
    summary = "; ".join(
        f"{r}: {d.desired} replicas ({d.reason.value})" for r, d in sorted(decisions.items())
    )
    if any(d.reason == ScaleReason.GPU_BUDGET for d in decisions.values()):
        return TRUE, Reason.GPU_BUDGET_REACHED, summary
    return TRUE, Reason.ACTIVE, summary


def apply_tick_to_status(
    previous: InferenceServiceStatus,
    decisions: Mapping[str, tuple[PoolDecision, bool]],
    source: str,
    error: str | None,
    generation: int,
    now: str,
) -> InferenceServiceStatus:
    """Status after one tick: lastScale/desiredReplicas for applied changes, the condition."""
    st = previous.model_copy(deep=True)
    for role, (d, applied) in decisions.items():
        pool: PoolStatus = st.pool(Role(role)) or PoolStatus()
        if applied:
            pool.last_scale = LastScale(
                time=now, from_=d.current, to=d.desired, reason=d.reason.value
            )
            pool.desired_replicas = d.desired
            pool.ready = f"{pool.ready_replicas}/{d.desired}"
        st.with_pool(Role(role), pool)
    status, reason, message = autoscaling_condition({r: d for r, (d, _) in decisions.items()})
    st.conditions = set_condition(
        st.conditions, ConditionType.AUTOSCALING, status, reason, message, now, generation
    )
    st.autoscaling = AutoscalingStatus(source=source, last_error=error)
    return st


def status_patch(status: InferenceServiceStatus) -> dict[str, Any]:
    """The merge patch that makes stored status equal ``status`` in the parts the autoscaler owns.

    ``wire()`` leaves unset optionals out, and a JSON merge patch keeps every key it does not
    name, so a cleared ``autoscaling.lastError`` must be sent as an explicit null; otherwise the
    error of a past outage stays in status for good (and every later tick patches again,
    because what is stored never equals what was computed).
    """
    wire = status.wire()
    auto = wire.get("autoscaling")
    if isinstance(auto, dict):
        auto.setdefault("lastError", None)
    return wire


def write_autoscaler_status(
    kube: Kube,
    namespace: str,
    name: str,
    decisions: Mapping[str, tuple[PoolDecision, bool]],
    source: str,
    error: str | None,
    retries: int = 5,
) -> InferenceServiceStatus | None:
    """Read-modify-write with the resourceVersion as precondition; no write if unchanged."""
    for _ in range(retries):
        obj = kube.get("InferenceService", namespace, name)
        previous = InferenceServiceStatus.model_validate(obj.get("status") or {})
        generation = int(obj["metadata"].get("generation", 0))
        new = apply_tick_to_status(previous, decisions, source, error, generation, _now_rfc3339())
        if new.wire() == previous.wire():
            return None
        try:
            kube.patch_status(
                namespace, name, status_patch(new), obj["metadata"]["resourceVersion"]
            )
            return previous
        except Conflict:
            time.sleep(0.05)
    return None


def _enabled(spec: kopf.Spec, **_: Any) -> bool:
    return bool((spec.get("autoscaling") or {}).get("enabled"))


def _accepted(body: Mapping[str, Any]) -> bool:
    for c in (body.get("status") or {}).get("conditions", []) or []:
        if c.get("type") == "Accepted":
            return bool(c.get("status") == "True")
    return False


@kopf.daemon(GROUP, VERSION, PLURAL, id="autoscaler", when=_enabled, cancellation_timeout=10)
async def autoscaler_daemon(
    stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    """Tick the autoscaler every ``spec.autoscaling.interval`` while autoscaling is enabled."""
    kube: Kube = memo.kube
    metrics: AutoscalerMetrics = memo.autoscaler_metrics
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    hooks_impl = KubeHooks(kube, namespace, name)
    hooks = ClusterHooks(
        read_pool=hooks_impl.read_pool,
        list_pods=hooks_impl.list_pods,
        list_routers=hooks_impl.list_routers,
        scale=hooks_impl.scale,
        record=hooks_impl.record,
        set_deletion_costs=hooks_impl.set_deletion_costs,
    )
    scaler: Autoscaler | None = None
    interval = 10.0
    async with aiohttp.ClientSession() as session:
        try:
            while not stopped:
                spec, rejection = parse_spec(dict(body.get("spec") or {}))
                if spec is None or rejection is not None or not _accepted(body):
                    await stopped.wait(interval)
                    continue
                config = from_spec(spec)
                interval = config.interval_s
                source = make_source(config.source, session, router_port=ROUTER_PORT)
                if scaler is None:
                    scaler = Autoscaler(
                        namespace=namespace, name=name, config=config, source=source,
                        hooks=hooks, metrics=metrics,
                    )  # fmt: skip
                else:
                    scaler.reconfigure(config, source)
                hooks_impl.decisions.clear()
                report = await scaler.tick(time.time())
                errors = list(report.errors) + [
                    f"{role}: {o.error}" for role, o in report.observations.items() if o.error
                ]
                if hooks_impl.decisions:
                    await _record(
                        kube, body, hooks_impl.decisions, source.kind, "; ".join(errors) or None
                    )
                await stopped.wait(interval)
        finally:
            metrics.forget(namespace, name)


async def _record(
    kube: Kube,
    body: kopf.Body,
    decisions: Mapping[str, tuple[PoolDecision, bool]],
    source: str,
    error: str | None,
) -> None:
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    try:
        previous = await asyncio.to_thread(
            write_autoscaler_status, kube, namespace, name, dict(decisions), source, error
        )
    except NotFound:
        return
    except Exception as e:  # status is best effort; the next tick tries again
        log.warning("Could not record autoscaling status: %s", e)
        return
    for role, (d, applied) in sorted(decisions.items()):
        if applied:
            verb = "ScaledUp" if d.desired > d.current else "ScaledDown"
            change = f"{role}: {d.current} -> {d.desired} replicas"
            kopf.info(body, reason=verb, message=f"{change} ({d.reason.value}: {d.message})")
    if previous is not None:
        before = get_condition(previous.conditions, ConditionType.AUTOSCALING)
        status, reason, message = autoscaling_condition({r: d for r, (d, _) in decisions.items()})
        if (status == FALSE and (before is None or before.status != FALSE)) or (
            reason == Reason.GPU_BUDGET_REACHED and (before is None or before.reason != reason)
        ):
            kopf.warn(body, reason=reason, message=message)
