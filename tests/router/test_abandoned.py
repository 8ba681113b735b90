"""LMCache hand-offs the router gives up on after the prefiller pushed: counted and drained.

The fake engines share a `KvFabric`: a pushed prompt stays in it until a decoder retrieves it,
as it stays in LMCache's PD buffer (review A3). `c.kv.lmcache == {}` means nothing leaked.
"""

from __future__ import annotations

import pytest

from tandem.router.app import Router
from tests.fake_engine import expected_text, tokenize
from tests.router.harness import MODEL, cluster

pytestmark = pytest.mark.timeout(15)

PROMPT = "Disaggregated prefill moves the KV cache. " * 3
BODY = {"model": MODEL, "prompt": PROMPT, "max_tokens": 4}


def sample(router: Router, name: str, **labels: str) -> float:
    return router.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_kv_that_arrives_after_the_timeout_is_drained_from_the_decoder() -> None:
    """The old router fell back and left the late KV in the decoder's buffer for good."""
    async with cluster(
        protocol="lmcache", kv_ready_timeout=0.2, on_prefill_failure="decode-only"
    ) as c:
        c.prefill[0].faults.notify_delay = 0.3
        async with c.http.post(c.url + "/v1/completions", json=BODY) as resp:
            assert resp.status == 200  # served decode-only
        decoder = c.decode[0]
        await decoder.wait_for(lambda: c.kv.lmcache == {} and decoder.drain_requests)
        [drain] = decoder.drain_requests
        assert drain.body["prompt"] == tokenize(PROMPT)  # the decoder looks up all of it
        assert drain.body["max_tokens"] == 1 and drain.body["stream"] is False
        await decoder.wait_for(
            lambda: sample(c.router, "tandem_router_kv_drains_total", result="ok") == 1
        )
        name = "tandem_router_abandoned_handoffs_total"
        assert sample(c.router, name, reason="kv_timeout") == 1


async def test_a_prefill_token_that_is_eos_does_not_end_the_answer() -> None:
    """The old router answered from the prefiller's EOS alone and abandoned the pushed KV
    (review A3a). The prefiller's token is thrown away now: the decoder samples every token,
    so it consumes the KV and decides itself where the answer ends."""
    async with cluster(protocol="lmcache") as c:
        c.prefill[0].faults.stop = True  # the prefiller's one token is EOS
        async with c.http.post(c.url + "/v1/completions", json=BODY) as resp:
            answer = await resp.json()
        assert answer["choices"][0]["finish_reason"] == "length"
        assert answer["choices"][0]["text"] == expected_text(len(PROMPT), 4)
        assert len(c.decode[0].completion_requests()) == 1
        assert c.kv.lmcache == {}
        assert c.decode[0].drain_requests == []
        assert "tandem_router_abandoned_handoffs_total{" not in await c.metrics_text()


async def test_a_failed_decode_leg_is_counted_and_its_drain_too() -> None:
    async with cluster(protocol="lmcache") as c:
        c.decode[0].faults.status = 500
        assert (await c.post("/v1/completions", BODY)).status == 502
        router = c.router
        await c.decode[0].wait_for(
            lambda: sample(router, "tandem_router_kv_drains_total", result="failed") == 1
        )
        assert sample(router, "tandem_router_abandoned_handoffs_total", reason="decode_failed") == 1
        assert len(c.kv.lmcache) == 1  # the decoder is failing: the drain could not free it
        text = await c.metrics_text()
        assert 'outcome="decode_failed"' in text


async def test_a_completed_hand_off_is_not_abandoned() -> None:
    async with cluster(protocol="lmcache") as c:
        assert (await c.post("/v1/completions", BODY)).status == 200
        assert c.kv.lmcache == {}
        assert c.decode[0].drain_requests == []
        assert "tandem_router_abandoned_handoffs_total{" not in await c.metrics_text()


@pytest.mark.parametrize("flag", [None, 2])
async def test_the_router_waits_for_every_sender_rank(flag: int | None) -> None:
    """A TP1 x PP2 prefiller notifies once per rank; the KV is complete after the last one.
    Counting `len(--decoder-init-ports)` (1) sends the decode leg too early: the decoder
    finds nothing and recomputes, which the canary sees."""
    async with cluster(
        protocol="lmcache",
        prefill_pp=2,
        prefill_faults={"rank_delay": 0.1},
        kv_ready_notifications=flag,
        wait=flag is not None,
    ) as c:
        pair = (c.prefill[0].url, c.decode[0].url)
        if flag is None:
            await c.decode[0].wait_for(lambda: c.router.pairs.pairs[pair].canaries)
            [outcome] = c.router.pairs.pairs[pair].canaries
            assert outcome == "no_kv_transfer"
            return
        by_source = c.decode[0].metrics.prompt_tokens_by_source
        before = by_source["external_kv_transfer"]
        assert (await c.post("/v1/completions", BODY)).status == 200
        # Every prompt token but the last, which the decoder recomputes (`recalc_last`).
        assert by_source["external_kv_transfer"] - before == len(PROMPT) - 1
