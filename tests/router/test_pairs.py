"""Unit tests of the pure pair state (`pairs.PairBook`): gating, breaking, retries, forgetting."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tandem.router.metrics import PairCollector, endpoint_label
from tandem.router.pairs import (
    CANARY_BACKOFF_SECONDS,
    FAILURES_TO_BREAK,
    NO_PAIR,
    HandoffOutcome,
    PairBook,
    PairPolicy,
    PairState,
)

pytestmark = pytest.mark.timeout(10)

P1, P2 = "http://10.0.0.1:8000", "http://10.0.0.2:8000"
D1, D2 = "http://10.0.1.1:8000", "http://10.0.1.2:8000"
OK, FAILED = HandoffOutcome.OK, HandoffOutcome.PREFILL_FAILED


def book(**policy: object) -> PairBook:
    b = PairBook(PairPolicy(**policy))  # type: ignore[arg-type]
    b.sync([P1, P2], [D1, D2])
    return b


def test_new_pairs_wait_for_their_canary_by_default() -> None:
    b = book()
    assert b.state_counts() == {
        PairState.UNVERIFIED: 4,
        PairState.VERIFIED: 0,
        PairState.BROKEN: 0,
    }
    assert not b.usable((P1, D1), 0.0)
    assert b.decoders_with_pair([P1, P2], [D1, D2], 0.0) == frozenset()
    assert b.gates_readiness()
    assert b.record((P1, D1), OK, 1.0, canary=True) is PairState.VERIFIED
    assert b.usable((P1, D1), 1.0)
    assert b.decoders_with_pair([P1, P2], [D1, D2], 1.0) == {D1}
    assert b.prefills_for(D1, [P1, P2], 1.0) == {P1}
    assert b.decoders_with_pair([P2], [D1, D2], 1.0) == frozenset()  # P1 is not healthy


def test_without_the_requirement_pairs_serve_until_their_first_canary_fails() -> None:
    b = book(require_verified=False)
    assert b.usable((P1, D1), 0.0) and not b.gates_readiness()
    b.record((P1, D1), HandoffOutcome.NO_KV_TRANSFER, 1.0, canary=True)
    assert not b.usable((P1, D1), 1.0)  # the canary showed no KV arrives: never silently
    assert b.usable((P2, D1), 1.0)


def test_a_failed_canary_is_retried_soon_and_three_failures_break_the_pair() -> None:
    b = book(retry_seconds=30.0)
    pair = (P1, D1)
    assert pair in b.due_canaries([P1], [D1], 0.0)
    b.record(pair, HandoffOutcome.KV_TIMEOUT, 0.0, canary=True)
    assert b.pairs[pair].state is PairState.UNVERIFIED
    assert pair not in b.due_canaries([P1], [D1], CANARY_BACKOFF_SECONDS - 0.1)
    assert pair in b.due_canaries([P1], [D1], CANARY_BACKOFF_SECONDS)
    b.record(pair, HandoffOutcome.KV_TIMEOUT, 10.0, canary=True)
    assert b.pairs[pair].retry_at == 10.0 + 2 * CANARY_BACKOFF_SECONDS
    assert b.record(pair, HandoffOutcome.TIMEOUT, 20.0, canary=True) is PairState.BROKEN
    assert b.broken() == [pair]
    assert pair not in b.due_canaries([P1], [D1], 49.0)
    assert pair in b.due_canaries([P1], [D1], 50.0)
    assert b.record(pair, OK, 50.0, canary=True) is PairState.VERIFIED
    assert b.broken() == []


def test_traffic_failures_in_a_row_break_a_verified_pair() -> None:
    b = book(retry_seconds=5.0)
    pair = (P1, D1)
    b.record(pair, OK, 0.0, canary=True)
    for _ in range(FAILURES_TO_BREAK - 1):
        b.record(pair, HandoffOutcome.DECODE_FAILED, 1.0)
    b.record(pair, OK, 1.0)  # a success in between resets the streak
    b.record(pair, HandoffOutcome.DECODE_ONLY_FALLBACK, 1.0)  # counted, not a failure
    for _ in range(FAILURES_TO_BREAK - 1):
        b.record(pair, FAILED, 2.0)
    assert b.usable(pair, 2.0)
    assert b.record(pair, FAILED, 2.0) is PairState.BROKEN
    assert not b.usable(pair, 100.0)  # with canaries, only a canary brings it back
    assert pair in b.due_canaries([P1, P2], [D1, D2], 7.0)
    assert pair not in b.due_canaries([P1, P2], [D1], 6.9)
    counts = b.pairs[pair].handoffs
    assert (
        counts[FAILED] == 3 and counts[OK] == 1 and counts[HandoffOutcome.DECODE_ONLY_FALLBACK] == 1
    )


def test_without_canaries_a_broken_pair_is_retried_by_traffic() -> None:
    b = book(canary=False, retry_seconds=5.0)
    pair = (P1, D1)
    assert b.usable(pair, 0.0) and not b.gates_readiness()
    assert b.due_canaries([P1], [D1], 0.0) == []
    for _ in range(FAILURES_TO_BREAK):
        b.record(pair, FAILED, 1.0)
    assert b.pairs[pair].state is PairState.BROKEN
    assert not b.usable(pair, 5.9)
    assert b.usable(pair, 6.0)  # half-open
    assert b.record(pair, OK, 6.0) is PairState.UNVERIFIED


def test_pairs_of_endpoints_that_left_are_forgotten_with_their_series() -> None:
    b = book()
    b.record((P2, D2), OK, 0.0, canary=True)
    b.record((P2, D2), OK, 0.0)
    b.record(NO_PAIR, HandoffOutcome.DECODE_ONLY_FALLBACK, 0.0)
    registry = CollectorRegistry()
    registry.register(PairCollector(b))
    text = generate_latest(registry).decode()
    labels = f'decode="{endpoint_label(D2)}",outcome="ok",prefill="{endpoint_label(P2)}"'
    assert f"tandem_router_handoffs_total{{{labels}}} 1.0" in text
    assert f"tandem_router_canaries_total{{{labels}}} 1.0" in text
    none = 'decode="none",outcome="decode_only_fallback",prefill="none"'
    assert f"tandem_router_handoffs_total{{{none}}} 1.0" in text
    assert 'tandem_router_pairs{state="verified"} 1.0' in text
    b.sync([P1], [D1, D2])
    assert set(b.pairs) == {(P1, D1), (P1, D2)}
    text = generate_latest(registry).decode()
    assert endpoint_label(P2) not in text
    assert 'tandem_router_pairs{state="unverified"} 2.0' in text


def test_a_returning_endpoint_is_rechecked_without_losing_its_traffic() -> None:
    """A decoder that stalled (its /health stuck during a long KV pull) and came back keeps
    its verified pairs in rotation while a canary re-checks them; before, every request got a
    503 until the canary passed (28 of 120 and 76 of 120 failed on real CPU engines)."""
    b = book()
    for pair in b.pairs:
        b.record(pair, OK, 0.0, canary=True)
    b.reset(D1)
    assert b.usable((P1, D1), 1.0) and b.usable((P2, D1), 1.0)
    assert set(b.due_canaries([P1, P2], [D1, D2], 1.0)) == {(P1, D1), (P2, D1)}
    b.record((P1, D1), OK, 2.0, canary=True)
    assert (P1, D1) not in b.due_canaries([P1, P2], [D1, D2], 3.0)
    b.record((P2, D1), FAILED, 2.0, canary=True)  # the re-check failed: out of rotation
    assert not b.usable((P2, D1), 3.0)


def test_an_unverified_pair_of_a_returning_endpoint_is_canaried_at_once() -> None:
    b = book()
    b.record((P1, D1), FAILED, 0.0, canary=True)  # waits for its retry
    assert (P1, D1) not in b.due_canaries([P1, P2], [D1, D2], 1.0)
    b.reset(D1)
    assert (P1, D1) in b.due_canaries([P1, P2], [D1, D2], 1.0)
    assert not b.usable((P1, D1), 1.0)


def test_broken_pairs_are_exported_one_by_one() -> None:
    b = book()
    for _ in range(FAILURES_TO_BREAK):
        b.record((P1, D2), FAILED, 0.0)
    registry = CollectorRegistry()
    registry.register(PairCollector(b))
    text = generate_latest(registry).decode()
    broken = f'prefill="{endpoint_label(P1)}"'
    assert f'tandem_router_pair_broken{{decode="{endpoint_label(D2)}",{broken}}} 1.0' in text
    assert 'tandem_router_pairs{state="broken"} 1.0' in text
    assert endpoint_label("http://[fd00::1]:8000/") == "[fd00::1]:8000"
