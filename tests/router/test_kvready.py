"""The KV-ready hub's routing decisions (deliver, relay, drop), without sockets."""

from __future__ import annotations

import pytest

from tandem.router.kvready import KvReadyHub, encode_notification, make_req_id

pytestmark = pytest.mark.timeout(10)


def hub() -> tuple[KvReadyHub, list[str]]:
    outcomes: list[str] = []
    return KvReadyHub("127.0.0.1", 7500, "10.0.0.1", on_outcome=outcomes.append), outcomes


def test_own_notifications_count_up_to_the_tp_size() -> None:
    h, outcomes = hub()
    req_id = h.new_req_id("abc")
    assert req_id == make_req_id("10.0.0.1", 7500, "abc")
    with h.expect(req_id, 2) as waiter:
        h.handle(encode_notification(req_id))
        assert not waiter.event.is_set()
        h.handle(encode_notification(req_id))
        assert waiter.event.is_set()
    assert outcomes == ["delivered", "delivered"]


def test_late_or_unknown_notifications_are_dropped() -> None:
    h, outcomes = hub()
    h.handle(encode_notification(h.new_req_id("gone")))
    h.handle(b"not msgpack \xc1")
    assert outcomes == ["unknown", "malformed"]


def test_foreign_format_ids_are_delivered_when_awaited() -> None:
    h, outcomes = hub()
    with h.expect("42", 1) as waiter:  # e.g. an id LMCache's own proxy would have used
        h.handle(encode_notification("42"))
    assert waiter.event.is_set() and outcomes == ["delivered"]


def test_relayed_notification_for_another_owner_is_not_relayed_again() -> None:
    h, outcomes = hub()
    other = make_req_id("10.0.0.2", 7500, "x")
    h.handle(encode_notification(other, forwarded=True))
    assert outcomes == ["dropped"]


def test_zero_ranks_needs_no_notification() -> None:
    h, _ = hub()
    with h.expect("r", 0) as waiter:
        assert waiter.event.is_set()
