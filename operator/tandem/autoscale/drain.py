"""Which pods a scale-down should remove: the ones with the fewest requests in flight. Pure.

A Deployment scale-down lets the ReplicaSet controller pick the victims: not-yet-ready pods
first, then, among ready ones, the lowest ``controller.kubernetes.io/pod-deletion-cost``
annotation (beta, on by default since Kubernetes 1.22). Setting that annotation from each pod's
``vllm:num_requests_running`` + ``num_requests_waiting`` just before scaling down makes the
controller remove the idlest engines, so fewer in-flight requests are cut (what nobody else
does for P/D: notes/anchors.md gap 4). The annotation is best effort and costs one API write per
pod, so it is set only right before a scale-down, never every tick. It does not apply to
LeaderWorkerSet groups (they shrink from the highest index).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from tandem.autoscale.observation import PodSample

DELETION_COST_ANNOTATION: Final = "controller.kubernetes.io/pod-deletion-cost"
# A pod whose load is unknown (its /metrics did not answer) may be busy; keep it if we can.
# Far above any real batch size, far below the annotation's int32 limit.
UNKNOWN_LOAD_COST: Final = 1_000_000


def deletion_costs(pods: Sequence[str], samples: Iterable[PodSample]) -> dict[str, int]:
    """Pod name -> deletion cost: its requests in flight, or UNKNOWN_LOAD_COST if unread."""
    load = {s.pod: s.running + s.waiting for s in samples}
    return {pod: math.ceil(load[pod]) if pod in load else UNKNOWN_LOAD_COST for pod in pods}


def victims(costs: Mapping[str, int], remove: int) -> list[str]:
    """The pods the ReplicaSet controller would pick first, ties broken by name."""
    return [pod for _, pod in sorted((c, p) for p, c in costs.items())][: max(remove, 0)]


def annotation_patches(costs: Mapping[str, int]) -> dict[str, dict[str, str]]:
    """Per-pod ``metadata.annotations`` patches (annotation values are strings)."""
    return {pod: {DELETION_COST_ANNOTATION: str(cost)} for pod, cost in costs.items()}
