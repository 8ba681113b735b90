"""Active health probes: a busy engine that misses a probe stays in rotation; a dead one leaves.

Also the two ways "busy" used to look like "dead" (issue 11 item 5): a slow /health from an
engine that is serving requests, and a pooled keep-alive connection the engine closed.
"""

from __future__ import annotations

import asyncio
import errno
import time

import aiohttp
import pytest
from aiohttp import web

from tandem.api.vocabulary import Role
from tandem.router import health
from tandem.router.endpoints import EndpointPool, HealthState
from tandem.router.health import FAILURES_TO_EJECT, HealthProber
from tandem.router.upstream import _stale_connection
from tests.router.harness import MODEL, cluster

pytestmark = pytest.mark.timeout(15)

PROBE_TIMEOUT = 0.1
BODY = {"model": MODEL, "prompt": "A prompt long enough to be disaggregated. " * 3, "max_tokens": 3}


async def serve(behaviour: dict[str, object]) -> tuple[web.AppRunner, str]:
    async def health(_: web.Request) -> web.Response:
        if behaviour["mode"] == "slow":
            await asyncio.sleep(0.3)
        return web.Response(status=int(behaviour.get("status", 200)))  # type: ignore[call-overload]

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def test_slow_probes_need_several_failures() -> None:
    behaviour: dict[str, object] = {"mode": "ok"}
    runner, url = await serve(behaviour)
    pool = EndpointPool(role=Role.PREFILL, max_inflight=4)
    pool.set_urls([url])
    async with aiohttp.ClientSession() as session:
        prober = HealthProber(
            session, {Role.PREFILL: pool}, interval=0.1, probe_timeout=PROBE_TIMEOUT
        )
        await prober.probe_all()
        assert pool.endpoints[url].state is HealthState.HEALTHY
        behaviour["mode"] = "slow"
        for _ in range(FAILURES_TO_EJECT - 1):
            await prober.probe_all()
            assert pool.endpoints[url].state is HealthState.HEALTHY
        await prober.probe_all()
        assert pool.endpoints[url].state is HealthState.UNHEALTHY
        behaviour["mode"] = "ok"
        await prober.probe_all()
        assert pool.endpoints[url].state is HealthState.HEALTHY
        behaviour["status"] = 503  # EngineDeadError: definitive at once
        await prober.probe_all()
        assert pool.endpoints[url].state is HealthState.UNHEALTHY
    await runner.cleanup()


async def test_a_slow_probe_never_ejects_an_engine_that_answers_requests() -> None:
    behaviour: dict[str, object] = {"mode": "ok"}
    runner, url = await serve(behaviour)
    pool = EndpointPool(role=Role.DECODE, max_inflight=4)
    pool.set_urls([url])
    async with aiohttp.ClientSession() as session:
        prober = HealthProber(
            session, {Role.DECODE: pool}, interval=0.1, probe_timeout=PROBE_TIMEOUT
        )
        await prober.probe_all()
        behaviour["mode"] = "slow"
        for _ in range(FAILURES_TO_EJECT + 2):
            pool.mark_alive(url, time.monotonic())  # a request just completed
            await prober.probe_all()
            assert pool.endpoints[url].state is HealthState.HEALTHY
        behaviour.update(mode="ok", status=500)  # a quick error is not "busy"
        for _ in range(FAILURES_TO_EJECT):
            await prober.probe_all()
        assert pool.endpoints[url].state is HealthState.UNHEALTHY
    await runner.cleanup()


async def test_a_serving_engine_with_a_slow_health_endpoint_keeps_its_traffic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The old router ejected it after three slow probes and answered 503 while it served."""
    monkeypatch.setattr(health, "PROBE_TIMEOUT_FLOOR", 0.05)
    async with cluster(health_interval=0.05) as c:
        decoder = c.decode[0]
        decoder.faults.health_delay = 1.0
        pool = c.router.pools[Role.DECODE]
        deadline = time.monotonic() + 0.5  # several probe periods
        while time.monotonic() < deadline:
            assert (await c.post("/v1/completions", BODY)).status == 200
            assert pool.endpoints[decoder.url].state is HealthState.HEALTHY
        await decoder.wait_for(lambda: pool.healthy_count == 0, timeout=3)  # idle: ejected


async def test_a_keep_alive_connection_the_engine_closed_is_retried_once() -> None:
    """The old router answered 503/502 when a pooled connection had died under it."""
    async with cluster() as c:
        assert (await c.post("/v1/completions", BODY)).status == 200  # pooled connections
        c.prefill[0].faults.drop_reused = 1
        c.decode[0].faults.drop_reused = 1
        assert (await c.post("/v1/completions", BODY)).status == 200
        assert c.prefill[0].connections_dropped == 1
        assert c.decode[0].connections_dropped == 1
        assert len(c.prefill[0].completion_requests()) == 2  # each request ran once


def test_only_connection_deaths_count_as_stale() -> None:
    assert _stale_connection(aiohttp.ServerDisconnectedError())
    assert _stale_connection(ConnectionResetError())
    reset = aiohttp.ClientOSError(errno.ECONNRESET, "Connection reset by peer")
    assert _stale_connection(reset)
    assert not _stale_connection(aiohttp.ClientOSError(errno.EHOSTUNREACH, "No route"))
    assert not _stale_connection(aiohttp.ClientPayloadError("truncated"))
