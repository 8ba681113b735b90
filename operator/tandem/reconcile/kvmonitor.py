"""The KV monitor: one kopf daemon per InferenceService that checks KV really moves.

Every ``--kv-interval-seconds`` (15 s by default) it reads the ready router, decode and prefill
pods' ``/metrics`` (router: its container port; engines: the plan's metrics port), judges the
window since the previous reading with :func:`tandem.kvtruth.judge` (pure), exports the figures
as operator metrics, and records the verdict in the operator's
:class:`~tandem.kvtruth.KvVerdicts`. When the condition it shows changes, the daemon runs the
ordinary reconcile, whose one status writer sets ``KVTransferEffective`` and announces the
change as an event (``reconcile/events.py``). It never writes status itself, and a steady
service costs no writes.

A pod that cannot be read is left out of the reading (and of the window): the verdict covers
the pods that answered, and the counters of a pod that comes back are judged against its own
previous values. Without any router answering there is nothing to judge: no verdict is made and
the condition stays as it is (a new baseline is taken once a router answers again).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import aiohttp
import kopf

from tandem.api.v1alpha1 import GROUP, PLURAL, VERSION
from tandem.api.vocabulary import Role
from tandem.kvtruth import (
    KvSample,
    KvVerdict,
    KvVerdicts,
    Reading,
    judge,
    parse_decoder,
    parse_prefill,
    parse_router,
)
from tandem.plan import ServicePlan
from tandem.plan.names import LABEL_INSTANCE, LABEL_ROLE, ROUTER
from tandem.reconcile.autoscaling import ready_pods
from tandem.reconcile.driver import refresh_in_background
from tandem.reconcile.k8s import Kube
from tandem.reconcile.metrics import OperatorMetrics
from tandem.reconcile.reconciler import accepted

log = logging.getLogger("tandem.kvmonitor")

KV_INTERVAL_S: Final = 15.0
SCRAPE_TIMEOUT_S: Final = 3.0
STATE_VALUE: Final = {"True": 1.0, "False": 0.0, "Unknown": -1.0}


def _ready_ips(kube: Kube, namespace: str, name: str, role: str) -> dict[str, str]:
    selector = f"{LABEL_INSTANCE}={name},{LABEL_ROLE}={role}"
    return {p.name: p.ip for p in ready_pods(kube.list_kind("Pod", namespace, selector))}


async def _scrape(session: aiohttp.ClientSession, ip: str, port: int) -> str | None:
    try:
        timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)
        async with session.get(f"http://{ip}:{port}/metrics", timeout=timeout) as r:
            return await r.text() if r.status == 200 else None
    except (aiohttp.ClientError, TimeoutError):
        return None


async def read(kube: Kube, session: aiohttp.ClientSession, plan: ServicePlan) -> Reading:
    """One reading: every ready router and engine pod that answered, by pod name."""
    ns, name = plan.owner.namespace, plan.owner.name
    targets = [
        (ROUTER, plan.router.config.port, parse_router),
        (Role.DECODE, plan.pool(Role.DECODE).metrics_port, parse_decoder),
        (Role.PREFILL, plan.pool(Role.PREFILL).metrics_port, parse_prefill),
    ]
    reading: dict[str, KvSample] = {}
    for role, port, parse in targets:
        ips = await asyncio.to_thread(_ready_ips, kube, ns, name, str(role))
        texts = await asyncio.gather(*(_scrape(session, ip, port) for ip in ips.values()))
        for pod, text in zip(ips, texts, strict=True):
            if text is not None:
                reading[pod] = parse(text)
    return reading


def export(metrics: OperatorMetrics, plan: ServicePlan, verdict: KvVerdict) -> None:
    labels = (plan.owner.namespace, plan.owner.name)
    metrics.kv_effective.labels(*labels).set(STATE_VALUE.get(verdict.status, -1.0))
    for kind, value in (
        ("handoffs", verdict.handoffs),
        ("failed", verdict.failed),
        ("decode_only_fallbacks", verdict.fallbacks),
    ):
        metrics.kv_window.labels(*labels, kind).set(value)
    if verdict.external_share is not None:
        metrics.kv_external_share.labels(*labels).set(verdict.external_share)


async def kv_monitor_daemon(
    stopped: kopf.DaemonStopped,
    body: kopf.Body,
    memo: kopf.Memo,
    interval_s: float = KV_INTERVAL_S,
    **_: Any,
) -> None:
    kube: Kube = memo.kube
    verdicts: KvVerdicts = memo.kv_verdicts
    metrics: OperatorMetrics = memo.metrics
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    previous: Reading | None = None
    stale = False  # status does not show the newest verdict yet
    async with aiohttp.ClientSession() as session:
        try:
            while not stopped:
                reading: Reading | None
                admitted = accepted(body)
                if admitted is not None:
                    plan = admitted[1]
                    reading = await read(kube, session, plan)
                    if not any(sample.routers for sample in reading.values()):
                        reading = None  # no router answered: nothing to judge from
                    elif previous is not None:
                        verdict = judge(previous, reading)
                        export(metrics, plan, verdict)
                        stale = verdicts.record(namespace, name, verdict) or stale
                    previous = reading
                    if stale:
                        stale = not await refresh_in_background(memo, body, "kvmonitor")
                await stopped.wait(interval_s)
        finally:
            verdicts.forget(namespace, name)
            metrics.forget_kv(namespace, name)


def register(registry: kopf.OperatorRegistry, interval_s: float = KV_INTERVAL_S) -> None:
    """The daemon on ``registry``, every ``interval_s`` (``tandem run --kv-interval-seconds``)."""

    async def kv_monitor(
        stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, **_: Any
    ) -> None:
        await kv_monitor_daemon(stopped, body, memo, interval_s)

    kopf.daemon(
        GROUP, VERSION, PLURAL, id="kv-monitor", cancellation_timeout=10, registry=registry
    )(kv_monitor)
