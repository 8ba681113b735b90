"""The LMCache PD hand-off end to end, including the KV-ready relay between router replicas."""

from __future__ import annotations

import json

import pytest

from tandem.api.vocabulary import Role
from tandem.router.app import Router
from tandem.router.kvready import owner_of
from tests.fake_engine import chat_template, expected_text, token_at, tokenize
from tests.router.harness import MODEL, cluster, sse_payloads

pytestmark = pytest.mark.timeout(15)

PROMPT = "Disaggregated prefill moves the KV cache. " * 3


async def test_completion_follows_the_lmcache_protocol() -> None:
    async with cluster(protocol="lmcache", tp_size=2) as c:
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 6, "seed": 7}
        by_source = c.decode[0].metrics.prompt_tokens_by_source
        before = by_source["external_kv_transfer"]  # the canary's hand-off counts too
        async with c.http.post(c.url + "/v1/completions", json=body) as resp:
            assert resp.status == 200, await resp.text()
            answer = await resp.json()
        assert answer["choices"][0]["text"] == expected_text(len(PROMPT), 6)
        assert answer["usage"]["prompt_tokens"] == len(PROMPT)
        assert answer["usage"]["completion_tokens"] == 6

        tokens = tokenize(PROMPT)
        tokenize_calls = [r for r in c.decode[0].requests if r.path == "/tokenize"]
        assert [r.body["prompt"] for r in tokenize_calls] == [PROMPT]
        [prefill] = c.prefill[0].completion_requests()
        assert prefill.path == "/v1/completions"
        assert prefill.body["prompt"] == tokens
        assert prefill.body["max_tokens"] == 1 and prefill.body["stream"] is False
        assert prefill.body["seed"] == 7
        kv = prefill.body["kv_transfer_params"]
        assert set(kv) == {"disagg_spec"}  # its one token is thrown away
        spec = kv["disagg_spec"]
        assert spec["receiver_host"] == "127.0.0.1"
        assert spec["receiver_init_port"] == [7300, 7301]
        assert spec["receiver_alloc_port"] == [7400, 7401]
        assert owner_of(spec["req_id"]) == c.router.kv_hub.owner  # type: ignore[union-attr]
        [decode] = c.decode[0].completion_requests()
        # Review A9: the client's request on the very ids pushed; the decoder samples them all.
        assert decode.body == {**body, "prompt": tokens}
        assert c.prefill[0].notifications_sent == 2  # one per TP rank
        assert c.kv.lmcache == {}  # the decoder found and retrieved the whole prompt
        # Every prompt token but the last, which the decoder recomputes (`recalc_last`).
        assert by_source["external_kv_transfer"] - before == len(tokens) - 1


async def test_streamed_completion_is_the_decoders_stream() -> None:
    async with cluster(protocol="lmcache") as c:
        body = {
            "model": MODEL,
            "prompt": PROMPT,
            "max_tokens": 5,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        async with c.http.post(c.url + "/v1/completions", json=body) as resp:
            assert resp.status == 200
            events = sse_payloads(await resp.read())
        assert events[-1] == "[DONE]"
        chunks = [e for e in events[:-1] if e["choices"]]
        assert chunks[0]["choices"][0]["text"] == chr(token_at(len(PROMPT)))  # from the decoder
        assert "".join(e["choices"][0]["text"] for e in chunks) == expected_text(len(PROMPT), 5)
        assert len({e["id"] for e in events[:-1]}) == 1
        usage = events[-2]["usage"]
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == (len(PROMPT), 5)


@pytest.mark.parametrize("stream", [False, True])
async def test_chat_is_tokenized_with_messages_and_decoded_as_chat(stream: bool) -> None:
    async with cluster(protocol="lmcache") as c:
        messages = [{"role": "user", "content": PROMPT}]
        body = {
            "model": MODEL,
            "messages": messages,
            "max_completion_tokens": 4,
            "stream": stream,
            "tools": [],
        }
        async with c.http.post(c.url + "/v1/chat/completions", json=body) as resp:
            assert resp.status == 200
            raw = await resp.read()
        prompt_len = len(chat_template(messages))
        if stream:
            events = sse_payloads(raw)
            assert all(e["object"] == "chat.completion.chunk" for e in events[:-1])
            assert events[0]["choices"][0]["delta"]["role"] == "assistant"
            content = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
        else:
            answer = json.loads(raw)
            assert answer["object"] == "chat.completion"
            content = answer["choices"][0]["message"]["content"]
        assert content == expected_text(prompt_len, 4)
        [tok] = [r for r in c.decode[0].requests if r.path == "/tokenize"]
        assert tok.body["messages"] == messages and tok.body["tools"] == []
        [prefill] = c.prefill[0].completion_requests()
        assert prefill.path == "/v1/completions"
        assert "messages" not in prefill.body and "tools" not in prefill.body
        assert prefill.body["prompt"] == tokenize(chat_template(messages))
        [decode] = c.decode[0].completion_requests()
        # The client's chat request as it is: the decoder renders the same ids and finds them.
        assert decode.path == "/v1/chat/completions" and decode.body == body
        assert c.kv.lmcache == {}


@pytest.mark.parametrize("stream", [False, True])
async def test_one_token_requests_go_decode_only_before_any_prefill(stream: bool) -> None:
    """Review A3a: the old router prefilled them, answered from the prefiller alone and left the
    pushed KV in the decoder's buffer for good. Now nothing is pushed at all."""
    async with cluster(protocol="lmcache") as c:
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 1, "stream": stream}
        async with c.http.post(c.url + "/v1/completions", json=body) as resp:
            raw = await resp.read()
        if stream:
            events = sse_payloads(raw)
            text = "".join(e["choices"][0]["text"] for e in events[:-1])
            assert events[-2]["choices"][0]["finish_reason"] == "length"
        else:
            text = json.loads(raw)["choices"][0]["text"]
        assert text == chr(token_at(len(PROMPT)))
        assert c.prefill[0].requests == []  # no /tokenize, no prefill
        [decode] = c.decode[0].completion_requests()
        assert decode.body == body
        assert c.kv.lmcache == {}  # nothing pushed, so nothing leaked
        text = await c.metrics_text()
        assert 'tandem_router_decode_only_total{reason="max_tokens"} 1.0' in text
        assert 'outcome="success",route="decode_only"' in text


