"""The LMCache PD protocol's request bodies, as pure `Edit`s of the client's body (no I/O).

See `lmcache.py` for the protocol; these builders are shared by traffic, canaries and drains.
"""

from __future__ import annotations

import json
from typing import Any, Final

from tandem.router.jsonbody import Edit
from tandem.router.request import prompt_text

#: Chat-only request fields that `/v1/completions` does not understand (or reads differently:
#: chat `logprobs` is a bool, completions `logprobs` an int). Dropped from the prefill leg.
CHAT_ONLY_KEYS: Final = frozenset(
    {
        "messages", "tools", "tool_choice", "parallel_tool_calls", "response_format",
        "chat_template", "chat_template_kwargs", "add_generation_prompt",
        "continue_final_message", "documents", "logprobs", "top_logprobs", "reasoning_effort",
        "functions", "function_call", "max_completion_tokens", "mm_processor_kwargs",
    }
)  # fmt: skip
#: Fields the prefill leg sets itself, or that only shape the token it throws away (a grammar
#: would only cost the prefiller a compilation; `min_tokens` would fail validation against
#: `max_tokens: 1`).
_PREFILL_DROPPED: Final = frozenset(
    {
        "prompt", "kv_transfer_params", "stream", "stream_options", "min_tokens", "max_tokens",
        "echo", "logprobs", "response_format", "structured_outputs", "guided_json",
        "guided_regex", "guided_choice", "guided_grammar", "guided_decoding_backend",
    }
)  # fmt: skip
#: Chat fields `/tokenize` uses to render the prompt exactly as `/v1/chat/completions` would.
TOKENIZE_CHAT_KEYS: Final = (
    "messages", "add_generation_prompt", "continue_final_message", "chat_template",
    "chat_template_kwargs", "tools", "add_special_tokens", "mm_processor_kwargs",
)  # fmt: skip
TOKENIZE_PATH: Final = "/tokenize"


def tokenize_edit(body: dict[str, Any], *, is_chat: bool) -> Edit:
    """The `/tokenize` request: the client body reduced to the fields `/tokenize` reads."""
    keep = {"model", *TOKENIZE_CHAT_KEYS} if is_chat else {"model", "prompt", "add_special_tokens"}
    changes: dict[str, Any] = {}
    if not is_chat:
        changes["add_special_tokens"] = body.get("add_special_tokens", True)
        if not isinstance(body.get("prompt"), str):  # ["one prompt"] → "one prompt"
            changes["prompt"] = prompt_text(body, is_chat=False)
    return Edit(drop=frozenset(body.keys() - keep), set_=changes)


def tokens_json(tokens: list[int]) -> str:
    """A token-id list as JSON text (encoded once per request)."""
    return json.dumps(tokens, separators=(",", ":"))


def disagg_spec(
    req_id: str, receiver_host: str, init_ports: tuple[int, ...], alloc_ports: tuple[int, ...]
) -> dict[str, Any]:
    """Where the prefiller should push the KV: the chosen decoder's host and per-rank ports."""
    return {
        "req_id": req_id,
        "receiver_host": receiver_host,
        "receiver_init_port": list(init_ports),
        "receiver_alloc_port": list(alloc_ports),
    }


def prefill_edit(prompt_json: str, spec: dict[str, Any], *, is_chat: bool) -> Edit:
    """The prefill leg: token ids, one token (thrown away), no streaming, and the hand-off."""
    return Edit(
        drop=_PREFILL_DROPPED | (CHAT_ONLY_KEYS if is_chat else frozenset()),
        set_={"max_tokens": 1, "stream": False, "kv_transfer_params": {"disagg_spec": spec}},
        raw={"prompt": prompt_json},
    )


def decode_edit(prompt_json: str, *, is_chat: bool) -> Edit:
    """The decode leg: the client's own request, on its own path, without `kv_transfer_params`.

    A completion's prompt becomes the token ids the prefiller computed, so the decoder's LMCache
    lookup hashes exactly the tokens that were pushed. A chat request goes as it is: the
    decoder renders the same messages into the same ids as the `/tokenize` call did."""
    raw = {} if is_chat else {"prompt": prompt_json}
    return Edit(drop=frozenset({"kv_transfer_params"}), raw=raw)


def drain_payload(model: Any, token_ids: list[int]) -> bytes:
    """A request that makes a decoder retrieve (and so free) an abandoned hand-off's KV.

    The decoder looks up its whole prompt (`skip_last_n_tokens: 0`), so the prompt is exactly
    the hand-off's tokens; one token out."""
    body = {"model": model, "prompt": token_ids, "max_tokens": 1, "stream": False}
    return json.dumps(body, separators=(",", ":")).encode()
