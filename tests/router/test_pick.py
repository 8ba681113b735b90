"""Unit tests of the pure pick functions (filters, scorers, pickers, policies)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.api.vocabulary import RouterPolicy
from tandem.router.pick import (
    Candidate,
    PickRequest,
    allowed_filter,
    capacity_filter,
    healthy_filter,
    least_loaded_policy,
    load_scorer,
    make_policy,
    pick,
    preferred_for_prefix,
    prefix_aware_policy,
    prefix_hash,
    request_load,
    round_robin_policy,
    token_scorer,
)

pytestmark = pytest.mark.timeout(10)

REQ = PickRequest()


def cand(key: str, inflight: int = 0, **kw: object) -> Candidate:
    return Candidate(key=key, healthy=kw.pop("healthy", True), inflight=inflight, **kw)  # type: ignore[arg-type]


def test_unhealthy_endpoints_are_never_picked() -> None:
    cands = [cand("a", healthy=False), cand("b", inflight=50)]
    for policy in (least_loaded_policy(), round_robin_policy(), prefix_aware_policy()):
        for seq in range(5):
            chosen = pick(policy, cands, PickRequest(sequence=seq, prefix_hash="x"))
            assert chosen is not None and chosen.key == "b"


def test_no_healthy_endpoint_picks_nothing() -> None:
    assert pick(least_loaded_policy(), [cand("a", healthy=False)], REQ) is None
    assert pick(least_loaded_policy(), [], REQ) is None


def test_full_endpoints_are_filtered_out() -> None:
    cands = [cand("a", inflight=2, capacity=2), cand("b", inflight=1, capacity=2)]
    assert [c.key for c in capacity_filter(cands, REQ)] == ["b"]
    assert pick(round_robin_policy(), [cands[0]], REQ) is None


def test_only_allowed_keys_are_picked() -> None:
    """A hand-off's decoder must have a usable pair: the picker honours the allowed set."""
    cands = [cand("a"), cand("b", inflight=9), cand("c")]
    assert [c.key for c in allowed_filter(cands, REQ)] == ["a", "b", "c"]
    only_b = PickRequest(allowed=frozenset({"b"}))
    for policy in (least_loaded_policy(), round_robin_policy(), prefix_aware_policy()):
        chosen = pick(policy, cands, only_b)
        assert chosen is not None and chosen.key == "b"
    assert pick(least_loaded_policy(), cands, PickRequest(allowed=frozenset())) is None


def test_healthy_filter_keeps_order() -> None:
    cands = [cand("b"), cand("a", healthy=False), cand("c")]
    assert [c.key for c in healthy_filter(cands, REQ)] == ["b", "c"]


def test_least_loaded_picks_fewest_requests() -> None:
    cands = [cand("a", 3), cand("b", 1), cand("c", 2)]
    chosen = pick(least_loaded_policy(), cands, REQ)
    assert chosen is not None and chosen.key == "b"


def test_least_loaded_breaks_equal_requests_by_prompt_tokens() -> None:
    cands = [cand("a", 1, inflight_tokens=50_000), cand("b", 1, inflight_tokens=100)]
    chosen = pick(least_loaded_policy(), cands, REQ)
    assert chosen is not None and chosen.key == "b"


def test_engine_reported_load_counts_when_higher_than_own() -> None:
    # Another router replica loads "a": its engine reports 20 waiting although we sent nothing.
    a = cand("a", 0, engine_waiting=20.0, engine_running=4.0)
    b = cand("b", 2, engine_waiting=0.0, engine_running=2.0)
    assert request_load(a) == 24.0
    assert request_load(b) == 2.0
    chosen = pick(least_loaded_policy(), [a, b], REQ)
    assert chosen is not None and chosen.key == "b"


def test_stale_engine_load_never_hides_own_inflight() -> None:
    assert request_load(cand("a", 7, engine_waiting=0.0, engine_running=1.0)) == 7.0


def test_equal_candidates_rotate_by_sequence() -> None:
    cands = [cand("a"), cand("b"), cand("c")]
    keys = [pick(least_loaded_policy(), cands, PickRequest(sequence=s)) for s in range(6)]
    assert [k.key for k in keys if k] == ["a", "b", "c", "a", "b", "c"]


def test_result_does_not_depend_on_input_order() -> None:
    cands = [cand("a", 1), cand("b", 0), cand("c", 0)]
    for seq in range(4):
        req = PickRequest(sequence=seq)
        first = pick(least_loaded_policy(), cands, req)
        again = pick(least_loaded_policy(), list(reversed(cands)), req)
        assert first == again


def test_round_robin_cycles_over_healthy_endpoints() -> None:
    cands = [cand("a", 9), cand("b", healthy=False), cand("c", 0)]
    keys = [pick(round_robin_policy(), cands, PickRequest(sequence=s)) for s in range(4)]
    assert [k.key for k in keys if k] == ["a", "c", "a", "c"]