async def test_notifications_arriving_after_the_prefill_answer_are_awaited() -> None:
    async with cluster(protocol="lmcache") as c:
        c.prefill[0].faults.notify_delay = 0.1
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 2}
        assert (await c.post("/v1/completions", body)).status == 200
        assert len(c.decode[0].completion_requests()) == 1


async def test_missing_kv_ready_fails_or_falls_back() -> None:
    async with cluster(protocol="lmcache", kv_ready_timeout=0.2) as c:
        c.prefill[0].faults.drop_notifications = True
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 2}
        async with c.http.post(c.url + "/v1/completions", json=body) as resp:
            assert resp.status == 503
            error = (await resp.json())["error"]
        assert error["type"] == "prefill_unavailable" and "KV-ready" in error["message"]
        assert c.decode[0].completion_requests() == []

    async with cluster(
        protocol="lmcache", kv_ready_timeout=0.2, on_prefill_failure="decode-only"
    ) as c:
        c.prefill[0].faults.drop_notifications = True
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 2}
        async with c.http.post(c.url + "/v1/completions", json=body) as resp:
            assert resp.status == 200
            assert (await resp.json())["choices"][0]["text"] == expected_text(len(PROMPT), 2)
        [decode] = c.decode[0].completion_requests()
        assert decode.body["prompt"] == PROMPT  # the original request, no KV
        text = await c.metrics_text()
        assert 'tandem_router_prefill_fallbacks_total{reason="kv_ready_timeout"} 1.0' in text


async def test_short_prompts_skip_prefill_using_the_exact_token_count() -> None:
    async with cluster(protocol="lmcache", min_prompt_tokens=len(PROMPT) + 1) as c:
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 2}
        assert (await c.post("/v1/completions", body)).status == 200
        assert c.prefill[0].completion_requests() == []
        [decode] = c.decode[0].completion_requests()
        assert decode.body == body


async def test_token_id_prompts_skip_tokenize() -> None:
    async with cluster(protocol="lmcache") as c:
        body = {"model": MODEL, "prompt": [100, 101, 102], "max_tokens": 2}
        assert (await c.post("/v1/completions", body)).status == 200
        assert [r.path for r in c.decode[0].requests] == ["/v1/completions"]
        [prefill] = c.prefill[0].completion_requests()
        assert prefill.body["prompt"] == [100, 101, 102]


async def test_two_replicas_relay_notifications_to_the_owner() -> None:
    async with cluster(protocol="lmcache", replicas=2, tp_size=2) as c:
        first, second = c.routers
        assert first.kv_hub is not None and second.kv_hub is not None
        # The prefiller's pd_proxy address reaches replica 2, but replica 1 sends the request.
        c.prefill[0].proxy = f"127.0.0.1:{second.kv_hub.port}"

        def notifications(router: Router, outcome: str) -> float:
            name = "tandem_router_kv_ready_notifications_total"
            return router.metrics.registry.get_sample_value(name, {"outcome": outcome}) or 0.0

        before = notifications(second, "forwarded"), notifications(first, "delivered")
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 3}
        async with c.http.post(first.url + "/v1/completions", json=body) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["choices"][0]["text"] == expected_text(len(PROMPT), 3)
        assert notifications(second, "forwarded") - before[0] == 2
        assert notifications(first, "delivered") - before[1] == 2


async def test_decoder_failures_are_reported_in_the_clients_format() -> None:
    async with cluster(protocol="lmcache") as c:
        c.decode[0].faults.status = 500
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 4}
        async with c.http.post(c.url + "/v1/completions", json=body) as resp:
            assert resp.status == 502
            assert (await resp.json())["error"]["type"] == "decode_failed"
        c.decode[0].faults.status = None
        c.decode[0].faults.break_after_chunks = 1
        body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}]}
        async with c.http.post(
            c.url + "/v1/chat/completions", json={**body, "max_tokens": 6, "stream": True}
        ) as resp:
            assert resp.status == 200
            events = sse_payloads(await resp.read())
        assert events[0]["object"] == "chat.completion.chunk"  # the first token
        assert events[-2]["error"]["code"] == 502 and events[-1] == "[DONE]"


async def test_prefill_server_error_falls_back_to_decode_only() -> None:
    async with cluster(protocol="lmcache", on_prefill_failure="decode-only") as c:
        c.prefill[0].faults.status = 500
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 3, "stream": True}
        async with c.http.post(c.url + "/v1/completions", json=body) as resp:
            events = sse_payloads(await resp.read())
        text = "".join(e["choices"][0]["text"] for e in events[:-1])
        assert text == expected_text(len(PROMPT), 3)
        [decode] = c.decode[0].completion_requests()
        assert decode.body == body
        # The reserved decode slot was given back before the fallback took its own.
        assert all(ep.inflight == 0 for ep in c.router.pools[Role.DECODE].endpoints.values())
