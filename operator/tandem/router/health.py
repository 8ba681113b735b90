"""Active health checks (`GET /health`) and optional load scraping (`GET /metrics`) of engines.

vLLM answers `/health` 200, or 503 once its engine died (dataplane.md §7); a refused connection
means the server is not up (yet). Every `--health-interval` each endpoint is probed, and those
that are down are re-probed every second in between; endpoints that discovery just added are
probed at once, so a new pod takes traffic within milliseconds of being reported ready. Requests
also mark an engine unhealthy when a connection to it is refused (passive check), and the next
good probe (at most a second later) restores it.

Busy is not dead: a probe that times out does not count against an engine that answered a
request within the last `alive_window` seconds
(`FAILURES_TO_EJECT` probe periods): an engine whose event loop is busy with long prefills can
miss its /health deadline while it serves perfectly well. Only a refused connection or a 503
(EngineDeadError) ejects such an engine at once.

With `--metrics-refresh-seconds S > 0`, the engines' waiting/running gauges are scraped every S
seconds and blended into the least-loaded score (see `pick.request_load`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping

import aiohttp

from tandem.api.vocabulary import Role
from tandem.router.endpoints import Endpoint, EndpointPool, HealthState
from tandem.router.enginemetrics import parse_engine_load
from tandem.router.upstream import get_status, get_text

log = logging.getLogger(__name__)

#: How often endpoints that are down (or not yet probed successfully) are re-probed.
UNHEALTHY_RECHECK_SECONDS = 1.0
# A busy engine can miss one probe's deadline (a long prefill holds its event loop on a small
# machine); only this many failures in a row take a serving engine out of rotation. A refused
# connection or a 503 (EngineDeadError) is definitive and counts at once.
FAILURES_TO_EJECT = 3
#: The shortest probe deadline (the deadline is the interval, capped at 5 s).
PROBE_TIMEOUT_FLOOR = 2.0


class HealthProber:
    """Background tasks that keep `Endpoint.state` and the engine load current."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        pools: Mapping[Role, EndpointPool],
        interval: float,
        metrics_refresh: float = 0.0,
        *,
        probe_timeout: float | None = None,
    ) -> None:
        self._session = session
        self._pools = pools
        self._interval = interval
        self._metrics_refresh = metrics_refresh
        floor = PROBE_TIMEOUT_FLOOR
        self._timeout = probe_timeout or max(floor, min(interval, 5.0))
        #: An engine that answered a request this recently is alive, whatever /health says.
        self.alive_window = FAILURES_TO_EJECT * (interval + self._timeout)
        self._failures: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._probing: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Start the periodic loops."""
        self._tasks.append(asyncio.create_task(self._health_loop(), name="health-probe"))
        if self._metrics_refresh > 0:
            self._tasks.append(asyncio.create_task(self._metrics_loop(), name="engine-metrics"))

    async def stop(self) -> None:
        """Cancel the loops and any probe in flight."""
        tasks = [*self._tasks, *self._probing]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def probe_soon(self, endpoints: Iterable[Endpoint]) -> None:
        """Probe these endpoints now (called by a pool when discovery adds endpoints)."""
        for ep in endpoints:
            task = asyncio.create_task(self._probe(ep))
            self._probing.add(task)
            task.add_done_callback(self._probing.discard)

    async def probe_all(self) -> None:
        """Probe every endpoint of every pool once, concurrently."""
        eps = [ep for pool in self._pools.values() for ep in list(pool.endpoints.values())]
        await asyncio.gather(*(self._probe(ep) for ep in eps))

    async def _probe(self, ep: Endpoint) -> None:
        definitive = slow = False
        try:
            status = await get_status(self._session, ep.url + "/health", self._timeout)
            healthy, definitive = status == 200, status == 503
        except (aiohttp.ClientConnectorError, ConnectionRefusedError):
            healthy, definitive = False, True
        except TimeoutError:  # aiohttp's ServerTimeoutError included
            healthy, slow = False, True
        except (aiohttp.ClientError, OSError):
            healthy = False
        if healthy:
            self._failures.pop(ep.url, None)
        elif ep.state is HealthState.HEALTHY and not definitive:
            if slow and time.monotonic() - ep.last_ok < self.alive_window:
                return  # busy, not dead: it is answering requests
            self._failures[ep.url] = self._failures.get(ep.url, 0) + 1
            if self._failures[ep.url] < FAILURES_TO_EJECT:
                return
        self._pools[ep.role].set_health(ep.url, healthy)

    async def _health_loop(self) -> None:
        """Probe everything every interval, and endpoints that are not healthy every second
        in between, so an engine that finishes loading takes traffic within about a second."""
        tick = min(self._interval, UNHEALTHY_RECHECK_SECONDS)
        loop = asyncio.get_running_loop()
        next_full = loop.time()
        while True:
            if loop.time() >= next_full:
                next_full = loop.time() + self._interval
                await self.probe_all()
            else:
                await asyncio.gather(
                    *(
                        self._probe(ep)
                        for pool in self._pools.values()
                        for ep in list(pool.endpoints.values())
                        if ep.state is not HealthState.HEALTHY
                    )
                )
            await asyncio.sleep(tick)

    async def _scrape(self, ep: Endpoint) -> None:
        try:
            text = await get_text(self._session, ep.url + "/metrics", self._timeout)
        except (aiohttp.ClientError, OSError, TimeoutError):
            text = None
        load = parse_engine_load(text) if text is not None else None
        # Stale numbers are worse than none: forget them when a scrape fails.
        self._pools[ep.role].set_engine_load(
            ep.url, load.waiting if load else None, load.running if load else None
        )

    async def _metrics_loop(self) -> None:
        while True:
            eps = [ep for pool in self._pools.values() for ep in list(pool.endpoints.values())]
            await asyncio.gather(*(self._scrape(ep) for ep in eps))
            await asyncio.sleep(self._metrics_refresh)
