"""LMCache's PD hand-off (dataplane.md §4.2), for `--connector lmcache`.

1. `POST /tokenize` (prompt, or messages for chat) on a decode engine: the prompt becomes token
   ids, and the exact count replaces the character estimate for `--min-prompt-tokens`.
2. Pick the decoder *first*: the prefiller pushes the KV straight into that decoder's buffer, so
   its host and per-TP-rank init/alloc ports go into `disagg_spec`.
3. `POST /v1/completions` to the prefiller with the token ids, `max_tokens: 1`, `stream: false`
   and `kv_transfer_params: {ret_first_tok: true, disagg_spec: {...}}`; it answers with
   `kv_transfer_params.first_tok`.
4. Wait (bounded by `--kv-ready-timeout`) for one ZMQ ProxyNotif per TP rank (`kvready.py`).
5. `POST /v1/completions` to the decoder with `prompt = token ids + [first_tok]`,
   `max_tokens - 1` and no `kv_transfer_params`; the client first gets the first token, then the
   decoder's output. Chat clients get everything reshaped into chat format (`chatshape.py`).

The first token's text is taken from the prefill answer (`choices[0].text`), which vLLM
detokenized in the context of the prompt; `/detokenize` on the prefiller is the fallback when the
answer has no text. A stand-alone detokenization of one token can drop a leading space with
SentencePiece tokenizers, so the in-context text is preferred.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, Final

import aiohttp

from tandem.api.vocabulary import Role
from tandem.router import sse
from tandem.router.endpoints import Endpoint
from tandem.router.errors import DecodeFailed, PrefillFailure
from tandem.router.jsonbody import Edit
from tandem.router.kvready import KvReadyHub
from tandem.router.protocols.base import RouterContext
from tandem.router.protocols.prefill import call_prefill
from tandem.router.protocols.relay import open_decode, upstream_chunks
from tandem.router.protocols.stitch import FirstToken, Stitcher, parse_first_token
from tandem.router.reply import Reply
from tandem.router.request import (
    COMPLETIONS_PATH,
    DEFAULT_COMPLETION_MAX_TOKENS,
    ClientRequest,
    estimate_prompt_tokens,
    prompt_text,
    prompt_token_ids,
)

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


# --- pure request builders ----------------------------------------------------------------


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


# --- the protocol -------------------------------------------------------------------------


class LmcacheHandoff:
    """The LMCache PD protocol over a router context and a KV-ready hub."""

    def __init__(self, ctx: RouterContext, hub: KvReadyHub) -> None:
        self._ctx = ctx
        self._hub = hub

    async def measure(self, creq: ClientRequest) -> int | None:
        """Exact prompt tokens from `/tokenize` (kept for the legs), or None for batches."""
        ids = None if creq.is_chat else prompt_token_ids(creq.body)
        if ids is None:
            if estimate_prompt_tokens(creq.body, is_chat=creq.is_chat) is None:
                return None
            ids = await self._tokenize(creq)
        creq.extras["token_ids"] = ids
        return len(ids)

    async def _tokenize(self, creq: ClientRequest) -> list[int]:
        ctx = self._ctx
        role, endpoint = Role.DECODE, ctx.pools[Role.DECODE].choose(ctx.decode_policy)
        if endpoint is None:
            role, endpoint = Role.PREFILL, ctx.pools[Role.PREFILL].choose(ctx.prefill_policy)
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
        token_ids: list[int] = creq.extras["token_ids"]
        started = time.monotonic()
        async with await ctx.decode_lease(creq, tokens, direct=False) as lease:
            first, answer = await self._prefill(creq, token_ids, lease.endpoint)
            ctx.metrics.handoff_seconds.observe(time.monotonic() - started)
            stitch = Stitcher(
                completion_id=f"cmpl-{creq.request_id}",
                model=str(answer.get("model") or creq.body.get("model") or ""),
                created=int(answer.get("created") or time.time()),
                first_text=first.text or "",
                prompt_tokens=len(token_ids),
                is_chat=creq.is_chat,
            )
            wanted = requested_max_tokens(creq.body, is_chat=creq.is_chat)
            remaining = None if wanted is None else wanted - 1
            if first.finish_reason == "stop" or (remaining is not None and remaining <= 0):
                await self._answer_first_only(creq, reply, stitch, first.finish_reason)
                return
            prompt_json = tokens_json(token_ids, first.token)
            edit = decode_edit(creq.body, prompt_json, remaining, is_chat=creq.is_chat)
            await self._decode(creq, reply, lease.endpoint, edit.payload(creq.parsed), stitch)

    async def _prefill(
        self, creq: ClientRequest, token_ids: list[int], decoder: Endpoint
    ) -> tuple[FirstToken, dict[str, Any]]:
        ctx, cfg, hub = self._ctx, self._ctx.config, self._hub
        req_id = hub.new_req_id(uuid.uuid4().hex)
        spec = disagg_spec(req_id, decoder.host, cfg.decoder_init_ports, cfg.decoder_alloc_ports)
        edit = prefill_edit(tokens_json(token_ids), spec, is_chat=creq.is_chat)
        payload = edit.payload(creq.parsed)
        with hub.expect(req_id, len(cfg.decoder_init_ports)) as waiter:
            async with await ctx.prefill_lease(creq, len(token_ids)) as lease:
                url = lease.endpoint.url
                answer = (await call_prefill(ctx, creq, url, COMPLETIONS_PATH, payload)).values
            try:
                first = parse_first_token(answer)
            except ValueError as exc:
                raise PrefillFailure("no_first_token", f"{url}: {exc}") from exc
            try:
                async with asyncio.timeout(cfg.kv_ready_timeout):
                    await waiter.wait()
            except TimeoutError as exc:
                raise PrefillFailure(
                    "kv_ready_timeout",
                    f"{waiter.received} of {waiter.expected} KV-ready notifications for "
                    f"{req_id} within {cfg.kv_ready_timeout:g}s",
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
        self, creq: ClientRequest, reply: Reply, decoder: Endpoint, payload: bytes, stitch: Stitcher
    ) -> None:
        async with open_decode(self._ctx, creq, decoder, COMPLETIONS_PATH, payload) as resp:
            if not creq.stream:
                try:
                    answer = json.loads(await resp.read())
                except (aiohttp.ClientError, OSError, ValueError) as exc:
                    raise DecodeFailed(f"decode engine gave no usable answer: {exc!r}") from exc
                if not isinstance(answer, dict):
                    raise DecodeFailed("decode engine answer is not a JSON object")
                reply.json(200, stitch.whole(answer))
                return
            await reply.start_stream()
            await reply.write(stitch.head_event())
            parser, done = sse.SseParser(), False
            async for chunk in upstream_chunks(resp):
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