def test_scorers_stay_within_unit_interval() -> None:
    cands = [cand("a", 0, inflight_tokens=5), cand("b", 10, inflight_tokens=0), cand("c", 4)]
    for scorer in (load_scorer, token_scorer):
        scores = scorer(cands, REQ)
        assert all(0.0 <= s <= 1.0 for s in scores)
        assert max(scores) == 1.0


def test_prefix_aware_sends_same_prefix_to_same_engine() -> None:
    cands = [cand(f"http://p{i}") for i in range(4)]
    key = prefix_hash("You are a helpful assistant. " * 30)
    chosen = {
        pick(prefix_aware_policy(), cands, PickRequest(prefix_hash=key, sequence=s)).key  # type: ignore[union-attr]
        for s in range(10)
    }
    assert chosen == {preferred_for_prefix(cands, key).key}


def test_prefix_aware_spreads_different_prefixes() -> None:
    cands = [cand(f"http://p{i}") for i in range(4)]
    owners = {
        pick(prefix_aware_policy(), cands, PickRequest(prefix_hash=prefix_hash(f"doc {i}"))).key  # type: ignore[union-attr]
        for i in range(40)
    }
    assert len(owners) >= 3


def test_prefix_aware_falls_back_to_least_loaded_when_owner_is_busy() -> None:
    key = prefix_hash("shared system prompt")
    base = [cand("http://p0"), cand("http://p1"), cand("http://p2")]
    owner = preferred_for_prefix(base, key).key
    busy = [cand(c.key, 10 if c.key == owner else 1) for c in base]
    chosen = pick(prefix_aware_policy(slack=4), busy, PickRequest(prefix_hash=key))
    assert chosen is not None and chosen.key != owner
    # Within the slack the owner keeps the request.
    near = [cand(c.key, 4 if c.key == owner else 1) for c in base]
    chosen = pick(prefix_aware_policy(slack=4), near, PickRequest(prefix_hash=key))
    assert chosen is not None and chosen.key == owner


def test_prefix_aware_without_prefix_is_least_loaded() -> None:
    cands = [cand("a", 5), cand("b", 1)]
    chosen = pick(prefix_aware_policy(), cands, PickRequest(prefix_hash=None))
    assert chosen is not None and chosen.key == "b"


def test_removing_another_endpoint_keeps_prefix_owner() -> None:
    cands = [cand(f"http://p{i}") for i in range(5)]
    for i in range(30):
        key = prefix_hash(f"conversation {i}")
        owner = preferred_for_prefix(cands, key)
        others = [c for c in cands if c.key != owner.key]
        fewer = [owner, *others[1:]]
        assert preferred_for_prefix(fewer, key).key == owner.key


def test_prefix_hash_is_stable_and_bounded() -> None:
    assert prefix_hash("abc") == prefix_hash("abc")
    assert prefix_hash("x" * 512 + "tail one") == prefix_hash("x" * 512 + "tail two")
    assert prefix_hash("a") != prefix_hash("b")


@pytest.mark.parametrize("name", [p.value for p in RouterPolicy])
def test_make_policy_by_flag_value(name: str) -> None:
    assert make_policy(name).name == name


def test_make_policy_rejects_unknown_name() -> None:
    with pytest.raises(ValueError):
        make_policy("random")


candidates = st.lists(
    st.builds(
        Candidate,
        key=st.text(alphabet="abcdef", min_size=1, max_size=4),
        healthy=st.booleans(),
        inflight=st.integers(0, 20),
        inflight_tokens=st.integers(0, 10_000),
        capacity=st.integers(1, 20),
        engine_waiting=st.none() | st.floats(0, 50),
        engine_running=st.none() | st.floats(0, 50),
    ),
    max_size=8,
    unique_by=lambda c: c.key,
)


@settings(max_examples=40, deadline=None)
@given(cands=candidates, seq=st.integers(0, 1000), policy=st.sampled_from(list(RouterPolicy)))
def test_any_pick_is_healthy_and_has_capacity(
    cands: list[Candidate], seq: int, policy: RouterPolicy
) -> None:
    chosen = pick(make_policy(policy), cands, PickRequest(sequence=seq, prefix_hash="p"))
    usable = [c for c in cands if c.healthy and c.inflight < c.capacity]
    if not usable:
        assert chosen is None
    else:
        assert chosen in usable


@settings(max_examples=40, deadline=None)
@given(cands=candidates, seq=st.integers(0, 1000))
def test_least_loaded_with_equal_tokens_picks_a_minimum(cands: list[Candidate], seq: int) -> None:
    flat = [Candidate(c.key, c.healthy, c.inflight, 0, c.capacity) for c in cands]
    chosen = pick(least_loaded_policy(), flat, PickRequest(sequence=seq))
    usable = [c for c in flat if c.healthy and c.inflight < c.capacity]
    if chosen is not None:
        assert chosen.inflight == min(c.inflight for c in usable)
