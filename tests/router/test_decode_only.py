"""Requests that must not be split go decode-only before any prefill (items 3 and 5)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.router.harness import MODEL, cluster

pytestmark = pytest.mark.timeout(15)

PROMPT = "Describe the KV cache hand-off in one sentence. " * 3
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "schema": {"type": "object", "properties": {"text": {"type": "string"}}},
    },
}


@pytest.mark.parametrize("protocol", ["nixl", "lmcache"])
async def test_a_json_schema_request_answers_as_one_engine_would(protocol: str) -> None:
    """The first LMCache path dropped `response_format` and answered plain text, the next one
    sent such requests decode-only (review A9). Both decoders now sample every token with the
    whole request, so the hand-off is safe in both protocols."""
    async with cluster(protocol=protocol) as c:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_completion_tokens": 8,
            "response_format": SCHEMA,
        }
        async with c.http.post(c.url + "/v1/chat/completions", json=body) as resp:
            assert resp.status == 200, await resp.text()
            routed = (await resp.json())["choices"][0]["message"]["content"]
        async with c.http.post(c.decode[0].url + "/v1/chat/completions", json=body) as resp:
            direct = (await resp.json())["choices"][0]["message"]["content"]
        assert routed == direct
        assert set(json.loads(routed)) == {"text"}
        text = await c.metrics_text()
        assert len(c.prefill[0].completion_requests()) == 1
        assert 'route="disaggregated"' in text
        if protocol == "lmcache":  # the decoder got the client's chat request and used the KV
            [decode, _] = c.decode[0].completion_requests()
            assert decode.path == "/v1/chat/completions" and decode.body == body
            assert c.kv.lmcache == {}


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"n": 2}, "n"),
        ({"prompt": PROMPT, "echo": True}, "echo"),  # the decode leg's prompt is token ids
    ],
)
async def test_lmcache_requests_that_a_split_would_change_go_to_one_decoder(
    extra: dict[str, Any], reason: str
) -> None:
    async with cluster(protocol="lmcache") as c:
        body = {"model": MODEL, "max_tokens": 4, **extra}
        path = "/v1/completions"
        if "prompt" not in body:
            body["messages"], path = [{"role": "user", "content": PROMPT}], "/v1/chat/completions"
        async with c.http.post(c.url + path, json=body) as resp:
            assert resp.status == 200
        assert c.prefill[0].requests == []
        [decode] = c.decode[0].completion_requests()
        assert decode.body == body  # the client's request, unchanged
        text = await c.metrics_text()
        assert f'tandem_router_decode_only_total{{reason="{reason}"}} 1.0' in text
        assert c.kv.lmcache == {}


@pytest.mark.parametrize(
    "extra",
    [
        {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "auto"},
        {"logprobs": True, "top_logprobs": 2},
    ],
)
async def test_lmcache_chat_features_reach_the_decoder_through_a_hand_off(
    extra: dict[str, Any],
) -> None:
    """Tools and logprobs were decode-only while the prefiller sampled the first token."""
    async with cluster(protocol="lmcache") as c:
        body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], **extra}
        async with c.http.post(c.url + "/v1/chat/completions", json=body) as resp:
            assert resp.status == 200
        assert len(c.prefill[0].completion_requests()) == 1
        [decode] = c.decode[0].completion_requests()
        assert decode.path == "/v1/chat/completions" and decode.body == body
        assert c.kv.lmcache == {}  # the decoder found (and freed) the pushed KV
        assert "tandem_router_decode_only_total{" not in await c.metrics_text()


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"max_tokens": 1}, "max_tokens"),
        ({"n": 3}, "n"),
        ({"prompt_logprobs": 1}, "prompt_logprobs"),
    ],
)
async def test_nixl_requests_that_cannot_use_the_kv_skip_the_prefill(
    extra: dict[str, Any], reason: str
) -> None:
    async with cluster() as c:
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 4, **extra}
        assert (await c.post("/v1/completions", body)).status == 200
        assert c.prefill[0].requests == []
        assert c.kv.nixl == {}  # no blocks held on the prefiller for nobody
        text = await c.metrics_text()
        assert f'tandem_router_decode_only_total{{reason="{reason}"}} 1.0' in text


async def test_short_prompts_and_batches_are_counted_too() -> None:
    async with cluster(min_prompt_tokens=1000) as c:
        assert (await c.post("/v1/completions", {"model": MODEL, "prompt": "hi"})).status == 200
        batch = {"model": MODEL, "prompt": ["a", "b"]}  # the fake engine cannot do batches
        assert (await c.post("/v1/completions", batch)).status == 400
        text = await c.metrics_text()
        assert 'tandem_router_decode_only_total{reason="short_prompt"} 1.0' in text
        assert 'tandem_router_decode_only_total{reason="batch"} 1.0' in text
