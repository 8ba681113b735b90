"""The NIXL hand-off end to end: router in front of fake prefill and decode engines."""

from __future__ import annotations

import asyncio
import json

import pytest

from tandem.api.vocabulary import Role
from tandem.router.metrics import endpoint_label
from tests.fake_engine import expected_text
from tests.router.harness import MODEL, cluster, sse_payloads

pytestmark = pytest.mark.timeout(15)

PROMPT = "The quick brown fox jumps over the lazy dog. " * 4
BODY = {"model": MODEL, "prompt": PROMPT, "max_tokens": 4}


async def test_completion_runs_prefill_then_decode_with_kv_params_verbatim() -> None:
    async with cluster() as c:
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 5, "temperature": 0}
        by_source = c.decode[0].metrics.prompt_tokens_by_source
        before = dict(by_source)  # the pair's canary already moved some KV
        async with c.http.post(c.url + "/v1/completions", json=body) as resp:
            assert resp.status == 200
            answer = await resp.json()
        assert answer["choices"][0]["text"] == expected_text(len(PROMPT), 5)

        [prefill] = c.prefill[0].completion_requests()
        [decode] = c.decode[0].completion_requests()
        assert prefill.body["max_tokens"] == 1 and prefill.body["stream"] is False
        assert prefill.body["kv_transfer_params"]["do_remote_decode"] is True
        assert decode.body["max_tokens"] == 5 and decode.body["temperature"] == 0
        kv = decode.body["kv_transfer_params"]
        assert kv["remote_engine_id"] == c.prefill[0].engine_id
        assert kv["do_remote_prefill"] is True and kv["transfer_mode"] == "pull"
        assert prefill.headers["X-Request-Id"] == decode.headers["X-Request-Id"]
        # The decoder "received" the prompt's KV instead of computing it.
        assert by_source["external_kv_transfer"] - before["external_kv_transfer"] == len(PROMPT)
        assert by_source["local_compute"] == before["local_compute"]


async def test_streamed_completion_is_relayed_and_prefill_never_streams() -> None:
    async with cluster() as c:
        body = {
            "model": MODEL,
            "prompt": PROMPT,
            "max_tokens": 6,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        async with c.http.post(c.url + "/v1/completions", json=body) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            events = sse_payloads(await resp.read())
        assert events[-1] == "[DONE]"
        text = "".join(e["choices"][0]["text"] for e in events[:-1] if e["choices"])
        assert text == expected_text(len(PROMPT), 6)
        assert events[-2]["usage"]["completion_tokens"] == 6
        [prefill] = c.prefill[0].completion_requests()
        assert prefill.body["stream"] is False and "stream_options" not in prefill.body
        [decode] = c.decode[0].completion_requests()
        assert decode.body["stream"] is True and decode.body["stream_options"]


@pytest.mark.parametrize("stream", [False, True])
async def test_chat_completion_uses_the_chat_endpoint_on_both_legs(stream: bool) -> None:
    async with cluster() as c:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_completion_tokens": 4,
            "stream": stream,
        }
        async with c.http.post(c.url + "/v1/chat/completions", json=body) as resp:
            assert resp.status == 200
            raw = await resp.read()
        if stream:
            events = sse_payloads(raw)
            assert events[0]["object"] == "chat.completion.chunk"
            content = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
        else:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        assert len(content) == 4
        [prefill] = c.prefill[0].completion_requests()
        assert prefill.path == "/v1/chat/completions"
        assert prefill.body["max_completion_tokens"] == 1 and prefill.body["max_tokens"] == 1
        [decode] = c.decode[0].completion_requests()
        assert decode.path == "/v1/chat/completions"
        assert decode.body["max_completion_tokens"] == 4


async def test_short_prompts_go_straight_to_decode() -> None:
    async with cluster(min_prompt_tokens=100) as c:
        short = {"model": MODEL, "prompt": "x" * 40, "max_tokens": 3}  # ~10 tokens
        long = {"model": MODEL, "prompt": "y" * 800, "max_tokens": 3}  # ~200 tokens
        assert (await c.post("/v1/completions", short)).status == 200
        assert c.prefill[0].completion_requests() == []
        [decode] = c.decode[0].completion_requests()
        assert "kv_transfer_params" not in decode.body
        assert (await c.post("/v1/completions", long)).status == 200
        assert len(c.prefill[0].completion_requests()) == 1
        text = await c.metrics_text()
        assert 'tandem_router_requests_total{outcome="success",route="decode_only"} 1.0' in text
        assert 'tandem_router_requests_total{outcome="success",route="disaggregated"} 1.0' in text


async def test_batched_prompts_are_not_disaggregated() -> None:
    async with cluster() as c:
        body = {"model": MODEL, "prompt": ["one", "two"], "max_tokens": 2}
        resp = await c.post("/v1/completions", body)
        assert resp.status in (200, 400)  # the fake rejects batches; the router passes it on
        assert c.prefill[0].completion_requests() == []


async def test_fifty_concurrent_requests_spread_over_engines() -> None:
    async with cluster(prefill=2, decode=2) as c:
        for e in c.prefill + c.decode:
            e.faults.delay = 0.02  # keep requests overlapping

        async def one(i: int) -> str:
            body = {"model": MODEL, "prompt": f"{i:03d} " + PROMPT, "max_tokens": 3}
            async with c.http.post(c.url + "/v1/completions", json=body) as resp:
                assert resp.status == 200
                return str((await resp.json())["choices"][0]["text"])

        texts = await asyncio.gather(*(one(i) for i in range(50)))
        assert texts == [expected_text(len(PROMPT) + 4, 3)] * 50
        per_prefill = [len(e.completion_requests()) for e in c.prefill]
        per_decode = [len(e.completion_requests()) for e in c.decode]
        assert sum(per_prefill) == sum(per_decode) == 50
        assert min(per_prefill) >= 15 and min(per_decode) >= 15
        for pool in c.router.pools.values():
            assert all(ep.inflight == 0 for ep in pool.endpoints.values())


