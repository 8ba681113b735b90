"""Events that status transitions call for: a pure function of the status before and after.

The status writer calls :func:`status_events` once per write it made, with what was stored and
what it wrote, so each transition is announced once however many writers race: a spec newly
rejected (Warning), Ready turning True (Normal), the Autoscaling condition turning False or
reaching the GPU budget (Warning), KVTransferEffective turning False (Warning) or recovering
(Normal). Events about actions (Applied, Pruned, ScaledUp, ScaledDown)
are emitted by whoever acted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from tandem.api.conditions import (
    FALSE,
    TRUE,
    Condition,
    ConditionReason,
    ConditionType,
    get_condition,
)
from tandem.api.v1alpha1 import InferenceServiceStatus

NORMAL: Final = "Normal"
WARNING: Final = "Warning"


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


def _pair(
    old: InferenceServiceStatus, new: InferenceServiceStatus, ctype: str
) -> tuple[Condition | None, Condition | None]:
    return get_condition(old.conditions, ctype), get_condition(new.conditions, ctype)


def newly_rejected(old: InferenceServiceStatus, new: InferenceServiceStatus) -> Condition | None:
    """``Accepted=False`` that was not there before: it was not False, or it now says something
    else, or it is about a newer generation (each rejected spec change is announced)."""
    before, after = _pair(old, new, ConditionType.ACCEPTED)
    if after is None or after.status != FALSE:
        return None
    same = (
        before is not None
        and before.status == FALSE
        and before.message == after.message
        and before.observed_generation == after.observed_generation
    )
    return None if same else after


def became_ready(old: InferenceServiceStatus, new: InferenceServiceStatus) -> bool:
    before, after = _pair(old, new, ConditionType.READY)
    return after is not None and after.status == TRUE and (before is None or before.status != TRUE)


def autoscaling_warning(
    old: InferenceServiceStatus, new: InferenceServiceStatus
) -> Condition | None:
    """The Autoscaling condition when it just turned False or just reached the GPU budget."""
    before, after = _pair(old, new, ConditionType.AUTOSCALING)
    if after is None:
        return None
    turned_false = after.status == FALSE and (before is None or before.status != FALSE)
    budget = ConditionReason.GPU_BUDGET_REACHED
    reached_budget = after.reason == budget and (before is None or before.reason != budget)
    return after if turned_false or reached_budget else None


def kv_transfer_change(old: InferenceServiceStatus, new: InferenceServiceStatus) -> Event | None:
    """KVTransferEffective turning False (Warning: KV is not moving) or back to True."""
    before, after = _pair(old, new, ConditionType.KV_TRANSFER_EFFECTIVE)
    if after is None or (before is not None and before.status == after.status):
        return None
    if after.status == FALSE:
        return Event(WARNING, after.reason, after.message)
    if after.status == TRUE and before is not None and before.status == FALSE:
        return Event(NORMAL, after.reason, after.message)
    return None


def status_events(old: InferenceServiceStatus, new: InferenceServiceStatus) -> list[Event]:
    """What a status write from ``old`` to ``new`` announces."""
    events = []
    rejected = newly_rejected(old, new)
    if rejected is not None:
        events.append(Event(WARNING, rejected.reason, rejected.message))
    if became_ready(old, new):
        events.append(Event(NORMAL, "Ready", "All pools and the router are ready"))
    warning = autoscaling_warning(old, new)
    if warning is not None:
        events.append(Event(WARNING, warning.reason, warning.message))
    kv = kv_transfer_change(old, new)
    if kv is not None:
        events.append(kv)
    return events
