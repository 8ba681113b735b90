"""Endpoint selection for the P/D router as pure Filter → Scorer → Picker functions.

The shape follows the Gateway API Inference Extension's scheduling framework
(kubernetes-sigs/gateway-api-inference-extension `pkg/epp/scheduling/framework/plugins.go`):
filters drop candidates that must not be used, scorers give every remaining candidate a value in
[0, 1] (higher is better), and a picker chooses one from the weighted sum. Everything here works on
immutable snapshots (`Candidate`) so it can be tested without sockets, clocks or Kubernetes; the
router's I/O layer (`endpoints.py`) builds the snapshots and applies the result.

Determinism matters: several router replicas must agree on prefix affinity, so hashing uses
BLAKE2b instead of Python's per-process randomised `hash()`, and ties are broken by the caller's
request sequence number instead of a random generator.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from tandem.api.vocabulary import RouterPolicy

#: How much of the prompt feeds the prefix-affinity hash. 512 characters is roughly 128 tokens
#: (4 characters per token): long enough to separate different system prompts and documents,
#: short enough that hashing a 220 KB prompt costs nothing.
PREFIX_CHARS: Final = 512

#: Prefix affinity holds while the preferred engine has at most this many more requests in
#: flight than the least loaded one; beyond that, balance wins over cache locality.
DEFAULT_PREFIX_SLACK: Final = 4

#: Scores closer than this count as a tie.
_TIE_EPSILON: Final = 1e-9


@dataclass(frozen=True, slots=True)
class Candidate:
    """An immutable snapshot of one engine endpoint as the picker sees it.

    `inflight` and `inflight_tokens` are this router replica's own live counts;
    `engine_waiting`/`engine_running` come from the engine's `/metrics` (possibly stale, and
    including traffic from other router replicas), or are None when not scraped.
    """

    key: str
    healthy: bool
    inflight: int = 0
    inflight_tokens: int = 0
    capacity: int = 256
    engine_waiting: float | None = None
    engine_running: float | None = None


@dataclass(frozen=True, slots=True)
class PickRequest:
    """What the picker knows about the request being placed.

    `sequence` increases by one per pick in a pool; round robin and tie-breaks use it, which keeps
    the functions pure while still rotating over equal candidates.
    """

    prompt_tokens: int = 0
    prefix_hash: str | None = None
    sequence: int = 0
    #: Only these keys may be picked (a hand-off's verified pairs); None: any.
    allowed: frozenset[str] | None = None


Filter = Callable[[Sequence[Candidate], PickRequest], list[Candidate]]
Scorer = Callable[[Sequence[Candidate], PickRequest], list[float]]
Picker = Callable[[Sequence[Candidate], Sequence[float], PickRequest], Candidate | None]


@dataclass(frozen=True, slots=True)
class Policy:
    """A named pipeline: filters in order, weighted scorers, then a picker."""

    name: str
    filters: tuple[Filter, ...]
    scorers: tuple[tuple[Scorer, float], ...]
    picker: Picker


# --- load model -------------------------------------------------------------------------------


def request_load(candidate: Candidate) -> float:
    """Outstanding requests on an engine, blending the router's count with the engine's own.

    The router's count is exact and live but sees only its own traffic; the engine's
    waiting+running is stale by up to one scrape interval but includes other replicas' traffic.
    Taking the larger of the two never under-estimates either view.
    """
    own = float(candidate.inflight)
    if candidate.engine_waiting is None and candidate.engine_running is None:
        return own
    engine = (candidate.engine_waiting or 0.0) + (candidate.engine_running or 0.0)
    return max(own, engine)


# --- filters ----------------------------------------------------------------------------------


def allowed_filter(candidates: Sequence[Candidate], request: PickRequest) -> list[Candidate]:
    """Keep only the keys the request allows (e.g. decoders with a verified pair)."""
    if request.allowed is None:
        return list(candidates)
    return [c for c in candidates if c.key in request.allowed]


def healthy_filter(candidates: Sequence[Candidate], _: PickRequest) -> list[Candidate]:
    """Drop endpoints that failed their last health probe (or were never probed)."""
    return [c for c in candidates if c.healthy]


def capacity_filter(candidates: Sequence[Candidate], _: PickRequest) -> list[Candidate]:
    """Drop endpoints already at `--max-inflight-per-engine`; the request queues instead."""
    return [c for c in candidates if c.inflight < c.capacity]


# --- scorers ----------------------------------------------------------------------------------


def _inverse_minmax(values: Sequence[float]) -> list[float]:
    """Map values to [0, 1] with the smallest → 1 and the largest → 0 (all equal → all 1)."""
    low, high = min(values), max(values)
    if high - low <= _TIE_EPSILON:
        return [1.0] * len(values)
    return [(high - v) / (high - low) for v in values]


def load_scorer(candidates: Sequence[Candidate], _: PickRequest) -> list[float]:
    """Fewer outstanding requests score higher."""
    return _inverse_minmax([request_load(c) for c in candidates])


def token_scorer(candidates: Sequence[Candidate], _: PickRequest) -> list[float]:
    """Fewer in-flight prompt tokens score higher: one 50k-token prompt outweighs ten chats."""
    return _inverse_minmax([float(c.inflight_tokens) for c in candidates])


def prefix_hash(text: str, chars: int = PREFIX_CHARS) -> str:
    """A stable hash of the prompt's first `chars` characters (same on every replica)."""
    return hashlib.blake2b(
        text[:chars].encode("utf-8", "surrogatepass"), digest_size=16
    ).hexdigest()