async def test_round_robin_alternates_engines() -> None:
    async with cluster(prefill=2, decode=2, policy="round-robin") as c:
        for _ in range(4):
            body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 2}
            assert (await c.post("/v1/completions", body)).status == 200
        assert [len(e.completion_requests()) for e in c.prefill] == [2, 2]
        assert [len(e.completion_requests()) for e in c.decode] == [2, 2]


async def test_prefix_aware_keeps_a_prefix_on_one_prefiller() -> None:
    async with cluster(prefill=3, decode=1, policy="prefix-aware") as c:
        system = "You are a meticulous assistant. " * 20
        for i in range(6):
            body = {"model": MODEL, "prompt": system + f"question {i}", "max_tokens": 2}
            assert (await c.post("/v1/completions", body)).status == 200
        counts = sorted(len(e.completion_requests()) for e in c.prefill)
        assert counts == [0, 0, 6]


async def test_engine_metrics_steer_least_loaded_away_from_a_busy_engine() -> None:
    async with cluster(decode=2, metrics_refresh_seconds=0.05) as c:
        busy, idle = c.decode
        busy.metrics.waiting = 50.0  # e.g. another router replica's traffic

        def scraped() -> bool:
            return c.router.pools[Role.DECODE].endpoints[busy.url].engine_waiting == 50.0

        await busy.wait_for(scraped)
        for _ in range(4):
            body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 1}
            assert (await c.post("/v1/completions", body)).status == 200
        assert len(busy.completion_requests()) == 0
        assert len(idle.completion_requests()) == 4


async def test_engine_4xx_is_passed_through() -> None:
    async with cluster() as c:
        body = {"model": "no-such-model", "prompt": PROMPT, "max_tokens": 2}
        async with c.http.post(c.url + "/v1/completions", json=body) as resp:
            assert resp.status == 404
            answer = await resp.json()
        assert "does not exist" in answer["error"]["message"]
        assert c.decode[0].completion_requests() == []
        text = await c.metrics_text()
        assert 'outcome="client_error"' in text


async def test_invalid_json_is_a_400_from_the_router() -> None:
    async with cluster() as c:
        async with c.http.post(c.url + "/v1/completions", data=b"{not json") as resp:
            assert resp.status == 400
            error = (await resp.json())["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == 400


async def test_client_request_ids_are_kept_but_made_unique() -> None:
    async with cluster() as c:
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 1}
        for _ in range(2):
            resp = await c.post("/v1/completions", body, headers={"X-Request-Id": "trace-7"})
            assert resp.status == 200
        ids = [r.headers["X-Request-Id"] for r in c.decode[0].completion_requests()]
        assert all(i.startswith("trace-7-") for i in ids) and len(set(ids)) == 2


async def test_min_tokens_survive_on_the_decode_leg_only() -> None:
    async with cluster() as c:
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 6, "min_tokens": 4, "stream": True,
                "stream_options": {"include_usage": True}}  # fmt: skip
        assert (await c.post("/v1/completions", body)).status == 200
        [prefill] = c.prefill[0].completion_requests()
        [decode] = c.decode[0].completion_requests()
        assert "min_tokens" not in prefill.body and decode.body["min_tokens"] == 4


async def test_the_decode_slot_is_taken_before_the_prefill() -> None:
    """Review B4: the old router prefilled first and then queued for a decode slot, while the
    prefiller's KV lease (30 s in vLLM 0.32) ran out. Now a request waits before its prefill."""
    async with cluster(max_inflight_per_engine=1) as c:
        decoder = c.decode[0]
        decoder.faults.hang = True  # the first request holds the only decode slot
        decode_pool = c.router.pools[Role.DECODE]
        first = asyncio.create_task(c.post("/v1/completions", {**BODY, "max_tokens": 2}))
        await decoder.wait_for(lambda: len(decoder.completion_requests()) == 1)
        second = asyncio.create_task(c.post("/v1/completions", {**BODY, "max_tokens": 3}))
        await decoder.wait_for(lambda: decode_pool.queue_depth == 1)
        assert len(c.prefill[0].completion_requests()) == 1  # no KV held for the waiting one
        decoder.faults.hang = False
        first.cancel()  # the client goes away: its slot goes to the waiting request
        assert (await second).status == 200
        assert len(c.prefill[0].completion_requests()) == 2


async def test_handoff_time_runs_until_the_decoders_first_token() -> None:
    async with cluster() as c:
        c.decode[0].faults.token_delay = 0.2  # e.g. the KV pull before the first step
        body = {**BODY, "max_tokens": 2, "stream": True}
        assert (await c.post("/v1/completions", body)).status == 200
        assert (await c.post("/v1/completions", {**BODY, "max_tokens": 2})).status == 200
        registry = c.router.metrics.registry
        assert registry.get_sample_value("tandem_router_handoff_seconds_count") == 1.0
        assert (registry.get_sample_value("tandem_router_handoff_seconds_sum") or 0) >= 0.2
        pair = f'decode="{endpoint_label(c.decode[0].url)}",outcome="ok"'
        assert f'{pair},prefill="{endpoint_label(c.prefill[0].url)}"}} 2.0' in (
            await c.metrics_text()
        )
