"""Active health probes: a busy engine that misses a probe stays in rotation; a dead one leaves."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from tandem.api.vocabulary import Role
from tandem.router.endpoints import EndpointPool, HealthState
from tandem.router.health import FAILURES_TO_EJECT, HealthProber

pytestmark = pytest.mark.timeout(30)


async def serve(behaviour: dict[str, object]) -> tuple[web.AppRunner, str]:
    async def health(_: web.Request) -> web.Response:
        if behaviour["mode"] == "slow":
            await asyncio.sleep(3)
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
        prober = HealthProber(session, {Role.PREFILL: pool}, interval=0.1)
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
