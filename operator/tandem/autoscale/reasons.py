"""The vocabulary of autoscaling decisions: one-word CamelCase reasons (API conventions).

They appear in status ``lastScale.reason``, in Events, and as the ``reason`` label of
``tandem_autoscaler_decisions_total``, so they are part of the API: rename none lightly. The enum
is ``ScaleReason`` so it is not mistaken for the condition reasons of ``tandem.api.conditions``.
"""

from __future__ import annotations

from enum import StrEnum


class ScaleReason(StrEnum):
    """Why a pool has the replicas it was given; one word, CamelCase (API conventions)."""

    QUEUE_ABOVE_TARGET = "QueueAboveTarget"
    KV_CACHE_PRESSURE = "KVCachePressure"
    ARRIVALS_RISING = "ArrivalRateRising"
    LOAD_BELOW_TARGET = "LoadBelowTarget"
    IDLE = "Idle"
    STABLE = "Stable"
    SCALE_UP_STABILIZING = "ScaleUpStabilizing"
    SCALE_DOWN_STABILIZING = "ScaleDownStabilizing"
    COLD_START = "ColdStartInProgress"
    METRICS_MISSING = "MetricsMissing"
    METRICS_STALE = "MetricsStale"
    METRICS_PARTIAL = "MetricsPartial"
    AT_MAX = "AtMaxReplicas"
    AT_MIN = "AtMinReplicas"
    GPU_BUDGET = "GPUBudget"
    RATIO_BOUND = "RatioBound"


HOLD_REASONS = frozenset(
    {
        ScaleReason.METRICS_MISSING,
        ScaleReason.METRICS_STALE,
        ScaleReason.METRICS_PARTIAL,
        ScaleReason.COLD_START,
    }
)
