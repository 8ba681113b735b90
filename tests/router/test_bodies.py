"""Unit tests of the pure request/answer builders of both hand-off protocols."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tandem.router.jsonbody import Edit, parse_object
from tandem.router.protocols import lmcache, nixl
from tandem.router.request import estimate_prompt_tokens, prompt_text, request_prefix_hash

pytestmark = pytest.mark.timeout(10)


# --- NIXL ---------------------------------------------------------------------------------


def edited(edit: Edit, body: dict[str, Any]) -> dict[str, Any]:
    """Apply an edit both ways (dict and bytes) and check they agree."""
    for threshold in (0, 1 << 30):  # with and without the span index
        via_bytes = json.loads(edit.payload(parse_object(json.dumps(body), index_above=threshold)))
        assert via_bytes == edit.apply(body)
    return via_bytes  # type: ignore[no-any-return]


def test_nixl_prefill_asks_for_one_token_without_streaming() -> None:
    body = {
        "model": "m",
        "prompt": "hi",
        "max_tokens": 50,
        "max_completion_tokens": 50,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.3,
        "min_tokens": 5,
    }
    out = edited(nixl.prefill_edit(body), body)
    assert "min_tokens" not in out  # min_tokens 5 > max_tokens 1 would fail validation
    assert out["max_tokens"] == 1 and out["max_completion_tokens"] == 1
    assert out["stream"] is False and "stream_options" not in out
    assert out["temperature"] == 0.3 and out["prompt"] == "hi"
    assert out["kv_transfer_params"] == {
        "do_remote_decode": True,
        "do_remote_prefill": False,
        "remote_engine_id": None,
        "remote_block_ids": None,
        "remote_host": None,
        "remote_port": None,
    }
    assert body["max_tokens"] == 50 and body["stream"] is True  # the original is untouched


def test_nixl_prefill_adds_no_max_completion_tokens_when_absent() -> None:
    assert "max_completion_tokens" not in edited(
        nixl.prefill_edit({"prompt": "x"}), {"prompt": "x"}
    )


def test_nixl_decode_is_the_original_plus_kv_params_byte_for_byte() -> None:
    body = {"model": "m", "prompt": "p" * 1000, "max_tokens": 7, "stream": True}
    kv_text = '{"do_remote_prefill": true, "remote_block_ids": [[1, 2]], "remote_port": 5600}'
    answer = parse_object('{"id": "cmpl-1", "kv_transfer_params": ' + kv_text + "}", index_above=0)
    payload = nixl.decode_edit(answer).payload(parse_object(json.dumps(body)))
    assert kv_text.encode() in payload
    assert json.loads(payload) == {**body, "kv_transfer_params": json.loads(kv_text)}


def test_nixl_decode_replaces_kv_params_the_client_sent() -> None:
    body = {"prompt": "x", "kv_transfer_params": {"client": 1}}
    answer = parse_object('{"kv_transfer_params": {"from": "prefill"}}')
    out = edited(nixl.decode_edit(answer), body)
    assert out["kv_transfer_params"] == {"from": "prefill"}


# --- LMCache ------------------------------------------------------------------------------


def test_lmcache_tokenize_request_for_completion_and_chat() -> None:
    body = {"model": "m", "prompt": "hi", "max_tokens": 3}
    assert edited(lmcache.tokenize_edit(body, is_chat=False), body) == {
        "model": "m",
        "prompt": "hi",
        "add_special_tokens": True,
    }
    single = {"prompt": ["hi"], "add_special_tokens": False}
    assert edited(lmcache.tokenize_edit(single, is_chat=False), single) == {
        "prompt": "hi",
        "add_special_tokens": False,
    }
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 1}
    assert edited(lmcache.tokenize_edit(chat, is_chat=True), chat) == {
        "model": "m",
        "messages": chat["messages"],
    }


def test_tokens_json() -> None:
    assert lmcache.tokens_json([1, 2]) == "[1,2]"
    assert lmcache.tokens_json([]) == "[]"


def test_lmcache_prefill_carries_tokens_and_disagg_spec() -> None:
    spec = lmcache.disagg_spec("tandem-h-7500-x", "10.0.0.9", (7300, 7301), (7400, 7401))
    body = {"model": "m", "messages": [], "max_completion_tokens": 9, "stream": True, "seed": 1}
    out = edited(lmcache.prefill_edit("[1,2,3]", spec, is_chat=True), body)
    assert out == {
        "model": "m",
        "seed": 1,
        "prompt": [1, 2, 3],
        "max_tokens": 1,
        "stream": False,
        "kv_transfer_params": {
            "disagg_spec": {
                "req_id": "tandem-h-7500-x",
                "receiver_host": "10.0.0.9",
                "receiver_init_port": [7300, 7301],
                "receiver_alloc_port": [7400, 7401],
            },
        },
    }


def test_lmcache_prefill_drops_what_only_shapes_its_thrown_away_token() -> None:
    spec = lmcache.disagg_spec("r", "h", (1,), (2,))
    body = {
        "model": "m",
        "prompt": "hello",
        "max_tokens": 10,
        "min_tokens": 4,
        "logprobs": 2,
        "echo": False,
        "response_format": {"type": "json_object"},
        "structured_outputs": {"regex": "a+"},
        "stop": ["x"],
        "temperature": 0.5,
    }
    out = edited(lmcache.prefill_edit("[1]", spec, is_chat=False), body)
    assert out == {
        "model": "m",
        "stop": ["x"],
        "temperature": 0.5,
        "prompt": [1],
        "max_tokens": 1,
        "stream": False,
        "kv_transfer_params": {"disagg_spec": spec},
    }


def test_lmcache_decode_is_the_clients_request_on_the_prompts_token_ids() -> None:
    """Review A9: the decoder samples every token, with the client's own parameters."""
    body = {
        "model": "m",
        "prompt": "hello",
        "max_tokens": 10,
        "min_tokens": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
        "kv_transfer_params": {"x": 1},
        "logprobs": 2,
        "response_format": {"type": "json_object"},
    }
    out = edited(lmcache.decode_edit("[1,2]", is_chat=False), body)
    assert out == {**{k: v for k, v in body.items() if k != "kv_transfer_params"}, "prompt": [1, 2]}
    chat = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "logprobs": True,
        "kv_transfer_params": {"x": 1},
    }
    out = edited(lmcache.decode_edit("[1,2]", is_chat=True), chat)
    assert out == {k: v for k, v in chat.items() if k != "kv_transfer_params"}


