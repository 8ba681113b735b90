"""Decide whether a child needs applying, so an idle resync sends no writes at all.

The live object carries server defaults (protocols, default modes, status...), so "equal" is
the wrong test. A child is up to date when every field of the desired manifest is present in
the live object with the same value: dicts compared key by key, lists item by item in order.
Anything that drifted (a hand edit of a field Tandem owns) fails the test and is re-applied.
"""

from __future__ import annotations

from typing import Any

# Metadata not compared field by field: owner references are compared by uid below (a list
# compared item by item would also fail on references other controllers added).
_IGNORED_META = {"ownerReferences"}


def is_subset(desired: Any, live: Any) -> bool:
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return False
        return all(k in live and is_subset(v, live[k]) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return False
        return all(is_subset(d, lv) for d, lv in zip(desired, live, strict=True))
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired is live
    if isinstance(desired, int | float) and isinstance(live, int | float):
        return float(desired) == float(live)
    return bool(desired == live)


def up_to_date(desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """True when applying ``desired`` would change nothing Tandem owns."""
    if live is None:
        return False
    body = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind", "metadata")}
    meta = {k: v for k, v in desired["metadata"].items() if k not in _IGNORED_META}
    if not is_subset(meta, live.get("metadata", {})):
        return False
    live_owners = {o.get("uid") for o in live.get("metadata", {}).get("ownerReferences", [])}
    wanted_owners = {o["uid"] for o in desired["metadata"].get("ownerReferences", [])}
    if not wanted_owners <= live_owners:
        return False
    return is_subset(body, live)
