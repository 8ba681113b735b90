"""What every hand-off protocol gets to work with, and the interface it implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import aiohttp

from tandem.api.vocabulary import Role
from tandem.router.config import RouterConfig
from tandem.router.endpoints import EndpointPool, Lease, NoEndpointError
from tandem.router.errors import DecodeUnavailable, PrefillFailure
from tandem.router.metrics import RouterMetrics
from tandem.router.pick import Policy
from tandem.router.reply import Reply
from tandem.router.request import ClientRequest


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

    async def prefill_lease(self, creq: ClientRequest, tokens: int) -> Lease:
        """A prefill slot; no healthy prefiller is a prefill failure (fallback may apply)."""
        try:
            return await self.pools[Role.PREFILL].acquire(
                self.prefill_policy, tokens, creq.extras.get("prefix_hash")
            )
        except NoEndpointError as exc:
            raise PrefillFailure("no_endpoint", str(exc)) from exc

    async def decode_lease(self, creq: ClientRequest, tokens: int, *, direct: bool) -> Lease:
        """A decode slot; `direct` for the decode-only route (the decoder computes the prompt)."""
        policy = self.direct_policy if direct else self.decode_policy
        try:
            return await self.pools[Role.DECODE].acquire(
                policy, tokens, creq.extras.get("prefix_hash")
            )
        except NoEndpointError as exc:
            raise DecodeUnavailable(str(exc)) from exc


class Handoff(Protocol):
    """A KV hand-off protocol."""

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
