"""The prefill-side engine calls both protocols make, with their failures classified.

Everything that goes wrong on the prefill side becomes `PrefillFailure(reason)`, the one signal
the dispatcher needs to apply `--on-prefill-failure` — except engine 4xx answers, which are the
client's fault and pass through unchanged (as llm-d's sidecar does).
"""

from __future__ import annotations

import asyncio

from tandem.api.vocabulary import Role
from tandem.router.errors import PrefillFailure
from tandem.router.jsonbody import JsonBody
from tandem.router.protocols.base import RouterContext
from tandem.router.request import ClientRequest
from tandem.router.upstream import (
    UpstreamServerError,
    UpstreamUnreachable,
    engine_headers,
    post_json,
)


async def call_prefill(
    ctx: RouterContext,
    creq: ClientRequest,
    url: str,
    path: str,
    payload: bytes,
    *,
    reason_prefix: str = "",
    role: Role = Role.PREFILL,
) -> JsonBody:
    """POST one prefill-side call within `--prefill-timeout` and return its JSON answer.

    A refused connection marks the engine unhealthy until its next good probe.
    `reason_prefix` distinguishes side calls (e.g. `tokenize_`) in the fallback metric.
    """
    timeout = ctx.config.effective_prefill_timeout
    try:
        async with asyncio.timeout(timeout):
            answer = await post_json(
                ctx.session, url + path, payload, engine_headers(creq.request_id, creq.headers)
            )
        ctx.alive(role, url)
        return answer
    except UpstreamUnreachable as exc:
        if exc.connect:
            ctx.pools[role].set_health(url, False)
        raise PrefillFailure(reason_prefix + "unreachable", f"{url}: {exc.detail}") from exc
    except UpstreamServerError as exc:
        raise PrefillFailure(
            reason_prefix + "server_error", f"{url}{path} answered {exc.status}: {exc.detail}"
        ) from exc
    except TimeoutError as exc:
        raise PrefillFailure(
            reason_prefix + "timeout", f"{url}{path} did not answer within {timeout:g}s"
        ) from exc
