"""Which requests must not be split into a prefill leg and a decode leg (pure).

A hand-off costs a prefill, a KV push or pull and a decoder buffer; these requests would pay it
for nothing, or come back with a different meaning, so the dispatcher sends them decode-only
*before* any prefill (counted in `tandem_router_decode_only_total{reason}`):

Every protocol:
- ``max_tokens``: the client wants at most one token. The prefill alone would answer it, and an
  LMCache push for it would never be consumed (review A3a: the decoder's buffer leaks);
- ``n``: several choices (``n`` or ``best_of`` > 1): one hand-off carries one request's KV;
- ``prompt_logprobs``: vLLM skips cached and transferred prefixes for such requests, so the
  decoder recomputes the prompt anyway and the transferred KV is wasted.

LMCache only, where the *prefiller* samples the first token and the decoder continues from
``prompt + [first token]`` (review A9); with NIXL the decoder samples every token itself:
- ``structured_output``: ``response_format`` (other than text), ``structured_outputs``,
  ``guided_*``: the decoder's grammar would restart after the first token;
- ``tools``: tool parsing needs the whole answer from one engine in chat form;
- ``logprobs``: the first token's logprobs would be missing;
- ``echo``: the decoder would echo its token-id prompt plus the first token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

#: Fields that ask for structured output, besides `response_format`.
STRUCTURED_KEYS: Final = (
    "structured_outputs",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
)


def _max_tokens(body: Mapping[str, Any], *, is_chat: bool) -> Any:
    if is_chat and body.get("max_completion_tokens") is not None:
        return body.get("max_completion_tokens")
    return body.get("max_tokens")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def any_protocol_reason(body: Mapping[str, Any], *, is_chat: bool) -> str | None:
    """Why no hand-off can help this request, whatever the protocol; None if one can."""
    limit = _int(_max_tokens(body, is_chat=is_chat))
    if limit is not None and limit <= 1:
        return "max_tokens"
    if (_int(body.get("n")) or 1) > 1 or (_int(body.get("best_of")) or 1) > 1:
        return "n"
    if body.get("prompt_logprobs") is not None:
        return "prompt_logprobs"
    return None


def _structured(body: Mapping[str, Any]) -> bool:
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        return True
    return any(body.get(key) is not None for key in STRUCTURED_KEYS)


def first_token_split_reason(body: Mapping[str, Any]) -> str | None:
    """Why a request whose first token is sampled by the prefiller would change meaning."""
    if _structured(body):
        return "structured_output"
    if body.get("tools") or body.get("tool_choice") not in (None, "none"):
        return "tools"
    logprobs = body.get("logprobs")
    if (logprobs is not None and logprobs is not False) or body.get("top_logprobs") is not None:
        return "logprobs"
    if body.get("echo"):
        return "echo"
    return None
