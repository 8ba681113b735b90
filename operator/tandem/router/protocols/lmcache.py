"""LMCache's PD hand-off (dataplane.md §4.2), for `--connector lmcache`.

1. `POST /tokenize` (prompt, or messages for chat) on a decode engine: the prompt becomes token
   ids, and the exact count replaces the character estimate for `--min-prompt-tokens`.
2. Pick the decoder *first* (a decoder with a usable pair, `pairs.py`), then a prefiller whose
   pair with it is usable: the prefiller pushes the KV straight into that decoder's buffer, so
   its host and per-TP-rank init/alloc ports go into `disagg_spec`.
3. `POST /v1/completions` to the prefiller with the token ids, `max_tokens: 1`, `stream: false`
   and `kv_transfer_params: {ret_first_tok: true, disagg_spec: {...}}`; it answers with
   `kv_transfer_params.first_tok`.
4. Wait (bounded by `--kv-ready-timeout`) for the ZMQ ProxyNotifs (`kvready.py`): one per
   *sender* rank, `--kv-ready-notifications` (the prefill world size, TP x PP).
5. `POST /v1/completions` to the decoder with `prompt = token ids + [first_tok]`,
   `max_tokens - 1` and no `kv_transfer_params`; the client first gets the first token, then the
   decoder's output. Chat clients get everything reshaped into chat format (`chatshape.py`).

The first token's text is taken from the prefill answer (`choices[0].text`), which vLLM
detokenized in the context of the prompt; `/detokenize` on the prefiller is the fallback when the
answer has no text. A stand-alone detokenization of one token can drop a leading space with
SentencePiece tokenizers, so the in-context text is preferred.

Requests whose meaning a split first token would change (structured output, tools, logprobs,
echo) and requests that would never use the pushed KV (`max_tokens` <= 1, `n` > 1) are sent
decode-only before any prefill (`split.py`). A hand-off given up after the prefill pushed is
counted and drained in the background (`drain.py`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from tandem.api.vocabulary import Role
from tandem.router import sse
from tandem.router.endpoints import Endpoint, Lease
from tandem.router.errors import DecodeFailed, PrefillFailure
from tandem.router.kvready import KvReadyHub
from tandem.router.protocols.base import CANARY_PAIR, RouterContext, pair_outcome
from tandem.router.protocols.drain import DRAIN_CONCURRENCY, KvPush
from tandem.router.protocols.lmcache_legs import (
    CHAT_ONLY_KEYS,
    DETOKENIZE_PATH,
    TOKENIZE_CHAT_KEYS,
    TOKENIZE_PATH,
    decode_edit,
    disagg_spec,
    drain_payload,
    prefill_edit,
    requested_max_tokens,
    tokenize_edit,
    tokens_json,
)
from tandem.router.protocols.prefill import call_prefill
from tandem.router.protocols.relay import open_decode, upstream_chunks
from tandem.router.protocols.stitch import FirstToken, Stitcher, parse_first_token
from tandem.router.reply import Reply
from tandem.router.request import (
    COMPLETIONS_PATH,
    ClientRequest,
    estimate_prompt_tokens,
    prompt_token_ids,
)
from tandem.router.split import any_protocol_reason, first_token_split_reason

__all__ = [
    "CHAT_ONLY_KEYS",
    "TOKENIZE_CHAT_KEYS",
    "LmcacheHandoff",
    "decode_edit",
    "disagg_spec",
    "drain_payload",
    "prefill_edit",
    "requested_max_tokens",
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
        """The prefiller samples the first token: see `split.py`."""
        body = creq.body
        return any_protocol_reason(body, is_chat=creq.is_chat) or first_token_split_reason(body)

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
        """Reserve a decoder, prefill into it, wait for the KV, decode after the first token."""
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
        first, answer = await self._prefill(creq, prefill, push)
        stitch = Stitcher(
            completion_id=f"cmpl-{creq.request_id}",
            model=str(answer.get("model") or creq.body.get("model") or ""),
            created=int(answer.get("created") or time.time()),
            first_text=first.text or "",
            prompt_tokens=len(push.token_ids),
            is_chat=creq.is_chat,
        )
        wanted = requested_max_tokens(creq.body, is_chat=creq.is_chat)
        remaining = None if wanted is None else wanted - 1
        if first.finish_reason == "stop" or (remaining is not None and remaining <= 0):
            await self._answer_first_only(creq, reply, stitch, first.finish_reason)
            return
        prompt_json = tokens_json(push.token_ids, first.token)
        payload = decode_edit(creq.body, prompt_json, remaining, is_chat=creq.is_chat).payload(
            creq.parsed
        )
        timer = self._ctx.first_decode_byte(creq, started)

        def consumed() -> None:
            push.consumed = True
            timer()

        await self._decode(creq, reply, push.decoder, payload, stitch, consumed)

    async def _prefill(
        self, creq: ClientRequest, prefill: Lease, push: KvPush
    ) -> tuple[FirstToken, dict[str, Any]]:
        ctx, cfg = self._ctx, self._ctx.config
        ports = (cfg.decoder_init_ports, cfg.decoder_alloc_ports)
        spec = disagg_spec(push.req_id, push.decoder.host, *ports)
        edit = prefill_edit(tokens_json(push.token_ids), spec, is_chat=creq.is_chat)
        payload = edit.payload(creq.parsed)
        async with prefill:
            url = prefill.endpoint.url
            answer = (await call_prefill(ctx, creq, url, COMPLETIONS_PATH, payload)).values
        push.answered = True
        try:
            first = parse_first_token(answer)
        except ValueError as exc:
            raise PrefillFailure("no_first_token", f"{url}: {exc}") from exc
        push.first_token = first.token
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
        if first.text is None:
            detok = await call_prefill(
                ctx,
                creq,
                url,
                DETOKENIZE_PATH,
                sse.json_bytes({"model": creq.body.get("model"), "tokens": [first.token]}),
                reason_prefix="detokenize_",
            )
            text = detok.values.get("prompt")
            first = FirstToken(
                first.token, text if isinstance(text, str) else "", first.finish_reason
            )
        return first, answer

    async def _answer_first_only(
        self, creq: ClientRequest, reply: Reply, stitch: Stitcher, finish: str | None
    ) -> None:
        finish = finish or "length"
        if not creq.stream:
            reply.json(200, stitch.first_only(finish))
            return
        await reply.start_stream()
        await reply.write(stitch.first_only_events(finish))
        await reply.end_stream()

    async def _decode(
        self,
        creq: ClientRequest,
        reply: Reply,
        decoder: Endpoint,
        payload: bytes,
        stitch: Stitcher,
        on_first: Callable[[], None],
    ) -> None:
        async with open_decode(self._ctx, creq, decoder, COMPLETIONS_PATH, payload) as resp:
            if not creq.stream:
                try:
                    answer = json.loads(await resp.read())
                except (aiohttp.ClientError, OSError, ValueError) as exc:
                    raise DecodeFailed(f"decode engine gave no usable answer: {exc!r}") from exc
                on_first()
                if not isinstance(answer, dict):
                    raise DecodeFailed("decode engine answer is not a JSON object")
                reply.json(200, stitch.whole(answer))
                return
            await reply.start_stream()
            await reply.write(stitch.head_event())
            parser, done, first = sse.SseParser(), False, True
            async for chunk in upstream_chunks(resp):
                if first:
                    on_first()
                    first = False
                for event in parser.feed(chunk):
                    if event == sse.DONE:
                        done = True
                        await reply.write(sse.DONE_EVENT)
                        continue
                    try:
                        out = stitch.event(event)
                    except ValueError as exc:
                        raise DecodeFailed(f"decode engine sent a bad event: {exc}") from exc
                    await reply.write(out)
            if not done:
                raise DecodeFailed("decode stream ended before [DONE]")
        await reply.end_stream()
