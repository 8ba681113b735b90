"""LMCache's PD hand-off (dataplane.md §4.2), for `--connector lmcache`.

1. `POST /tokenize` (prompt, or messages for chat) on a decode engine: the prompt becomes token
   ids, and the exact count replaces the character estimate for `--min-prompt-tokens`.
2. Pick the decoder *first* (a decoder with a usable pair, `pairs.py`), then a prefiller whose
   pair with it is usable: the prefiller pushes the KV straight into that decoder's buffer, so
   its host and per-TP-rank init/alloc ports go into `disagg_spec`.
3. `POST /v1/completions` to the prefiller with the token ids, `max_tokens: 1`, `stream: false`
   and `kv_transfer_params: {disagg_spec: {...}}`. Its one token is thrown away.
4. Wait (bounded by `--kv-ready-timeout`) for the ZMQ ProxyNotifs (`kvready.py`): one per
   *sender* rank, `--kv-ready-notifications` (the prefill world size, TP x PP).
5. Send the decoder the client's own request on the client's path (`relay.py`, passed through
   byte for byte): a completion with its prompt replaced by the token ids, a chat request as it
   is (the decoder renders the messages into the ids `/tokenize` gave). Its LMCache
   (`skip_last_n_tokens: 0`) looks up the whole prompt, loads every pushed chunk, and vLLM
   recomputes only the last prompt token (LMCache's full-hit `recalc_last`), so the decoder
   samples every token itself (review A9): structured output, tools, logprobs and stop strings
   mean what they mean on one engine, and no first token is stitched in.

Requests that would never use the pushed KV (`max_tokens` <= 1, `n` > 1, `prompt_logprobs`) or
whose echo the token-id prompt would change are sent decode-only before any prefill
(`split.py`). A hand-off given up after the prefill pushed is counted and drained in the
background (`drain.py`).
"""

from __future__ import annotations

import asyncio
import time

from tandem.api.vocabulary import Role
from tandem.router.endpoints import Endpoint, Lease
from tandem.router.errors import PrefillFailure
from tandem.router.kvready import KvReadyHub
from tandem.router.protocols.base import CANARY_PAIR, RouterContext, pair_outcome
from tandem.router.protocols.drain import DRAIN_CONCURRENCY, KvPush
from tandem.router.protocols.lmcache_legs import (
    CHAT_ONLY_KEYS,
    TOKENIZE_CHAT_KEYS,
    TOKENIZE_PATH,
    decode_edit,
    disagg_spec,
    drain_payload,
    prefill_edit,
    tokenize_edit,
    tokens_json,
)
from tandem.router.protocols.prefill import call_prefill
from tandem.router.protocols.relay import relay_decode
from tandem.router.reply import Reply
from tandem.router.request import (
    COMPLETIONS_PATH,
    ClientRequest,
    estimate_prompt_tokens,
    prompt_token_ids,
)
from tandem.router.split import any_protocol_reason, token_prompt_reason

__all__ = [
    "CHAT_ONLY_KEYS",
    "TOKENIZE_CHAT_KEYS",
    "LmcacheHandoff",
    "decode_edit",
    "disagg_spec",
    "drain_payload",
    "prefill_edit",
    "tokenize_edit",
    "tokens_json",
]


