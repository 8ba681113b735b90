"""vLLM's NixlConnector hand-off (dataplane.md §4.1).

1. Prefill: the client's body on the client's path with `max_tokens: 1` (and
   `max_completion_tokens: 1` if present), `stream: false`, no `stream_options`, and
   `kv_transfer_params` asking for a remote decode. Header `X-Request-Id` is the same on both legs.
2. The prefill answer carries `kv_transfer_params` (engine id, block ids, host/port, …).
3. Decode: the client's **original** body plus those `kv_transfer_params` verbatim; the decoder
   pulls the KV from the prefiller and its answer is relayed to the client unchanged.

`min_tokens` is left as the client sent it (vLLM's toy proxy deletes it, vllm-router sends 1;
both only matter when the client sets it above 1, which a one-token prefill cannot honour anyway).
"""

from __future__ import annotations

import json
import time
from typing import Any, Final

from tandem.router.errors import PrefillFailure
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


def prefill_body(body: dict[str, Any]) -> dict[str, Any]:
    """The prefill leg's body (a shallow copy; the client's body is not modified)."""
    out = dict(body)
    out["max_tokens"] = 1
    if "max_completion_tokens" in out:
        out["max_completion_tokens"] = 1
    out["stream"] = False
    out.pop("stream_options", None)
    out["kv_transfer_params"] = dict(PREFILL_KV_PARAMS)
    return out


def decode_payload(raw: bytes, body: dict[str, Any], kv_params: dict[str, Any]) -> bytes:
    """The decode leg's bytes: the original request plus the prefill's `kv_transfer_params`.

    When the client sent no `kv_transfer_params` of its own (the normal case) the parameters are
    spliced in after the opening brace of the original bytes, so a 220 KB prompt is not
    serialised a second time; otherwise the body is rebuilt.
    """
    stripped = raw.lstrip()
    if body and "kv_transfer_params" not in body and stripped.startswith(b"{"):
        return b'{"kv_transfer_params":' + json.dumps(kv_params).encode() + b"," + stripped[1:]
    return json.dumps({**body, "kv_transfer_params": kv_params}).encode()


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
        kv_params = await self._prefill(creq, tokens)
        async with await ctx.decode_lease(creq, tokens, direct=False) as lease:
            ctx.metrics.handoff_seconds.observe(time.monotonic() - started)
            payload = decode_payload(creq.raw, creq.body, kv_params)
            await relay_decode(ctx, creq, lease.endpoint, payload, reply)

    async def _prefill(self, creq: ClientRequest, tokens: int) -> dict[str, Any]:
        ctx = self._ctx
        payload = json.dumps(prefill_body(creq.body)).encode()
        async with await ctx.prefill_lease(creq, tokens) as lease:
            url = lease.endpoint.url
            answer = await call_prefill(ctx, creq, url, creq.path, payload)
        kv_params = answer.get("kv_transfer_params")
        if not isinstance(kv_params, dict):
            raise PrefillFailure(
                "no_kv_params", f"{url} answered without kv_transfer_params (is it a kv_producer?)"
            )
        return kv_params
