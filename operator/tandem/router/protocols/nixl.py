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

Ordering, and what the router guarantees about vLLM 0.32's KV lease (`nixl/base_scheduler.py`:
`kv_lease_duration`, default 30 s; `nixl/pull_scheduler.py` `request_finished`):

- the decode slot is taken *before* the prefill call (`handoff_decode_lease`, the same order as
  the LMCache path). When every decoder is at `--max-inflight-per-engine`, the request waits in
  the router's queue *before* the prefiller computed anything, so no KV sits on a prefiller
  while the router queues (review B4). Between the prefill answer and the decode POST there
  is no await on router state: the decode leg is sent at once;
- the prefiller keeps the blocks for `kv_lease_duration` from the end of the prefill. Once the
  decoder holds the request it sends heartbeats every `lease // 6` seconds (each extends the
  lease to now + `lease * 2 // 3`; `nixl/pull_worker.py` `_send_heartbeats`) while the request
  waits in its scheduler, so the decoder's own queue is covered by vLLM, not by the router;
- what remains uncovered is the time the decode POST needs to reach the decoder's scheduler
  (connection, request parsing, tokenization). A decoder whose HTTP server stalls longer than
  the lease reads freed, possibly reused, blocks: vLLM logs it on the *prefiller* and counts
  `vllm:nixl_num_notifications_after_expiry_total` there; alert on it;
- `tandem_router_handoff_seconds` runs from the start of the prefill call to the decode leg's
  first streamed byte (its first token), so it includes the KV pull, not only the prefill.
"""

from __future__ import annotations

import time
from typing import Any, Final

from tandem.router.errors import PrefillFailure
from tandem.router.jsonbody import Edit, JsonBody
from tandem.router.protocols.base import RouterContext, pair_outcome
from tandem.router.protocols.prefill import call_prefill
from tandem.router.protocols.relay import relay_decode
from tandem.router.reply import Reply
from tandem.router.request import ClientRequest, estimate_prompt_tokens
from tandem.router.split import any_protocol_reason

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

    def decode_only_reason(self, creq: ClientRequest) -> str | None:
        """The decoder samples every token, so only the protocol-independent reasons apply."""
        return any_protocol_reason(creq.body, is_chat=creq.is_chat)

    async def measure(self, creq: ClientRequest) -> int | None:
        """The character-based estimate: the NIXL protocol never needs a tokenizer."""
        return estimate_prompt_tokens(creq.body, is_chat=creq.is_chat)

    async def disaggregated(self, creq: ClientRequest, reply: Reply, tokens: int) -> None:
        """Reserve a decoder, prefill, then decode with the prefill's KV parameters."""
        ctx = self._ctx
        started = time.monotonic()
        async with await ctx.handoff_decode_lease(creq, tokens) as decode:
            prefill = await ctx.handoff_prefill_lease(creq, tokens, decode.endpoint.url)
            with pair_outcome(ctx, creq, (prefill.endpoint.url, decode.endpoint.url)):
                async with prefill:
                    answer = await self._prefill(creq, prefill.endpoint.url)
                payload = decode_edit(answer).payload(creq.parsed)
                first = ctx.first_decode_byte(creq, started)
                await relay_decode(ctx, creq, decode.endpoint, payload, reply, on_first=first)

    async def _prefill(self, creq: ClientRequest, url: str) -> JsonBody:
        ctx = self._ctx
        payload = prefill_edit(creq.body).payload(creq.parsed)
        answer = await call_prefill(ctx, creq, url, creq.path, payload)
        if not isinstance(answer.values.get("kv_transfer_params"), dict):
            raise PrefillFailure(
                "no_kv_params", f"{url} answered without kv_transfer_params (is it a kv_producer?)"
            )
        return answer
