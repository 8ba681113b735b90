"""The LMCache PD protocol's request bodies, as pure `Edit`s of the client's body (no I/O).

See `lmcache.py` for the protocol; these builders are shared by traffic, canaries and drains.
"""

from __future__ import annotations

import json
from typing import Any, Final

from tandem.router.jsonbody import Edit
from tandem.router.request import DEFAULT_COMPLETION_MAX_TOKENS, prompt_text

#: Chat-only request fields that `/v1/completions` does not understand (or reads differently:
#: chat `logprobs` is a bool, completions `logprobs` an int). Dropped from both legs.
CHAT_ONLY_KEYS: Final = frozenset(
    {
        "messages", "tools", "tool_choice", "parallel_tool_calls", "response_format",
        "chat_template", "chat_template_kwargs", "add_generation_prompt",
        "continue_final_message", "documents", "logprobs", "top_logprobs", "reasoning_effort",
        "functions", "function_call", "max_completion_tokens", "mm_processor_kwargs",
    }
)  # fmt: skip
#: Fields the legs set themselves (the client's copies are dropped). `min_tokens` would fail
#: validation against the prefill's `max_tokens: 1`; the decode leg sets it one lower.
_LEG_KEYS: Final = frozenset(
    {"prompt", "kv_transfer_params", "stream", "stream_options", "min_tokens"}
)
#: Chat fields `/tokenize` uses to render the prompt exactly as `/v1/chat/completions` would.
TOKENIZE_CHAT_KEYS: Final = (
    "messages", "add_generation_prompt", "continue_final_message", "chat_template",
    "chat_template_kwargs", "tools", "add_special_tokens", "mm_processor_kwargs",
)  # fmt: skip
TOKENIZE_PATH: Final = "/tokenize"
DETOKENIZE_PATH: Final = "/detokenize"


def tokenize_edit(body: dict[str, Any], *, is_chat: bool) -> Edit:
    """The `/tokenize` request: the client body reduced to the fields `/tokenize` reads."""
    keep = {"model", *TOKENIZE_CHAT_KEYS} if is_chat else {"model", "prompt", "add_special_tokens"}
    changes: dict[str, Any] = {}
    if not is_chat:
        changes["add_special_tokens"] = body.get("add_special_tokens", True)
        if not isinstance(body.get("prompt"), str):  # ["one prompt"] → "one prompt"
            changes["prompt"] = prompt_text(body, is_chat=False)
    return Edit(drop=frozenset(body.keys() - keep), set_=changes)


def tokens_json(tokens: list[int], extra: int | None = None) -> str:
    """A token-id list as JSON text, optionally with one more token (encoded once per request)."""
    text = json.dumps(tokens, separators=(",", ":"))
    if extra is None:
        return text
    return f"[{extra}]" if not tokens else text[:-1] + f",{extra}]"


def requested_max_tokens(body: dict[str, Any], *, is_chat: bool) -> int | None:
    """Tokens the client wants; None = until the end of the context (chat without a limit)."""
    if is_chat:
        value = body.get("max_completion_tokens", body.get("max_tokens"))
        return value if isinstance(value, int) else None
    value = body.get("max_tokens")
    return value if isinstance(value, int) else DEFAULT_COMPLETION_MAX_TOKENS


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


def _dropped(is_chat: bool) -> frozenset[str]:
    return _LEG_KEYS | {"max_tokens"} | (CHAT_ONLY_KEYS if is_chat else frozenset())


def prefill_edit(prompt_json: str, spec: dict[str, Any], *, is_chat: bool) -> Edit:
    """The prefill leg: token ids, one token, no streaming, and the hand-off request."""
    return Edit(
        drop=_dropped(is_chat),
        set_={
            "max_tokens": 1,
            "stream": False,
            "kv_transfer_params": {"ret_first_tok": True, "disagg_spec": spec},
        },
        raw={"prompt": prompt_json},
    )


def decode_edit(
    body: dict[str, Any], prompt_json: str, remaining: int | None, *, is_chat: bool
) -> Edit:
    """The decode leg: prompt plus first token, one token fewer, no `kv_transfer_params`."""
    stream = bool(body.get("stream"))
    drop = _dropped(is_chat)
    if stream and "stream_options" in body:
        drop -= {"stream_options"}
    changes: dict[str, Any] = {"stream": stream}
    if remaining is not None:
        changes["max_tokens"] = remaining
    min_tokens = body.get("min_tokens")
    if isinstance(min_tokens, int) and min_tokens > 1:  # the first token already counts
        changes["min_tokens"] = min_tokens - 1
    return Edit(drop=drop, set_=changes, raw={"prompt": prompt_json})


def drain_payload(model: Any, token_ids: list[int], first_token: int | None) -> bytes:
    """A request that makes a decoder retrieve (and so free) an abandoned hand-off's KV.

    The decoder looks up its prompt minus the last token (`skip_last_n_tokens: 1`), so the
    prompt is the hand-off's tokens plus one more, whatever that token is; one token out."""
    extra = first_token if first_token is not None else (token_ids[-1] if token_ids else 0)
    body = {"model": model, "prompt": [*token_ids, extra], "max_tokens": 1, "stream": False}
    return json.dumps(body, separators=(",", ":")).encode()
