"""kopf handlers: the operator's only entry points from Kubernetes events.

Each handler is a few lines around :func:`tandem.reconcile.driver.run_reconcile`. The handlers
are plain ``def`` because the Kubernetes client is synchronous: kopf runs them in a thread pool
instead of blocking its event loop. State lives in kopf's ``memo`` (set at startup), not in
module globals.

Nothing is registered at import: :func:`build_registry` registers every handler on a registry
of its own, with the resync period as a plain value (``tandem run --resync-seconds``).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from tandem.api.v1alpha1 import GROUP, PLURAL, VERSION
from tandem.autoscale.metrics import AutoscalerMetrics
from tandem.autoscale.report import Reports
from tandem.kvtruth import KvVerdicts
from tandem.plan.names import LABEL_INSTANCE, MANAGED_BY
from tandem.reconcile import autoscaling, kvmonitor
from tandem.reconcile.driver import run_reconcile
from tandem.reconcile.k8s import ApiError, Kube, NotFound, load_api_client
from tandem.reconcile.metrics import OperatorMetrics

log = logging.getLogger("tandem.operator")


def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Deliberate kopf settings (see kopf's docs/configuration.rst)."""
    # Bookkeeping goes to annotations under our group, so .status holds only our API.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Bounded watches: reconnect every few minutes instead of trusting one long connection.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.posting.level = logging.INFO
    settings.execution.max_workers = int(memo.get("workers") or 8)
    # Retries of a failing handler back off instead of hammering the API server.
    settings.batching.error_delays = [1, 2, 5, 10, 30, 60, 120]
    # Shared by every object's memo (kopf copies this one shallowly per object).
    if memo.get("kube") is None:
        memo.kube = Kube(api=load_api_client())
    if memo.get("metrics") is None:
        memo.metrics = OperatorMetrics()
    if memo.get("autoscaler_metrics") is None:
        memo.autoscaler_metrics = AutoscalerMetrics(memo.metrics.registry)
    if memo.get("autoscaler_reports") is None:
        memo.autoscaler_reports = Reports()
    if memo.get("kv_verdicts") is None:
        memo.kv_verdicts = KvVerdicts()


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's own login through the Kubernetes client (in-cluster, else the kubeconfig)."""
    return kopf.login_via_client(**kwargs)


def on_change(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    run_reconcile(memo, body, "change")


def on_resync(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Level-triggered safety net: corrects drift and refreshes status. Idle = no writes."""
    run_reconcile(memo, body, "resync")


def on_child_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A pool or router Deployment changed (or went): the full reconcile of its owner.

    Level-triggered whatever the event: an idle apply is free (nothing differs, nothing is
    sent), and a deleted or drifted child is put back at once.
    """
    name = body.get("metadata", {}).get("labels", {}).get(LABEL_INSTANCE)
    namespace = body.get("metadata", {}).get("namespace")
    if not name or not namespace:
        return
    try:
        owner = memo.kube.get("InferenceService", namespace, name)
    except NotFound:
        return
    except ApiError as e:
        log.warning("Could not read owner %s/%s: %s", namespace, name, e)
        return
    try:
        run_reconcile(memo, owner, "child")
    except (kopf.TemporaryError, kopf.PermanentError) as e:
        # Event handlers are not retried; the resync timer will converge.
        log.warning("Reconcile of %s/%s after a child event failed: %s", namespace, name, e)


def probe_reconciles(memo: kopf.Memo, **_: Any) -> int:
    """Liveness detail: reconciles so far (kopf serves it on the liveness endpoint)."""
    total = 0.0
    for metric in memo.metrics.reconciles.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                total += sample.value
    return int(total)


def build_registry(
    resync_seconds: float, kv_interval_seconds: float = kvmonitor.KV_INTERVAL_S
) -> kopf.OperatorRegistry:
    """Every handler of the operator, on a registry of its own, for ``kopf.run(registry=...)``."""
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(login)
    kopf.on.startup(registry=registry)(configure)
    for on in (kopf.on.resume, kopf.on.create, kopf.on.update):
        on(GROUP, VERSION, PLURAL, registry=registry)(on_change)
    kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        interval=resync_seconds,
        initial_delay=resync_seconds,
        registry=registry,
    )(on_resync)
    kopf.on.event(
        "apps",
        "v1",
        "deployments",
        labels={"app.kubernetes.io/managed-by": MANAGED_BY},
        registry=registry,
    )(on_child_event)
    kopf.on.probe(id="reconciles", registry=registry)(probe_reconciles)
    autoscaling.register(registry)
    kvmonitor.register(registry, kv_interval_seconds)
    return registry
