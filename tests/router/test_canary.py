"""Canary hand-offs and pair states, end to end against fake engines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AsyncExitStack

import aiohttp
import pytest

from tandem.api.vocabulary import Role
from tandem.router.app import Router
from tandem.router.metrics import endpoint_label
from tandem.router.pairs import HandoffOutcome, Pair, PairState
from tests.fake_engine import FakeEngine, KvFabric
from tests.router.harness import MODEL, cluster, make_config, wait_pairs, wait_ready

pytestmark = pytest.mark.timeout(15)

PROMPT = "A prompt long enough to be disaggregated. " * 3
BODY = {"model": MODEL, "prompt": PROMPT, "max_tokens": 4}


async def wait_canary(
    router: Router, pair: Pair, outcome: HandoffOutcome, timeout: float = 5.0
) -> None:
    """Poll until `pair` had a canary with `outcome`."""
    deadline = time.monotonic() + timeout
    while not router.pairs.pairs[pair].canaries.get(outcome):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {outcome} canary: {router.pairs.pairs[pair]}")
        await asyncio.sleep(0.01)


def pair_labels(prefill: FakeEngine, decode: FakeEngine, outcome: str | None = None) -> str:
    """The label set as Prometheus writes it (sorted by name)."""
    middle = "" if outcome is None else f',outcome="{outcome}"'
    return f'decode="{endpoint_label(decode.url)}"{middle},prefill="{endpoint_label(prefill.url)}"'


async def test_a_degraded_lmcache_prefiller_is_caught_by_its_first_canary() -> None:
    """Review A5: an engine whose LMCache connector failed serves and answers /health 200 but
    never pushes KV. The old router sent it every request; each waited --kv-ready-timeout and
    got a 503. Now one canary keeps the pair out of rotation and the router unready."""
    async with cluster(
        protocol="lmcache", wait=False, prefill_faults={"degraded": True}, kv_ready_timeout=0.2
    ) as c:
        p, d = c.prefill[0], c.decode[0]
        await wait_canary(c.router, (p.url, d.url), HandoffOutcome.KV_TIMEOUT)
        async with c.http.get(c.url + "/health") as resp:
            assert resp.status == 503
            health = await resp.json()
        assert health["reason"] == "no pair of healthy engines has passed its canary hand-off"
        assert health["pairs"] == {"unverified": 1, "verified": 0, "broken": 0}
        async with c.http.post(c.url + "/v1/completions", json=BODY) as resp:
            assert resp.status == 503
            assert (await resp.json())["error"]["type"] == "prefill_unavailable"
        assert p.completion_requests() == []  # no traffic reached the degraded engine
        assert len(p.canary_requests) >= 1
        text = await c.metrics_text()
        assert f"tandem_router_canaries_total{{{pair_labels(p, d, 'kv_timeout')}}}" in text
        assert 'tandem_router_pairs{state="unverified"} 1.0' in text


async def test_a_decoder_that_loads_no_kv_fails_its_canary_and_decode_only_serves() -> None:
    """NIXL with kv_load_failure_policy=recompute answers correctly while moving nothing; only
    the decoder's external_kv_transfer counter tells. With `decode-only` the router stays
    ready and serves decode-only, counted."""
    async with cluster(
        wait=False, decode_faults={"degraded": True}, on_prefill_failure="decode-only"
    ) as c:
        p, d = c.prefill[0], c.decode[0]
        await wait_canary(c.router, (p.url, d.url), HandoffOutcome.NO_KV_TRANSFER)
        await wait_ready(c.http, c.url)  # the pair gate is waived: everything is served
        async with c.http.post(c.url + "/v1/completions", json=BODY) as resp:
            assert resp.status == 200
        assert p.completion_requests() == []
        [decode] = d.completion_requests()
        assert "kv_transfer_params" not in decode.body
        text = await c.metrics_text()
        none = 'decode="none",outcome="decode_only_fallback",prefill="none"'
        assert f"tandem_router_handoffs_total{{{none}}} 1.0" in text
        assert 'tandem_router_prefill_fallbacks_total{reason="no_verified_pair"} 1.0' in text
        assert pair_labels(p, d, "no_kv_transfer") in text


async def test_traffic_uses_only_the_pair_whose_canary_passed() -> None:
    async with cluster(
        protocol="lmcache",
        prefill=2,
        wait=False,
        prefill_faults=[{}, {"degraded": True}],
        kv_ready_timeout=0.2,
    ) as c:
        good, bad = c.prefill
        d = c.decode[0]
        await wait_canary(c.router, (bad.url, d.url), HandoffOutcome.KV_TIMEOUT)
        await wait_pairs(c.router, PairState.VERIFIED, 1)
        for i in range(4):
            body = {**BODY, "prompt": f"{i} {PROMPT}"}
            assert (await c.post("/v1/completions", body)).status == 200
        assert len(good.completion_requests()) == 4
        assert bad.completion_requests() == []
        text = await c.metrics_text()
        assert f"tandem_router_handoffs_total{{{pair_labels(good, d, 'ok')}}} 4.0" in text


async def test_a_broken_pair_leaves_rotation_and_returns_after_a_canary() -> None:
    async with cluster(pair_retry_seconds=0.2) as c:
        p, d = c.prefill[0], c.decode[0]
        p.faults.status = 500
        for _ in range(3):
            assert (await c.post("/v1/completions", BODY)).status == 503
        assert c.router.pairs.broken() == [(p.url, d.url)]
        text = await c.metrics_text()
        assert f"tandem_router_pair_broken{{{pair_labels(p, d)}}} 1.0" in text
        outcome = pair_labels(p, d, "prefill_failed")
        assert f"tandem_router_handoffs_total{{{outcome}}} 3.0" in text
        assert (await c.post("/v1/completions", BODY)).status == 503
        assert len(p.completion_requests()) == 3  # broken: not even tried
        p.faults.status = None
        await wait_pairs(c.router, PairState.VERIFIED, 1)  # re-canaried after 0.2 s
        assert (await c.post("/v1/completions", BODY)).status == 200
        assert 'tandem_router_pairs{state="broken"} 0.0' in await c.metrics_text()


async def test_canaries_can_be_switched_off() -> None:
    async with cluster(canary=False) as c:
        assert (await c.post("/v1/completions", BODY)).status == 200
        assert c.prefill[0].canary_requests == [] and c.decode[0].canary_requests == []
        assert c.router.pairs.state_counts()[PairState.UNVERIFIED] == 1


class FakeDiscovery:
    """Stands in for the EndpointSlice watch: the test calls `apply` itself."""

    def __init__(self, prefill: list[str], decode: list[str]) -> None:
        self.initial = {Role.PREFILL: prefill, Role.DECODE: decode}
        self.apply: Callable[[Role, list[str]], None] | None = None

    async def start(self, apply: Callable[[Role, list[str]], None]) -> None:
        self.apply = apply
        for role, urls in self.initial.items():
            apply(role, urls)

    async def stop(self) -> None:
        pass


async def test_discovered_endpoints_are_canaried_and_departed_ones_forgotten() -> None:
    kv = KvFabric()
    async with AsyncExitStack() as stack:
        p1, p2 = [
            await stack.enter_async_context(FakeEngine(role="prefill", model=MODEL, kv=kv))
            for _ in range(2)
        ]
        d = await stack.enter_async_context(FakeEngine(role="decode", model=MODEL, kv=kv))
        discovery = FakeDiscovery([p1.url], [d.url])
        router = await stack.enter_async_context(
            Router(make_config(health_interval=0.2), discovery=discovery)
        )
        http = await stack.enter_async_context(aiohttp.ClientSession())
        await wait_pairs(router, PairState.VERIFIED, 1)
        assert discovery.apply is not None
        discovery.apply(Role.PREFILL, [p1.url, p2.url])
        await wait_pairs(router, PairState.VERIFIED, 2)
        assert len(p2.canary_requests) == 1
        async with http.get(router.url + "/metrics") as resp:
            assert endpoint_label(p1.url) in await resp.text()
        discovery.apply(Role.PREFILL, [p2.url])
        async with http.get(router.url + "/metrics") as resp:
            text = await resp.text()
        assert endpoint_label(p1.url) not in text  # no series of an endpoint that left
        assert 'tandem_router_pairs{state="verified"} 1.0' in text