def test_lmcache_drain_asks_for_the_prompt_itself() -> None:
    """The decoder looks up the whole prompt (`skip_last_n_tokens: 0`): no extra token."""
    payload = json.loads(lmcache.drain_payload("m", [5, 6, 7]))
    assert payload == {"model": "m", "prompt": [5, 6, 7], "max_tokens": 1, "stream": False}


# --- request facts ------------------------------------------------------------------------


def test_token_estimate_is_four_chars_per_token() -> None:
    assert estimate_prompt_tokens({"prompt": "x" * 400}, is_chat=False) == 100
    assert estimate_prompt_tokens({"prompt": ["x" * 40]}, is_chat=False) == 10
    assert estimate_prompt_tokens({"prompt": [1, 2, 3]}, is_chat=False) == 3
    assert estimate_prompt_tokens({"prompt": ""}, is_chat=False) == 1


def test_batches_and_missing_prompts_cannot_be_disaggregated() -> None:
    assert estimate_prompt_tokens({"prompt": ["a", "b"]}, is_chat=False) is None
    assert estimate_prompt_tokens({"prompt": [[1], [2]]}, is_chat=False) is None
    assert estimate_prompt_tokens({}, is_chat=False) is None
    assert estimate_prompt_tokens({"messages": "nope"}, is_chat=True) is None


def test_chat_prompt_text_includes_roles_and_content_parts() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ]
    }
    assert prompt_text(body, is_chat=True) == "system:be brief\nuser:hi\n"
    assert estimate_prompt_tokens(body, is_chat=True) == len("system:be brief\nuser:hi\n") // 4


def test_prefix_hash_of_requests() -> None:
    a = request_prefix_hash({"prompt": "same start" * 100 + "a"}, is_chat=False)
    b = request_prefix_hash({"prompt": "same start" * 100 + "b"}, is_chat=False)
    assert a == b
    assert request_prefix_hash({"prompt": [1, 2]}, is_chat=False) is not None
    assert request_prefix_hash({"prompt": ["a", "b"]}, is_chat=False) is None