class LmcacheHandoff:
    """The LMCache PD protocol over a router context and a KV-ready hub."""

    def __init__(self, ctx: RouterContext, hub: KvReadyHub) -> None:
        self._ctx = ctx
        self._hub = hub
        self._drains = asyncio.Semaphore(DRAIN_CONCURRENCY)

    def decode_only_reason(self, creq: ClientRequest) -> str | None:
        """The decoder samples every token; see `split.py` for what still cannot split."""
        body, chat = creq.body, creq.is_chat
        return any_protocol_reason(body, is_chat=chat) or token_prompt_reason(body, is_chat=chat)

    async def measure(self, creq: ClientRequest) -> int | None:
        """Exact prompt tokens from `/tokenize` (kept for the legs), or None for batches."""
        ids = None if creq.is_chat else prompt_token_ids(creq.body)
        if ids is None:
            if estimate_prompt_tokens(creq.body, is_chat=creq.is_chat) is None:
                return None
            ids = await self._tokenize(creq)
        creq.extras["token_ids"] = ids
        return len(ids)

    def _tokenizer(self, creq: ClientRequest) -> tuple[Role, Endpoint | None]:
        ctx = self._ctx
        pinned = creq.extras.get(CANARY_PAIR)
        if pinned is not None:  # a canary tokenizes on its own decoder
            return Role.DECODE, ctx.pools[Role.DECODE].endpoints.get(pinned[1])
        endpoint = ctx.pools[Role.DECODE].choose(ctx.decode_policy)
        if endpoint is not None:
            return Role.DECODE, endpoint
        return Role.PREFILL, ctx.pools[Role.PREFILL].choose(ctx.prefill_policy)

    async def _tokenize(self, creq: ClientRequest) -> list[int]:
        ctx = self._ctx
        role, endpoint = self._tokenizer(creq)
        if endpoint is None:
            raise PrefillFailure("no_endpoint", "no healthy engine to tokenize on")
        payload = tokenize_edit(creq.body, is_chat=creq.is_chat).payload(creq.parsed)
        answer = await call_prefill(
            ctx, creq, endpoint.url, TOKENIZE_PATH, payload, reason_prefix="tokenize_", role=role
        )
        tokens = answer.values.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise PrefillFailure("tokenize_invalid", f"{endpoint.url}/tokenize gave no tokens")
        return tokens

    async def disaggregated(self, creq: ClientRequest, reply: Reply, tokens: int) -> None:
        """Reserve a decoder, prefill into it, wait for the KV, then relay the decoder."""
        ctx = self._ctx
        started = time.monotonic()
        async with await ctx.handoff_decode_lease(creq, tokens) as decode:
            prefill = await ctx.handoff_prefill_lease(creq, tokens, decode.endpoint.url)
            with pair_outcome(ctx, creq, (prefill.endpoint.url, decode.endpoint.url)):
                push = KvPush(
                    ctx,
                    self._hub,
                    decode.endpoint,
                    creq.extras["token_ids"],
                    creq.body.get("model"),
                    self._drains,
                )
                error: BaseException | None = None
                try:
                    await self._handoff(creq, reply, prefill, push, started)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    push.finish(error)

    async def _handoff(
        self, creq: ClientRequest, reply: Reply, prefill: Lease, push: KvPush, started: float
    ) -> None:
        prompt_json = tokens_json(push.token_ids)
        await self._prefill(creq, prefill, push, prompt_json)
        payload = decode_edit(prompt_json, is_chat=creq.is_chat).payload(creq.parsed)
        timer = self._ctx.first_decode_byte(creq, started)

        def consumed() -> None:
            push.consumed = True
            timer()

        await relay_decode(self._ctx, creq, push.decoder, payload, reply, on_first=consumed)

    async def _prefill(
        self, creq: ClientRequest, prefill: Lease, push: KvPush, prompt_json: str
    ) -> None:
        ctx, cfg = self._ctx, self._ctx.config
        ports = (cfg.decoder_init_ports, cfg.decoder_alloc_ports)
        spec = disagg_spec(push.req_id, push.decoder.host, *ports)
        payload = prefill_edit(prompt_json, spec, is_chat=creq.is_chat).payload(creq.parsed)
        async with prefill:
            await call_prefill(ctx, creq, prefill.endpoint.url, COMPLETIONS_PATH, payload)
        push.answered = True
        waiter = push.waiter
        try:
            async with asyncio.timeout(cfg.kv_ready_timeout):
                await waiter.wait()
        except TimeoutError as exc:
            raise PrefillFailure(
                "kv_ready_timeout",
                f"{waiter.received} of {waiter.expected} KV-ready notifications for "
                f"{push.req_id} within {cfg.kv_ready_timeout:g}s",
            ) from exc
