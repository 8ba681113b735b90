"""Failure behaviour: prefill fallbacks, decode errors, timeouts, cancellation, queueing."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from tandem.api.vocabulary import Role
from tandem.router.endpoints import HealthState
from tests.fake_engine import expected_text
from tests.router.harness import MODEL, cluster

pytestmark = pytest.mark.timeout(15)

PROMPT = "A prompt long enough to be disaggregated. " * 3
BODY = {"model": MODEL, "prompt": PROMPT, "max_tokens": 4}


async def error_of(resp: aiohttp.ClientResponse) -> dict[str, object]:
    error = (await resp.json())["error"]
    assert set(error) >= {"message", "type", "code"}
    assert error["code"] == resp.status
    return dict(error)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ({"status": 500}, "server_error"),
        ({"omit_kv_params": True}, "no_kv_params"),
    ],
)
async def test_prefill_failure_answers_503_by_default(
    fault: dict[str, object], reason: str
) -> None:
    async with cluster() as c:
        for key, value in fault.items():
            setattr(c.prefill[0].faults, key, value)
        async with c.http.post(c.url + "/v1/completions", json=BODY) as resp:
            assert resp.status == 503
            error = await error_of(resp)
        assert error["type"] == "prefill_unavailable"
        assert c.decode[0].completion_requests() == []
        text = await c.metrics_text()
        assert 'outcome="prefill_failed",route="disaggregated"' in text


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ({"status": 503}, "server_error"),
        ({"omit_kv_params": True}, "no_kv_params"),
    ],
)
async def test_prefill_failure_falls_back_to_decode_only(
    fault: dict[str, object], reason: str
) -> None:
    async with cluster(on_prefill_failure="decode-only") as c:
        for key, value in fault.items():
            setattr(c.prefill[0].faults, key, value)
        async with c.http.post(c.url + "/v1/completions", json=BODY) as resp:
            assert resp.status == 200
            assert (await resp.json())["choices"][0]["text"] == expected_text(len(PROMPT), 4)
        [decode] = c.decode[0].completion_requests()
        assert "kv_transfer_params" not in decode.body  # the original request, no KV
        text = await c.metrics_text()
        assert f'tandem_router_prefill_fallbacks_total{{reason="{reason}"}} 1.0' in text
        assert 'tandem_router_requests_total{outcome="success",route="fallback"} 1.0' in text


async def test_unreachable_prefiller_is_marked_unhealthy_and_skipped() -> None:
    async with cluster(prefill=2, on_prefill_failure="decode-only", health_interval=30) as c:
        dead, alive = c.prefill
        await dead.stop()
        for _ in range(4):
            assert (await c.post("/v1/completions", BODY)).status == 200
        pool = c.router.pools[Role.PREFILL]
        assert pool.endpoints[dead.url].state is HealthState.UNHEALTHY
        # At most the first request hit the dead engine; the rest were disaggregated on the other.
        assert len(alive.completion_requests()) >= 3


async def test_prefill_timeout_falls_back_and_cancels_the_prefill() -> None:
    async with cluster(on_prefill_failure="decode-only", prefill_timeout=0.3) as c:
        c.prefill[0].faults.hang = True
        async with c.http.post(c.url + "/v1/completions", json=BODY) as resp:
            assert resp.status == 200
        [prefill] = c.prefill[0].completion_requests()
        await c.prefill[0].wait_for(lambda: prefill.cancelled)
        text = await c.metrics_text()
        assert 'tandem_router_prefill_fallbacks_total{reason="timeout"} 1.0' in text


async def test_no_prefill_endpoint_at_all() -> None:
    async with cluster(wait=False) as c:
        c.prefill[0].faults.health_status = 503
        await asyncio.sleep(0.3)
        async with c.http.post(c.url + "/v1/completions", json=BODY) as resp:
            assert resp.status == 503
            assert "no healthy prefill" in str((await error_of(resp))["message"])


async def test_decode_server_error_is_502() -> None:
    async with cluster() as c:
        c.decode[0].faults.status = 500
        async with c.http.post(c.url + "/v1/completions", json=BODY) as resp:
            assert resp.status == 502
            error = await error_of(resp)
        assert error["type"] == "decode_failed" and "500" in str(error["message"])


async def test_unreachable_decoder_is_503() -> None:
    async with cluster(health_interval=30) as c:
        await c.decode[0].stop()
        async with c.http.post(c.url + "/v1/completions", json=BODY) as resp:
            assert resp.status == 503
            assert (await error_of(resp))["type"] == "decode_unavailable"
        assert c.router.pools[Role.DECODE].healthy_count == 0


async def test_decoder_breaking_mid_stream_ends_with_an_sse_error_event() -> None:
    async with cluster() as c:
        c.decode[0].faults.break_after_chunks = 2
        body = {**BODY, "max_tokens": 10, "stream": True}
        async with c.http.post(c.url + "/v1/completions", json=body) as resp:
            assert resp.status == 200
            raw = await resp.read()
        events = [e[len("data: ") :] for e in raw.decode().split("\n\n") if e.startswith("data: ")]
        assert events[-1] == "[DONE]"
        error = json.loads(events[-2])["error"]
        assert error["code"] == 502 and error["type"] == "decode_failed"
        assert len(events) == 4  # two relayed chunks, the error, [DONE]


async def test_request_timeout_is_504_and_cancels_the_engine_request() -> None:
    async with cluster(request_timeout=0.4) as c:
        c.decode[0].faults.hang = True
        async with c.http.post(c.url + "/v1/completions", json=BODY) as resp:
            assert resp.status == 504
            assert (await error_of(resp))["type"] == "timeout"
        [decode] = c.decode[0].completion_requests()
        await c.decode[0].wait_for(lambda: decode.cancelled)
        assert 'outcome="timeout"' in await c.metrics_text()


async def test_timeout_during_a_stream_ends_it_with_an_error_event() -> None:
    async with cluster(request_timeout=0.5) as c:
        c.decode[0].faults.token_delay = 0.2
        body = {**BODY, "max_tokens": 20, "stream": True}
        async with c.http.post(c.url + "/v1/completions", json=body) as resp:
            assert resp.status == 200
            raw = await resp.read()
        assert b'"code": 504' in raw and raw.endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize("stream", [True, False])
async def test_client_disconnect_cancels_the_engine_request(stream: bool) -> None:
    async with cluster() as c:
        engine = c.decode[0]
        if stream:
            engine.faults.token_delay = 0.2
        else:
            engine.faults.hang = True
        body = {**BODY, "max_tokens": 50, "stream": stream}
        request = asyncio.create_task(c.http.post(c.url + "/v1/completions", json=body))
        await engine.wait_for(lambda: bool(engine.completion_requests()))
        if stream:
            resp = await request
            await resp.content.readany()  # the stream is flowing
            resp.close()  # the client goes away
        else:
            await asyncio.sleep(0.05)
            request.cancel()
        [rec] = engine.completion_requests()
        await engine.wait_for(lambda: rec.cancelled)
        pool = c.router.pools[Role.DECODE]
        await engine.wait_for(lambda: pool.endpoints[engine.url].inflight == 0)
        assert 'outcome="cancelled"' in await c.metrics_text()


async def test_inflight_bound_queues_requests_in_arrival_order() -> None:
    async with cluster(max_inflight_per_engine=1) as c:
        c.decode[0].faults.delay = 0.1
        prefill_pool = c.router.pools[Role.PREFILL]
        decode_pool = c.router.pools[Role.DECODE]
        depths: list[int] = []

        async def watch() -> None:
            while True:
                depths.append(decode_pool.queue_depth)
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        tasks = []
        for i in range(4):
            body = {**BODY, "prompt": f"{i} " + PROMPT}
            tasks.append(asyncio.create_task(c.post("/v1/completions", body)))
            await asyncio.sleep(0.02)
        text_during = await c.metrics_text()
        results = await asyncio.gather(*tasks)
        watcher.cancel()
        assert [r.status for r in results] == [200] * 4
        assert max(depths) >= 2
        assert 'tandem_router_queue_depth{role="decode"}' in text_during
        order = [r.body["prompt"][0] for r in c.decode[0].completion_requests()]
        assert order == ["0", "1", "2", "3"]
        assert max(e.inflight for e in decode_pool.endpoints.values()) == 0
        assert prefill_pool.queue_depth == decode_pool.queue_depth == 0


async def test_prefill_queue_depth_is_exported_for_the_autoscaler() -> None:
    # The decode slot is taken before the prefill (NIXL lease ordering): with free decoders,
    # a slow prefiller is what requests wait for, and that is what the gauge shows.
    async with cluster(decode=3, max_inflight_per_engine=1) as c:
        c.prefill[0].faults.delay = 0.15
        tasks = [asyncio.create_task(c.post("/v1/completions", BODY)) for _ in range(3)]
        await c.prefill[0].wait_for(lambda: c.router.pools[Role.PREFILL].queue_depth == 2)
        text = await c.metrics_text()
        assert 'tandem_router_queue_depth{role="prefill"} 2.0' in text
        assert f'tandem_router_inflight{{endpoint="{c.prefill[0].url}",role="prefill"}} 1.0' in text
        await asyncio.gather(*tasks)
