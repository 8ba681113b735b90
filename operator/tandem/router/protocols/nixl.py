"""vLLM's NixlConnector hand-off (dataplane.md §4.1).

1. Prefill: the client's body on the client's path with `max_tokens: 1` (and
   `max_completion_tokens: 1` if present), `stream: false`, no `stream_options`, and
   `kv_transfer_params` asking for a remote decode. Header `X-Request-Id` is the same on both legs.
2. The prefill answer carries `kv_transfer_params` (engine id, block ids, host/port, …).
3. Decode: the client's **original** body plus those `kv_transfer_params` verbatim; the decoder
   pulls the KV from the prefiller and its answer is relayed to the client unchanged.

Both legs are built as `Edit`s of the parsed client body (`jsonbody.py`): only the changed fields
are encoded, the prompt's text is copied, so a 220 KB prompt is never re-serialised.

`min_tokens` is removed from the prefill leg, as vLLM's toy proxy does: a client's
`min_tokens: 5` with the prefill's `max_tokens: 1` would fail vLLM's validation (min ≤ max).
The decode leg keeps it, since the decoder generates the whole answer.
"""

from __future__ import annotations

import time
from typing import Any, Final

from tandem.router.errors import PrefillFailure
from tandem.router.jsonbody import Edit, JsonBody
from tandem.router.protocols.base import RouterContext
from tandem.router.protocols.prefill import call_prefill
from tandem.router.protocols.relay import relay_decode
from tandem.router.reply import Reply
from tandem.router.request import ClientRequest, estimate_prompt_tokens

#: What the prefill call asks for: "compute the prompt, keep the KV for a remote decoder".
PREFILL_KV_PARAMS: Final[dict[str, Any]] = {
    "do_remote_decode": True,
    "do_remote_prefill": False,
    "remote_engine_id": None,
    "remote_block_ids": None,
    "remote_host": None,
    "remote_port": None,
}


def prefill_edit(body: dict[str, Any]) -> Edit:
    """The prefill leg: the client's body with one token, no streaming, and the KV request."""
    changes: dict[str, Any] = {
        "max_tokens": 1,
        "stream": False,
        "kv_transfer_params": dict(PREFILL_KV_PARAMS),
    }
    if "max_completion_tokens" in body:
        changes["max_completion_tokens"] = 1
    return Edit(drop=frozenset({"stream_options", "min_tokens"}), set_=changes)


def decode_edit(answer: JsonBody) -> Edit:
    """The decode leg: the original body plus the prefill answer's `kv_transfer_params`,
    copied byte for byte from the prefill answer."""
    return Edit(raw={"kv_transfer_params": answer.source("kv_transfer_params")})


class NixlHandoff:
    """The NIXL protocol over a router context."""

    def __init__(self, ctx: RouterContext) -> None:
        self._ctx = ctx

    async def measure(self, creq: ClientRequest) -> int | None:
        """The character-based estimate: the NIXL protocol never needs a tokenizer."""
        return estimate_prompt_tokens(creq.body, is_chat=creq.is_chat)

    async def disaggregated(self, creq: ClientRequest, reply: Reply, tokens: int) -> None:
        """Prefill, then decode with the prefill's KV parameters."""
        ctx = self._ctx
        started = time.monotonic()
        answer = await self._prefill(creq, tokens)
        async with await ctx.decode_lease(creq, tokens, direct=False) as lease:
            ctx.metrics.handoff_seconds.observe(time.monotonic() - started)
            payload = decode_edit(answer).payload(creq.parsed)
            await relay_decode(ctx, creq, lease.endpoint, payload, reply)

    async def _prefill(self, creq: ClientRequest, tokens: int) -> JsonBody:
        ctx = self._ctx
        payload = prefill_edit(creq.body).payload(creq.parsed)
        async with await ctx.prefill_lease(creq, tokens) as lease:
            url = lease.endpoint.url
            answer = await call_prefill(ctx, creq, url, creq.path, payload)
        if not isinstance(answer.values.get("kv_transfer_params"), dict):
            raise PrefillFailure(
                "no_kv_params", f"{url} answered without kv_transfer_params (is it a kv_producer?)"
            )
        return answer
