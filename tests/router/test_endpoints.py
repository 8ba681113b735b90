"""Unit tests of endpoint pools: membership, health, leases and the FIFO admission queue."""

from __future__ import annotations

import asyncio

import pytest

from tandem.api.vocabulary import Role
from tandem.router.endpoints import EndpointPool, HealthState, NoEndpointError
from tandem.router.pick import least_loaded_policy

pytestmark = pytest.mark.timeout(10)

POLICY = least_loaded_policy()


def pool(*urls: str, max_inflight: int = 2, healthy: bool = True) -> EndpointPool:
    p = EndpointPool(role=Role.PREFILL, max_inflight=max_inflight)
    p.set_urls(urls)
    for url in urls:
        p.set_health(url, healthy)
    return p


async def test_lease_counts_requests_and_tokens_until_released() -> None:
    p = pool("http://a")
    lease = await p.acquire(POLICY, tokens=100)
    ep = p.endpoints["http://a"]
    assert (ep.inflight, ep.inflight_tokens) == (1, 100)
    lease.release()
    lease.release()  # idempotent
    assert (ep.inflight, ep.inflight_tokens) == (0, 0)


async def test_new_endpoints_start_unknown_and_are_not_picked() -> None:
    p = EndpointPool(role=Role.DECODE, max_inflight=4)
    added: list[str] = []
    p.on_added = lambda eps: added.extend(e.url for e in eps)
    p.set_urls(["http://a/", "http://b"])
    assert added == ["http://a", "http://b"]
    assert p.count(HealthState.UNKNOWN) == 2
    with pytest.raises(NoEndpointError):
        await p.acquire(POLICY, tokens=1)


async def test_set_urls_removes_endpoints_but_running_leases_finish() -> None:
    p = pool("http://a", "http://b")
    lease = await p.acquire(POLICY, tokens=1)
    p.set_urls(["http://c"])
    assert list(p.endpoints) == ["http://c"]
    lease.release()  # must not raise for a removed endpoint


async def test_requests_queue_in_fifo_order_when_all_engines_are_full() -> None:
    p = pool("http://a", max_inflight=1)
    first = await p.acquire(POLICY, tokens=1)
    order: list[int] = []

    async def waiter(i: int) -> None:
        lease = await p.acquire(POLICY, tokens=1)
        order.append(i)
        await asyncio.sleep(0)
        lease.release()

    tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
    await asyncio.sleep(0.01)
    assert p.queue_depth == 3
    first.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert p.queue_depth == 0
    assert p.endpoints["http://a"].inflight == 0


async def test_cancelled_waiter_leaves_the_queue_without_leaking_a_slot() -> None:
    p = pool("http://a", max_inflight=1)
    held = await p.acquire(POLICY, tokens=1)
    task = asyncio.create_task(p.acquire(POLICY, tokens=1))
    await asyncio.sleep(0.01)
    assert p.queue_depth == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert p.queue_depth == 0
    held.release()
    assert p.endpoints["http://a"].inflight == 0


async def test_waiter_granted_and_cancelled_in_same_tick_returns_its_slot() -> None:
    p = pool("http://a", max_inflight=1)
    held = await p.acquire(POLICY, tokens=1)
    task = asyncio.create_task(p.acquire(POLICY, tokens=1))
    await asyncio.sleep(0.01)
    held.release()  # grants the slot to the waiter...
    task.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await task
    assert p.endpoints["http://a"].inflight == 0


async def test_no_healthy_endpoint_fails_fast() -> None:
    p = pool("http://a", healthy=False)
    with pytest.raises(NoEndpointError):
        await p.acquire(POLICY, tokens=1)


async def test_queued_requests_fail_when_the_last_engine_turns_unhealthy() -> None:
    p = pool("http://a", max_inflight=1)
    await p.acquire(POLICY, tokens=1)
    task = asyncio.create_task(p.acquire(POLICY, tokens=1))
    await asyncio.sleep(0.01)
    p.set_health("http://a", False)
    with pytest.raises(NoEndpointError):
        await task


async def test_recovered_engine_takes_queued_requests() -> None:
    p = pool("http://a", "http://b", max_inflight=1)
    p.set_health("http://b", False)
    await p.acquire(POLICY, tokens=1)
    task = asyncio.create_task(p.acquire(POLICY, tokens=1))
    await asyncio.sleep(0.01)
    p.set_health("http://b", True)
    lease = await asyncio.wait_for(task, 1)
    assert lease.endpoint.url == "http://b"


async def test_choose_ignores_capacity_and_takes_no_slot() -> None:
    p = pool("http://a", max_inflight=1)
    await p.acquire(POLICY, tokens=1)
    ep = p.choose(POLICY)
    assert ep is not None and ep.inflight == 1


def test_endpoint_host_is_the_url_hostname() -> None:
    p = pool("http://10.0.0.7:8000", "http://[fd00::1]:8000")
    assert {e.host for e in p.endpoints.values()} == {"10.0.0.7", "fd00::1"}


async def test_a_restricted_lease_waits_only_for_its_allowed_endpoints() -> None:
    """A hand-off's decoder must have a usable pair: only those endpoints may serve it."""
    p = pool("http://a", "http://b", max_inflight=1)
    only_a = frozenset({"http://a"})
    first = await p.acquire(POLICY, tokens=1, allowed=only_a)
    assert first.endpoint.url == "http://a"
    waiting = asyncio.create_task(p.acquire(POLICY, tokens=1, allowed=only_a))
    await asyncio.sleep(0)
    assert p.queue_depth == 1 and not waiting.done()  # b is free, but not allowed
    first.release()
    assert (await waiting).endpoint.url == "http://a"


async def test_a_restricted_waiter_fails_when_its_endpoints_go_down() -> None:
    p = pool("http://a", "http://b", max_inflight=1)
    held = await p.acquire(POLICY, tokens=1, allowed=frozenset({"http://a"}))
    waiting = asyncio.create_task(p.acquire(POLICY, tokens=1, allowed=frozenset({"http://a"})))
    await asyncio.sleep(0)
    p.set_health("http://a", False)  # b stays healthy: the waiter must not hang
    with pytest.raises(NoEndpointError):
        await waiting
    held.release()
    with pytest.raises(NoEndpointError):
        await p.acquire(POLICY, tokens=1, allowed=frozenset({"http://a"}))


def test_health_changes_and_good_answers_are_reported() -> None:
    p = pool("http://a")
    changes: list[tuple[str, HealthState, HealthState]] = []
    p.on_health = lambda ep, old: changes.append((ep.url, old, ep.state))
    p.set_health("http://a", True)  # no change
    p.set_health("http://a", False)
    assert changes == [("http://a", HealthState.HEALTHY, HealthState.UNHEALTHY)]
    p.mark_alive("http://a", 12.0)
    p.mark_alive("http://gone", 12.0)  # ignored
    assert p.endpoints["http://a"].last_ok == 12.0
    assert p.healthy_urls() == []
