"""Live endpoint state per role: membership, health, load, and the FIFO admission queue.

Discovery (static flags or EndpointSlices) decides *which* endpoints exist, the health prober
decides whether they are usable, and requests take a `Lease` for the time they occupy an engine.
When every healthy engine already has `--max-inflight-per-engine` requests from this replica, the
request waits here in arrival order; the queue length is exported as
`tandem_router_queue_depth{role}`, which the autoscaler reads as pending prefills.

The selection itself is delegated to the pure functions in `pick.py`; this module only turns live
state into `Candidate` snapshots and applies the result.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from urllib.parse import urlsplit

from tandem.api.vocabulary import Role
from tandem.router.pick import Candidate, PickRequest, Policy, pick

log = logging.getLogger(__name__)


class HealthState(StrEnum):
    """Health as last observed; UNKNOWN until the first probe answers."""

    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class NoEndpointError(Exception):
    """No healthy endpoint exists for a role, so queueing would only wait for the timeout."""

    def __init__(self, role: Role) -> None:
        super().__init__(f"no healthy {role.value} endpoint")
        self.role = role


@dataclass(eq=False)
class Endpoint:
    """One engine's base URL plus what the router knows about it."""

    url: str
    role: Role
    state: HealthState = HealthState.UNKNOWN
    inflight: int = 0
    inflight_tokens: int = 0
    engine_waiting: float | None = None
    engine_running: float | None = None
    #: `time.monotonic()` of the engine's last good answer to a request (busy is not dead).
    last_ok: float = float("-inf")

    @property
    def host(self) -> str:
        """The host part of the URL (LMCache's `receiver_host` for a decoder)."""
        return urlsplit(self.url).hostname or ""

    def candidate(self, capacity: int) -> Candidate:
        """An immutable snapshot for the picker."""
        return Candidate(
            key=self.url,
            healthy=self.state is HealthState.HEALTHY,
            inflight=self.inflight,
            inflight_tokens=self.inflight_tokens,
            capacity=capacity,
            engine_waiting=self.engine_waiting,
            engine_running=self.engine_running,
        )


class Lease:
    """One request's claim on one endpoint; release exactly once (also usable as a context)."""

    __slots__ = ("_pool", "_released", "endpoint", "tokens")

    def __init__(self, pool: EndpointPool, endpoint: Endpoint, tokens: int) -> None:
        self._pool = pool
        self.endpoint = endpoint
        self.tokens = tokens
        self._released = False

    def release(self) -> None:
        """Give the slot back; later calls do nothing."""
        if not self._released:
            self._released = True
            self._pool._release(self)

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


@dataclass(eq=False)
class _Waiter:
    policy: Policy
    tokens: int
    prefix_hash: str | None
    allowed: frozenset[str] | None
    future: asyncio.Future[Lease]


