"""One reconcile as the operator runs it: the call, its metrics, its events, its errors.

Every trigger goes through :func:`run_reconcile` (a change of the InferenceService, a child's
event, the periodic resync, the autoscaler's status refresh), so they all share one reconcile,
one status writer and one event policy. A rejected spec (or child) is a result, not an error:
only failures a retry can fix (the API server unavailable, throttling, a forbidden request)
become a ``kopf.TemporaryError``; any other request the API server finds invalid is a
``kopf.PermanentError`` (no retry loop; the resync tries again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import kopf

from tandem.reconcile.k8s import ApiError, Forbidden, Invalid, NotFound
from tandem.reconcile.metrics import OperatorMetrics
from tandem.reconcile.reconciler import ReconcileResult, reconcile

log = logging.getLogger("tandem.operator")


def emit(body: Any, outcome: ReconcileResult) -> None:
    """Events for what the reconcile did and for the status transition it wrote."""
    if outcome.applied:
        kopf.info(body, reason="Applied", message="Applied " + ", ".join(outcome.applied))
    if outcome.pruned:
        kopf.info(body, reason="Pruned", message="Deleted " + ", ".join(outcome.pruned))
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def _count(metrics: OperatorMetrics, trigger: str, outcome: ReconcileResult) -> None:
    for key in outcome.applied:
        metrics.applied.labels(key.split("/", 1)[0]).inc()
    for key in outcome.pruned:
        metrics.pruned.labels(key.split("/", 1)[0]).inc()
    if outcome.status_written:
        metrics.status_writes.inc()
    if outcome.newly_rejected and outcome.rejection is not None:
        metrics.rejections.labels(outcome.rejection.reason).inc()
    metrics.reconciles.labels(trigger, "rejected" if outcome.rejection else "ok").inc()


def run_reconcile(memo: Any, body: Any, trigger: str) -> None:
    """Reconcile ``body`` (an InferenceService) with the operator's state in ``memo``."""
    metrics: OperatorMetrics = memo.metrics
    started = time.monotonic()
    try:
        kv = getattr(memo, "kv_verdicts", None)
        outcome = reconcile(memo.kube, dict(body), memo.autoscaler_reports, kv)
    except NotFound as e:  # the object (or its namespace) went away meanwhile
        log.info("Reconcile stopped, something is gone: %s", e.message)
        metrics.reconciles.labels(trigger, "gone").inc()
        return
    except Forbidden as e:
        metrics.errors.labels("Forbidden").inc()
        metrics.reconciles.labels(trigger, "error").inc()
        raise kopf.TemporaryError(f"Forbidden: {e.message}", delay=60) from e
    except Invalid as e:  # not a child (those are rejections): retrying the same cannot help
        metrics.errors.labels("Invalid").inc()
        metrics.reconciles.labels(trigger, "error").inc()
        raise kopf.PermanentError(str(e)) from e
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
    _count(metrics, trigger, outcome)
    emit(body, outcome)


async def refresh_in_background(memo: Any, body: Any, trigger: str) -> bool:
    """Run the reconcile from a daemon, so the one status writer folds the daemon's newest
    report in; True when done. Best effort: on failure the daemon's next round (or the
    resync) tries again."""
    try:
        await asyncio.to_thread(run_reconcile, memo, dict(body), trigger)
    except Exception as e:
        log.warning("Status refresh for %s failed: %s", trigger, e)
        return False
    return True
