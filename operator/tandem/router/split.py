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

In both protocols the *decoder* samples every token (LMCache since review A9: the decoder gets
the whole prompt, `skip_last_n_tokens: 0`), so structured output, tools, logprobs and stop
strings split fine. LMCache only, for `/v1/completions`, whose decode leg is the client's
request with the prompt replaced by its token ids:
- ``echo``: the decoder would echo the detokenized ids, not the client's prompt text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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


def token_prompt_reason(body: Mapping[str, Any], *, is_chat: bool) -> str | None:
    """Why a completion whose prompt the decode leg replaces by token ids would change."""
    if not is_chat and body.get("echo"):
        return "echo"
    return None