def rendezvous_weight(prefix: str, key: str) -> int:
    """Highest-random-weight hashing: each (prefix, endpoint) pair gets a stable weight.

    The endpoint with the highest weight owns the prefix; adding or removing an endpoint moves
    only the prefixes that endpoint owned, unlike `hash % n`.
    """
    digest = hashlib.blake2b(f"{prefix}|{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def preferred_for_prefix(candidates: Sequence[Candidate], prefix: str) -> Candidate:
    """The candidate that owns `prefix` under rendezvous hashing."""
    return max(candidates, key=lambda c: (rendezvous_weight(prefix, c.key), c.key))


def make_prefix_scorer(slack: int = DEFAULT_PREFIX_SLACK) -> Scorer:
    """Score 1 for the prefix's owner while it is within `slack` requests of the least loaded.

    Every other candidate (and every candidate when the owner is too busy, or the request has no
    prefix) scores 0, so the remaining scorers decide: that is the least-loaded fallback.
    """

    def prefix_scorer(candidates: Sequence[Candidate], request: PickRequest) -> list[float]:
        if request.prefix_hash is None or not candidates:
            return [0.0] * len(candidates)
        owner = preferred_for_prefix(candidates, request.prefix_hash)
        least = min(request_load(c) for c in candidates)
        if request_load(owner) > least + slack:
            return [0.0] * len(candidates)
        return [1.0 if c.key == owner.key else 0.0 for c in candidates]

    return prefix_scorer


# --- pickers ----------------------------------------------------------------------------------


def max_score_picker(
    candidates: Sequence[Candidate], scores: Sequence[float], request: PickRequest
) -> Candidate | None:
    """Highest total score; ties rotate with the request sequence so idle pools spread load."""
    if not candidates:
        return None
    best = max(scores)
    tied = [c for c, s in zip(candidates, scores, strict=True) if best - s <= _TIE_EPSILON]
    return tied[request.sequence % len(tied)]


def round_robin_picker(
    candidates: Sequence[Candidate], _scores: Sequence[float], request: PickRequest
) -> Candidate | None:
    """Rotate over the (key-sorted) candidates by request sequence, ignoring scores."""
    if not candidates:
        return None
    return candidates[request.sequence % len(candidates)]


# --- policies ---------------------------------------------------------------------------------

_BASE_FILTERS: Final[tuple[Filter, ...]] = (allowed_filter, healthy_filter, capacity_filter)


def least_loaded_policy() -> Policy:
    """Least outstanding work: request count first, in-flight prompt tokens second."""
    return Policy(
        name=RouterPolicy.LEAST_LOADED.value,
        filters=_BASE_FILTERS,
        scorers=((load_scorer, 1.0), (token_scorer, 0.5)),
        picker=max_score_picker,
    )


def round_robin_policy() -> Policy:
    """Plain rotation over healthy endpoints with spare capacity."""
    return Policy(
        name=RouterPolicy.ROUND_ROBIN.value,
        filters=_BASE_FILTERS,
        scorers=(),
        picker=round_robin_picker,
    )


def prefix_aware_policy(slack: int = DEFAULT_PREFIX_SLACK) -> Policy:
    """Prefix affinity (weight 4 beats the 1.5 maximum of the load scorers) over least-loaded."""
    return Policy(
        name=RouterPolicy.PREFIX_AWARE.value,
        filters=_BASE_FILTERS,
        scorers=((make_prefix_scorer(slack), 4.0), (load_scorer, 1.0), (token_scorer, 0.5)),
        picker=max_score_picker,
    )


def make_policy(name: RouterPolicy | str, *, prefix_slack: int = DEFAULT_PREFIX_SLACK) -> Policy:
    """The policy for a `--policy` value."""
    match RouterPolicy(name):
        case RouterPolicy.LEAST_LOADED:
            return least_loaded_policy()
        case RouterPolicy.ROUND_ROBIN:
            return round_robin_policy()
        case RouterPolicy.PREFIX_AWARE:
            return prefix_aware_policy(prefix_slack)


def pick(policy: Policy, candidates: Sequence[Candidate], request: PickRequest) -> Candidate | None:
    """Run `policy` over `candidates`; None when no candidate survives the filters.

    Candidates are sorted by key first so the result does not depend on the caller's ordering.
    """
    remaining: list[Candidate] = sorted(candidates, key=lambda c: c.key)
    for keep in policy.filters:
        remaining = keep(remaining, request)
        if not remaining:
            return None
    totals = [0.0] * len(remaining)
    for scorer, weight in policy.scorers:
        for i, score in enumerate(scorer(remaining, request)):
            totals[i] += weight * score
    return policy.picker(remaining, totals, request)