@dataclass(eq=False)
class EndpointPool:
    """All endpoints of one role and the requests waiting for a slot on one of them."""

    role: Role
    max_inflight: int
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    #: Called with newly added endpoints (the prober probes them at once).
    on_added: Callable[[list[Endpoint]], None] | None = None
    #: Called with an endpoint whose health state changed, and its previous state.
    on_health: Callable[[Endpoint, HealthState], None] | None = None
    _waiters: deque[_Waiter] = field(default_factory=deque)
    _sequence: int = 0

    # --- membership and health ------------------------------------------------------------

    def set_urls(self, urls: Iterable[str]) -> None:
        """Replace the membership; in-flight leases on removed endpoints finish normally."""
        wanted = {u.rstrip("/") for u in urls}
        added = [Endpoint(url=u, role=self.role) for u in sorted(wanted - self.endpoints.keys())]
        removed = sorted(self.endpoints.keys() - wanted)
        for url in removed:
            del self.endpoints[url]
        for ep in added:
            self.endpoints[ep.url] = ep
        if added or removed:
            log.info(
                "Updated endpoints",
                extra={
                    "role": self.role.value,
                    "added": [e.url for e in added],
                    "removed": removed,
                },
            )
        if added and self.on_added is not None:
            self.on_added(added)
        self._dispatch()

    def set_health(self, url: str, healthy: bool) -> None:
        """Record a probe result (or a passive failure)."""
        ep = self.endpoints.get(url)
        if ep is None:
            return
        new = HealthState.HEALTHY if healthy else HealthState.UNHEALTHY
        old = ep.state
        if old is not new:
            log.info(
                "Changed endpoint health",
                extra={"role": self.role.value, "endpoint": url, "state": new.value},
            )
            ep.state = new
            if self.on_health is not None:
                self.on_health(ep, old)
        self._dispatch()

    def mark_alive(self, url: str, now: float) -> None:
        """The engine just answered a request well (a slow /health must not eject it)."""
        ep = self.endpoints.get(url)
        if ep is not None:
            ep.last_ok = now

    def set_engine_load(self, url: str, waiting: float | None, running: float | None) -> None:
        """Record the engine's own queue/running counts from its /metrics."""
        ep = self.endpoints.get(url)
        if ep is not None:
            ep.engine_waiting, ep.engine_running = waiting, running

    def count(self, state: HealthState) -> int:
        """How many endpoints are in `state`."""
        return sum(1 for ep in self.endpoints.values() if ep.state is state)

    @property
    def healthy_count(self) -> int:
        """Endpoints that may be picked."""
        return self.count(HealthState.HEALTHY)

    def healthy_urls(self) -> list[str]:
        """The URLs of the endpoints that may be picked."""
        return [url for url, ep in self.endpoints.items() if ep.state is HealthState.HEALTHY]

    def _any_healthy(self, allowed: frozenset[str] | None) -> bool:
        if allowed is None:
            return self.healthy_count > 0
        return any(
            ep.state is HealthState.HEALTHY for url, ep in self.endpoints.items() if url in allowed
        )

    @property
    def queue_depth(self) -> int:
        """Requests waiting in the router for a slot in this pool."""
        return sum(1 for w in self._waiters if not w.future.done())

    # --- picking --------------------------------------------------------------------------

    def _next_request(
        self, tokens: int, prefix_hash: str | None, allowed: frozenset[str] | None = None
    ) -> PickRequest:
        self._sequence += 1
        return PickRequest(
            prompt_tokens=tokens, prefix_hash=prefix_hash, sequence=self._sequence, allowed=allowed
        )

    def choose(self, policy: Policy, prefix_hash: str | None = None) -> Endpoint | None:
        """Pick an endpoint without taking a slot (for cheap side calls such as /tokenize)."""
        cands = [ep.candidate(capacity=1 << 30) for ep in self.endpoints.values()]
        chosen = pick(policy, cands, self._next_request(0, prefix_hash))
        return None if chosen is None else self.endpoints[chosen.key]

    def _try_lease(
        self,
        policy: Policy,
        tokens: int,
        prefix_hash: str | None,
        allowed: frozenset[str] | None = None,
    ) -> Lease | None:
        cands = [ep.candidate(self.max_inflight) for ep in self.endpoints.values()]
        chosen = pick(policy, cands, self._next_request(tokens, prefix_hash, allowed))
        if chosen is None:
            return None
        ep = self.endpoints[chosen.key]
        ep.inflight += 1
        ep.inflight_tokens += tokens
        return Lease(self, ep, tokens)

    async def acquire(
        self,
        policy: Policy,
        tokens: int,
        prefix_hash: str | None = None,
        *,
        allowed: frozenset[str] | None = None,
    ) -> Lease:
        """A slot on an endpoint chosen by `policy` (among `allowed`, when given), waiting in
        FIFO order when all are full.

        Raises NoEndpointError at once (or while waiting) when no allowed endpoint is healthy.
        Cancelling the caller removes it from the queue.
        """
        if not self._waiters:
            lease = self._try_lease(policy, tokens, prefix_hash, allowed)
            if lease is not None:
                return lease
        if not self._any_healthy(allowed):
            raise NoEndpointError(self.role)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(policy, tokens, prefix_hash, allowed, loop.create_future())
        self._waiters.append(waiter)
        try:
            return await waiter.future
        except BaseException:
            fut = waiter.future
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                fut.result().release()  # granted and cancelled in the same tick
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def _release(self, lease: Lease) -> None:
        ep = lease.endpoint
        ep.inflight -= 1
        ep.inflight_tokens -= lease.tokens
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand free slots to queued requests, oldest first; fail them all if none can run."""
        while self._waiters:
            head = self._waiters[0]
            if head.future.done():
                self._waiters.popleft()
                continue
            if not self._any_healthy(head.allowed):  # its endpoints left or went down
                self._waiters.popleft()
                head.future.set_exception(NoEndpointError(self.role))
                continue
            lease = self._try_lease(head.policy, head.tokens, head.prefix_hash, head.allowed)
            if lease is None:
                break
            self._waiters.popleft()
            head.future.set_result(lease)
        if self._waiters and self.healthy_count == 0:
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.future.done():
                    waiter.future.set_exception(NoEndpointError(self.role))
