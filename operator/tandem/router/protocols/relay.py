"""The decode leg shared by both protocols, and the decode-only route.

The NIXL decode leg and the decode-only route relay the decoder's answer byte for byte (no JSON
parsing of the stream, no buffering), which is what keeps the router's added latency in the
single-digit milliseconds. The LMCache decode leg needs to rewrite events and builds on
`open_decode()` instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiohttp

from tandem.api.vocabulary import Role
from tandem.router.endpoints import Endpoint
from tandem.router.errors import DecodeFailed, DecodeUnavailable
from tandem.router.protocols.base import RouterContext
from tandem.router.reply import Reply
from tandem.router.request import ClientRequest, Route, estimate_prompt_tokens
from tandem.router.upstream import (
    UpstreamServerError,
    UpstreamUnreachable,
    engine_headers,
    open_post,
)


@asynccontextmanager
async def open_decode(
    ctx: RouterContext, creq: ClientRequest, endpoint: Endpoint, path: str, payload: bytes
) -> AsyncIterator[aiohttp.ClientResponse]:
    """POST to a decoder; failures become the client-facing decode errors.

    A refused connection also marks the decoder unhealthy until its next good probe; an
    answer read to its end marks it alive (`EndpointPool.mark_alive`).
    """
    try:
        async with open_post(
            ctx.session,
            endpoint.url + path,
            payload,
            engine_headers(creq.request_id, creq.headers),
        ) as resp:
            yield resp
            ctx.alive(Role.DECODE, endpoint.url)
    except UpstreamUnreachable as exc:
        if exc.connect:
            ctx.pools[Role.DECODE].set_health(endpoint.url, False)
            raise DecodeUnavailable(f"decode engine unreachable: {exc.detail}") from exc
        raise DecodeFailed(f"decode engine broke off its answer: {exc.detail}") from exc
    except UpstreamServerError as exc:
        raise DecodeFailed(f"decode engine answered {exc.status}: {exc.detail}") from exc


async def relay_decode(
    ctx: RouterContext,
    creq: ClientRequest,
    endpoint: Endpoint,
    payload: bytes,
    reply: Reply,
    *,
    on_first: Callable[[], None] | None = None,
) -> None:
    """Send `payload` to the decoder on the client's path and pass its answer through;
    `on_first` is called when the first byte of the answer's body arrives."""
    async with open_decode(ctx, creq, endpoint, creq.path, payload) as resp:
        if not creq.stream:
            try:
                body = await resp.read()
            except (aiohttp.ClientError, OSError) as exc:
                raise DecodeFailed(f"decode engine broke off its answer: {exc!r}") from exc
            if on_first is not None:
                on_first()
            reply.body(resp.status, body, resp.headers.get("Content-Type", "application/json"))
            return
        await reply.start_stream(resp.headers.get("Content-Type", "text/event-stream"))
        async for chunk in upstream_chunks(resp):
            if on_first is not None:
                on_first()
                on_first = None
            await reply.write(chunk)
    await reply.end_stream()


async def upstream_chunks(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The decoder's body as it arrives; a broken stream becomes DecodeFailed.

    Only reads are wrapped: a failed write to the client (it went away) must not be reported
    as a decoder failure.
    """
    try:
        async for chunk in resp.content.iter_any():
            yield chunk
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
        raise DecodeFailed(f"decode engine broke off its stream: {exc!r}") from exc


async def decode_only(ctx: RouterContext, creq: ClientRequest, reply: Reply) -> None:
    """Send the client's request unchanged to one decode engine (no KV hand-off).

    Used for prompts under `--min-prompt-tokens`, for batches, and as the prefill fallback.
    """
    tokens = estimate_prompt_tokens(creq.body, is_chat=creq.is_chat) or 0
    if creq.route is Route.DISAGGREGATED:
        creq.route = Route.DECODE_ONLY
    async with await ctx.decode_lease(creq, tokens, direct=True) as lease:
        await relay_decode(ctx, creq, lease.endpoint, creq.raw, reply)
