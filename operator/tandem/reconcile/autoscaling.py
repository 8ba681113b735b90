"""The autoscaler inside the operator: one kopf daemon per autoscaled InferenceService.

The daemon wires :class:`tandem.autoscale.actuator.Autoscaler` to Kubernetes through
:class:`KubeHooks`: it reads the pools' Deployments, lists ready engine and router pods, patches
``spec.replicas`` by server-side apply under the autoscaler's own field manager (the reconcile
never sends ``replicas`` while autoscaling is on), and marks the least busy pods cheapest to
delete before a scale-down. It emits one ``ScaledUp``/``ScaledDown`` event per change applied;
in Shadow mode (``spec.autoscaling.mode``) it writes nothing and emits one
``WouldScaleUp``/``WouldScaleDown`` event per change of recommendation instead.

It does not write status. Each tick's :class:`~tandem.autoscale.report.TickReport` goes into the
operator's in-memory :class:`~tandem.autoscale.report.Reports`; when that changes what status
would show, the daemon runs the ordinary reconcile, whose one status writer folds the report in
(``lastScale``, ``recommendation``, ``desiredReplicas``, ``status.autoscaling``, the
``Autoscaling`` condition). A steady service costs no writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import kopf

from tandem.api.v1alpha1 import GROUP, PLURAL, VERSION
from tandem.api.vocabulary import ROUTER_CONTAINER_PORT, Role
from tandem.autoscale.actuator import AUTOSCALER_FIELD_MANAGER, Autoscaler
from tandem.autoscale.config import AutoscalerConfig, from_spec
from tandem.autoscale.drain import annotation_patches
from tandem.autoscale.metrics import AutoscalerMetrics
from tandem.autoscale.policy import PoolState
from tandem.autoscale.report import AutoscalerReport, Reports, TickReport
from tandem.autoscale.sources import PodRef, make_source
from tandem.plan.names import LABEL_INSTANCE, LABEL_ROLE, ROUTER, pool_name
from tandem.reconcile.driver import refresh_in_background
from tandem.reconcile.k8s import Kube
from tandem.reconcile.reconciler import accepted
from tandem.reconcile.scaling_status import autoscaling_condition

log = logging.getLogger("tandem.autoscaler")

# Seconds between looks at a spec that is not (yet) accepted.
IDLE_INTERVAL_S = 10.0


def ready_pods(pods: list[dict[str, Any]]) -> list[PodRef]:
    """Pods that pass readiness and are not being deleted, with their IPs."""
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
    """:class:`~tandem.autoscale.actuator.ClusterHooks` over the synchronous client, in threads."""

    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name

    def _pods(self, role: str) -> list[PodRef]:
        selector = f"{LABEL_INSTANCE}={self.name},{LABEL_ROLE}={role}"
        return ready_pods(self.kube.list_kind("Pod", self.namespace, selector))

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
        return await asyncio.to_thread(self._pods, ROUTER)

    async def scale(self, role: Role, replicas: int) -> None:
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": pool_name(self.name, role), "namespace": self.namespace},
            "spec": {"replicas": replicas},
        }
        await asyncio.to_thread(self.kube.apply, body, AUTOSCALER_FIELD_MANAGER)

    async def set_deletion_costs(self, role: Role, costs: Mapping[str, int]) -> None:
        for pod, patch in annotation_patches(costs).items():
            await asyncio.to_thread(
                self.kube.patch, "Pod", self.namespace, pod, {"metadata": {"annotations": patch}}
            )


def shown(report: AutoscalerReport | None) -> object:
    """What status shows of a report: a new tick that changes none of it needs no refresh."""
    if report is None:
        return None
    tick = report.tick
    condition = autoscaling_condition(tick.decisions, tick.shadow)
    return (
        condition,
        tick.mode,
        tick.source,
        tick.error,
        sorted(report.last_scale.items()),
        sorted(report.advice.items()),
    )


def would_scale_events(body: kopf.Body, report: AutoscalerReport | None, tick: TickReport) -> None:
    """In Shadow mode, one ``WouldScaleUp``/``WouldScaleDown`` event per pool whose
    recommendation this tick changed to a change of replicas (not one per tick)."""
    if report is None or report.tick is not tick or not tick.shadow:
        return
    decisions = tick.decisions
    for role in sorted(report.fresh):
        advice = report.advice[role]
        if not advice.moves:
            continue
        verb = "WouldScaleUp" if advice.replicas > advice.current else "WouldScaleDown"
        change = f"{role}: would scale {advice.current} -> {advice.replicas} replicas"
        message = f"{change} ({advice.reason}: {decisions[role].message}); Shadow mode, unchanged"
        kopf.info(body, reason=verb, message=message)


def scale_events(body: kopf.Body, tick: TickReport) -> None:
    """One ``ScaledUp``/``ScaledDown`` event per change the tick applied."""
    decisions = tick.decisions
    for role, (before, after) in sorted(tick.scaled.items()):
        d = decisions[role]
        verb = "ScaledUp" if after > before else "ScaledDown"
        change = f"{role}: {before} -> {after} replicas"
        kopf.info(body, reason=verb, message=f"{change} ({d.reason.value}: {d.message})")


def accepted_config(body: Mapping[str, Any]) -> AutoscalerConfig | None:
    """The autoscaler's settings while the spec is valid and ``Accepted=True``, else None."""
    admitted = accepted(body)
    return None if admitted is None else from_spec(*admitted)


def _enabled(spec: kopf.Spec, **_: Any) -> bool:
    return bool((spec.get("autoscaling") or {}).get("enabled"))


async def autoscaler_daemon(
    stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    """Tick the autoscaler every ``spec.autoscaling.interval`` while autoscaling is enabled."""
    kube: Kube = memo.kube
    metrics: AutoscalerMetrics = memo.autoscaler_metrics
    reports: Reports = memo.autoscaler_reports
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    hooks = KubeHooks(kube, namespace, name)
    scaler: Autoscaler | None = None
    stale = False  # status does not show the newest report yet
    async with aiohttp.ClientSession() as session:
        try:
            while not stopped:
                config = accepted_config(body)
                if config is None:
                    await stopped.wait(IDLE_INTERVAL_S)
                    continue
                source = make_source(config.source, session, router_port=ROUTER_CONTAINER_PORT)
                if scaler is None:
                    scaler = Autoscaler(
                        namespace=namespace, name=name, config=config, source=source,
                        hooks=hooks, metrics=metrics,
                    )  # fmt: skip
                else:
                    scaler.reconfigure(config, source)
                tick = await scaler.tick(time.time())
                scale_events(body, tick)
                before = shown(reports.get(namespace, name))
                report = reports.record(namespace, name, tick)
                would_scale_events(body, report, tick)
                stale = stale or shown(report) != before
                if stale:
                    stale = not await refresh_in_background(memo, body, "autoscaler")
                await stopped.wait(config.interval_s)
        finally:
            metrics.forget(namespace, name)
            reports.forget(namespace, name)


def register(registry: kopf.OperatorRegistry) -> None:
    kopf.daemon(
        GROUP,
        VERSION,
        PLURAL,
        id="autoscaler",
        when=_enabled,
        cancellation_timeout=10,
        registry=registry,
    )(autoscaler_daemon)
