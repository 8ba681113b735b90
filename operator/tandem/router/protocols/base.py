"""What every hand-off protocol gets to work with, and the interface it implements.

Both protocols place a hand-off the same way (`RouterContext.handoff_decode_lease`, then
`handoff_prefill_lease`): the decoder first, among the decoders that have a usable pair with a
healthy prefiller (`pairs.PairBook`), then a prefiller whose pair with that decoder is usable.
A canary pins both ends (`CANARY_PAIR` in `ClientRequest.extras`). `pair_outcome` classifies how
the hand-off through the chosen pair ended and records it once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import aiohttp

from tandem.api.vocabulary import Role
from tandem.router.config import RouterConfig
from tandem.router.endpoints import EndpointPool, Lease, NoEndpointError
from tandem.router.errors import DecodeFailed, DecodeUnavailable, PrefillFailure
from tandem.router.metrics import RouterMetrics
from tandem.router.pairs import HandoffOutcome, Pair, PairBook
from tandem.router.pick import Policy
from tandem.router.reply import Reply
from tandem.router.request import ClientRequest

log = logging.getLogger(__name__)

#: `ClientRequest.extras` key: the (prefill, decode) URLs a canary must use.
CANARY_PAIR: Final = "canary_pair"
#: `ClientRequest.extras` key: the pair a hand-off went through.
PAIR: Final = "pair"
#: `ClientRequest.extras` key: how a canary's hand-off ended (a `HandoffOutcome`).
OUTCOME: Final = "handoff_outcome"


@dataclass(frozen=True, eq=False)
class RouterContext:
    """Shared, long-lived pieces of one router instance (no globals: tests run several).

    Three policies because the three picks want different things: the prefill pick and the
    decode-only pick (the engine computes the prompt) benefit from prefix affinity, while the
    decode leg of a hand-off only needs balance.
    """

    config: RouterConfig
    session: aiohttp.ClientSession
    pools: dict[Role, EndpointPool]
    metrics: RouterMetrics
    prefill_policy: Policy
    decode_policy: Policy
    direct_policy: Policy
    pairs: PairBook
    clock: Callable[[], float] = field(default=time.monotonic)
    #: Background tasks that outlive their request (LMCache drains); kept referenced.
    background: set[asyncio.Task[None]] = field(default_factory=set)

    async def decode_lease(self, creq: ClientRequest, tokens: int, *, direct: bool) -> Lease:
        """A decode slot; `direct` for the decode-only route (the decoder computes the prompt)."""
        policy = self.direct_policy if direct else self.decode_policy
        try:
            return await self.pools[Role.DECODE].acquire(
                policy, tokens, creq.extras.get("prefix_hash")
            )
        except NoEndpointError as exc:
            raise DecodeUnavailable(str(exc)) from exc

    # --- hand-off placement --------------------------------------------------------------

    def _hand_off_decoders(self) -> frozenset[str]:
        prefills = self.pools[Role.PREFILL].healthy_urls()
        decodes = self.pools[Role.DECODE].healthy_urls()
        if not decodes:
            raise DecodeUnavailable("no healthy decode endpoint")
        if not prefills:
            raise PrefillFailure("no_endpoint", "no healthy prefill endpoint")
        allowed = self.pairs.decoders_with_pair(prefills, decodes, self.clock())
        if not allowed:
            raise PrefillFailure(
                "no_verified_pair",
                "no prefill/decode pair has shown a working KV hand-off yet (canary)",
            )
        return allowed

    async def handoff_decode_lease(self, creq: ClientRequest, tokens: int) -> Lease:
        """The hand-off's decode slot, taken before any prefill work: a decoder with a usable
        pair (or the canary's decoder). Queues when all such decoders are full."""
        pinned: Pair | None = creq.extras.get(CANARY_PAIR)
        allowed = frozenset({pinned[1]}) if pinned else self._hand_off_decoders()
        try:
            return await self.pools[Role.DECODE].acquire(
                self.decode_policy, tokens, creq.extras.get("prefix_hash"), allowed=allowed
            )
        except NoEndpointError as exc:
            raise DecodeUnavailable(str(exc)) from exc

    async def handoff_prefill_lease(self, creq: ClientRequest, tokens: int, decoder: str) -> Lease:
        """A prefill slot on a prefiller whose pair with `decoder` is usable."""
        pinned: Pair | None = creq.extras.get(CANARY_PAIR)
        pool = self.pools[Role.PREFILL]
        if pinned:
            allowed = frozenset({pinned[0]})
        else:
            allowed = self.pairs.prefills_for(decoder, pool.healthy_urls(), self.clock())
        if not allowed:
            raise PrefillFailure("no_verified_pair", f"no usable prefill pair for {decoder}")
        try:
            return await pool.acquire(
                self.prefill_policy, tokens, creq.extras.get("prefix_hash"), allowed=allowed
            )
        except NoEndpointError as exc:
            raise PrefillFailure("no_endpoint", str(exc)) from exc

    # --- outcomes ------------------------------------------------------------------------

    def record(self, creq: ClientRequest, pair: Pair, outcome: HandoffOutcome) -> None:
        """Count a traffic hand-off's outcome for its pair (a canary's is kept for its runner)."""
        if CANARY_PAIR in creq.extras:
            creq.extras[OUTCOME] = outcome
            return
        self.pairs.record(pair, outcome, self.clock())

    def alive(self, role: Role, url: str) -> None:
        """An engine answered well: keep it in rotation even if its /health is slow."""
        self.pools[role].mark_alive(url, self.clock())

    def first_decode_byte(self, creq: ClientRequest, started: float) -> Callable[[], None]:
        """A callback for the decode leg's first token: observes `handoff_seconds` (streamed
        traffic only: a whole answer's first byte comes after its last token)."""

        def observe() -> None:
            if creq.stream and CANARY_PAIR not in creq.extras:
                self.metrics.handoff_seconds.observe(time.monotonic() - started)

        return observe

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` in the background, referenced until it ends; failures are logged."""
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("Failed background task", exc_info=task.exception())

    async def stop_background(self) -> None:
        """Cancel the background tasks (router shutdown)."""
        tasks = list(self.background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextmanager
def pair_outcome(ctx: RouterContext, creq: ClientRequest, pair: Pair) -> Iterator[None]:
    """Record how the hand-off through `pair` ended: ok, prefill_failed, kv_timeout or
    decode_failed. A cancelled hand-off (the client went away, `--request-timeout`), an engine
    4xx (the client's fault) and a router bug say nothing about the pair: not counted."""
    creq.extras[PAIR] = pair
    try:
        yield
    except PrefillFailure as failure:
        timeout = failure.reason == "kv_ready_timeout"
        outcome = HandoffOutcome.KV_TIMEOUT if timeout else HandoffOutcome.PREFILL_FAILED
        ctx.record(creq, pair, outcome)
        raise
    except (DecodeFailed, DecodeUnavailable):
        ctx.record(creq, pair, HandoffOutcome.DECODE_FAILED)
        raise
    ctx.record(creq, pair, HandoffOutcome.OK)


class Handoff(Protocol):
    """A KV hand-off protocol."""

    def decode_only_reason(self, creq: ClientRequest) -> str | None:
        """Why this request must not be split (`split.py`), or None."""
        ...

    async def measure(self, creq: ClientRequest) -> int | None:
        """Prompt tokens for selective disaggregation, or None if it cannot be disaggregated.

        May raise PrefillFailure (the LMCache protocol tokenizes on an engine).
        """
        ...

    async def disaggregated(self, creq: ClientRequest, reply: Reply, tokens: int) -> None:
        """Prefill on one engine, decode on another, answer through `reply`.

        Raises PrefillFailure before anything was sent to the client and before the decode leg
        started, so the caller may still fall back to decode-only.
        """
        ...
