"""kopf handlers: the operator's only entry points from Kubernetes events.

Each handler is a few lines around :func:`tandem.reconcile.reconciler.reconcile`. The handlers
are plain ``def`` because the Kubernetes client is synchronous: kopf runs them in a thread pool
instead of blocking its event loop. State lives in kopf's ``memo`` (set at startup), not in
module globals.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import kopf

from tandem.api.v1alpha1 import GROUP, PLURAL, VERSION
from tandem.autoscale.metrics import AutoscalerMetrics
from tandem.reconcile.k8s import ApiError, Forbidden, Kube, NotFound, load_api_client
from tandem.reconcile.metrics import OperatorMetrics
from tandem.reconcile.reconciler import Outcome, reconcile
from tandem.render.names import LABEL_INSTANCE, MANAGED_BY

log = logging.getLogger("tandem.operator")

# The resync period is fixed when the handlers are registered (kopf timers are declarative);
# `tandem run --resync-seconds` sets it through the environment before this module is imported.
RESYNC_SECONDS = float(os.environ.get("TANDEM_RESYNC_SECONDS", "30"))
ANNOTATION_PREFIX = "tandem.dev"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Deliberate kopf settings (see kopf's docs/configuration.rst)."""
    # Bookkeeping goes to annotations under our group, so .status holds only our API.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/finalizer"
    # Bounded watches: reconnect every few minutes instead of trusting one long connection.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.posting.level = logging.INFO
    settings.execution.max_workers = int(getattr(memo, "workers", 8) or 8)
    # Retries of a failing handler back off instead of hammering the API server.
    settings.batching.error_delays = [1, 2, 5, 10, 30, 60, 120]
    if getattr(memo, "kube", None) is None:
        memo.kube = Kube(api=load_api_client())
    if getattr(memo, "metrics", None) is None:
        memo.metrics = OperatorMetrics()
    if getattr(memo, "autoscaler_metrics", None) is None:
        memo.autoscaler_metrics = AutoscalerMetrics(memo.metrics.registry)


def _emit(body: Any, outcome: Outcome) -> None:
    if outcome.newly_rejected and outcome.rejection is not None:
        kopf.warn(body, reason=outcome.rejection.reason, message=outcome.rejection.message)
    if outcome.applied:
        kopf.info(body, reason="Applied", message="Applied " + ", ".join(outcome.applied))
    if outcome.pruned:
        kopf.info(body, reason="Pruned", message="Deleted " + ", ".join(outcome.pruned))
    if outcome.ready_changed == "True":
        kopf.info(body, reason="Ready", message="All pools and the router are ready")


def _run(memo: Any, body: Any, trigger: str, *, apply: bool = True) -> None:
    metrics: OperatorMetrics = memo.metrics
    started = time.monotonic()
    try:
        outcome = reconcile(memo.kube, dict(body), apply=apply)
    except NotFound:
        metrics.reconciles.labels(trigger, "gone").inc()
        return
    except Forbidden as e:
        metrics.errors.labels("Forbidden").inc()
        metrics.reconciles.labels(trigger, "error").inc()
        raise kopf.TemporaryError(f"Forbidden: {e.message}", delay=60) from e
    except ApiError as e:
        metrics.errors.labels(type(e).__name__).inc()
        metrics.reconciles.labels(trigger, "error").inc()
        raise kopf.TemporaryError(str(e), delay=5) from e
    except Exception:
        metrics.errors.labels("Unexpected").inc()
        metrics.reconciles.labels(trigger, "error").inc()
        raise
    finally:
        metrics.duration.labels(trigger).observe(time.monotonic() - started)
    for key in outcome.applied:
        metrics.applied.labels(key.split("/", 1)[0]).inc()
    for key in outcome.pruned:
        metrics.pruned.labels(key.split("/", 1)[0]).inc()
    if outcome.status_written:
        metrics.status_writes.inc()
    if outcome.newly_rejected and outcome.rejection is not None:
        metrics.rejections.labels(outcome.rejection.reason).inc()
    metrics.reconciles.labels(trigger, "rejected" if outcome.rejection else "ok").inc()
    _emit(body, outcome)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def on_change(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _run(memo, body, "change")


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
def on_resync(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Level-triggered safety net: corrects drift and refreshes status. Idle = no writes."""
    _run(memo, body, "resync")


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
def on_child_event(body: kopf.Body, memo: kopf.Memo, type: str | None, **_: Any) -> None:
    """A pool or router Deployment changed: refresh the owner's status (no applies)."""
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
        _run(memo, owner, "child", apply=type == "DELETED")
    except kopf.TemporaryError as e:
        # Event handlers are not retried; the resync timer will converge.
        log.warning("Status refresh of %s/%s failed: %s", namespace, name, e)


@kopf.on.probe(id="reconciles")
def probe_reconciles(memo: kopf.Memo, **_: Any) -> int:
    """Liveness detail: reconciles so far (kopf serves it on the liveness endpoint)."""
    total = 0.0
    for metric in memo.metrics.reconciles.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                total += sample.value
    return int(total)
