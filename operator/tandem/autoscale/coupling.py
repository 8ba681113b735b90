"""Joint choice of both pools' replicas under the prefill:decode ratio and the GPU budget.

Each pool first decides alone what it wants (``target``) and how far it may move this tick
(``lo..hi``: min/max, step limits, no scale-down on held metrics). This module then picks the
pair (prefill, decode) inside those boxes that, in order of priority:

1. exceeds ``maxGPUs`` the least (GPUs = replicas x tensor x pipeline, summed over the pools);
2. breaks the prefill:decode ratio bounds the least;
3. leaves the worst-served pool the smallest share of its target unmet (a scarce budget is
   shared so that each pool gets the same fraction of what its load asks for, so the pool
   under more relative pressure gets more replicas);
4. then the least pressure-weighted shortfall, the fewest GPUs beyond the targets, and the
   least movement from the current replicas.

So a ratio breach is repaired by *raising* the pool with less pressure whenever that is possible
(it costs GPUs but leaves no load unserved), and only lowered when the other pool is at its
maximum or the budget is exhausted. The boxes are small (step limits bound them), so exhaustive
search is exact, cheap, and easy to reason about.
"""

from __future__ import annotations

from dataclasses import dataclass

# Rounding for float comparisons of the ratio, e.g. 0.3 * 10 != 3 in binary floating point.
_EPS = 1e-9


@dataclass(frozen=True)
class PoolBox:
    """One pool's room to move this tick."""

    lo: int
    hi: int
    target: int
    current: int
    gpus_per_replica: int
    pressure: float = 1.0


def ratio_violation(prefill: int, decode: int, ratio_min: float, ratio_max: float) -> float:
    """How far ``prefill / decode`` lies outside ``[ratio_min, ratio_max]``, in prefill replicas.

    Zero when both pools are empty (no ratio to keep); ``prefill`` when decode is empty.
    """
    over = prefill - ratio_max * decode
    under = ratio_min * decode - prefill
    worst = max(0.0, over, under)
    return 0.0 if worst < _EPS else worst


def gpus(prefill: int, decode: int, prefill_box: PoolBox, decode_box: PoolBox) -> int:
    return prefill * prefill_box.gpus_per_replica + decode * decode_box.gpus_per_replica


def _shortfall(x: int, box: PoolBox) -> float:
    """Fraction of the pool's target left unmet (0 when it gets all it asked for)."""
    if box.target <= 0 or x >= box.target:
        return 0.0
    return (box.target - x) / box.target


def _cost(
    p: int,
    d: int,
    pb: PoolBox,
    db: PoolBox,
    ratio_min: float,
    ratio_max: float,
    max_gpus: int | None,
) -> tuple[float, float, float, float, int, int, int, int]:
    used = gpus(p, d, pb, db)
    over_budget = 0.0 if max_gpus is None else float(max(0, used - max_gpus))
    sp, sd = _shortfall(p, pb), _shortfall(d, db)
    excess = max(0, p - pb.target) * pb.gpus_per_replica + max(0, d - db.target) * (
        db.gpus_per_replica
    )
    moved = abs(p - pb.current) + abs(d - db.current)
    return (
        over_budget,
        ratio_violation(p, d, ratio_min, ratio_max),
        max(sp, sd),
        pb.pressure * sp + db.pressure * sd,
        excess,
        moved,
        p,
        d,
    )


def couple(
    prefill: PoolBox,
    decode: PoolBox,
    *,
    ratio_min: float,
    ratio_max: float,
    max_gpus: int | None,
) -> tuple[int, int]:
    """The best (prefill, decode) replicas inside both boxes; see the module docstring."""
    best: tuple[int, int] | None = None
    best_cost: tuple[float, float, float, float, int, int, int, int] | None = None
    for p in range(prefill.lo, prefill.hi + 1):
        for d in range(decode.lo, decode.hi + 1):
            cost = _cost(p, d, prefill, decode, ratio_min, ratio_max, max_gpus)
            if best_cost is None or cost < best_cost:
                best, best_cost = (p, d), cost
    assert best is not None, "boxes are never empty"
    return best
