"""Words shared by the API and the router's command line.

The router is started with flags the builders derive from the spec (``--connector``,
``--policy``, ``--on-prefill-failure``), so both sides must spell these values the same way.
They live here, with no pydantic import, so the router uses exactly the API's enums.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Role(StrEnum):
    """The two engine pools. One enum for the API, the plan, the renderers, the reconciler, the
    autoscaler and the router: a pool is never named by a bare string."""

    PREFILL = "prefill"
    DECODE = "decode"


ROLES: tuple[Role, Role] = (Role.PREFILL, Role.DECODE)

# The port `tandem router` listens on inside its pod (the router Service maps spec.router.port
# to it), so the API keeps every other router port off it.
ROUTER_CONTAINER_PORT: Final = 8000


class Connector(StrEnum):
    """Which KV hand-off protocol the engines speak (dataplane.md §4)."""

    LMCACHE = "lmcache"
    NIXL = "nixl"


class RouterPolicy(StrEnum):
    """How the router picks a prefill and a decode engine."""

    LEAST_LOADED = "least-loaded"
    ROUND_ROBIN = "round-robin"
    PREFIX_AWARE = "prefix-aware"


class PrefillFailurePolicy(StrEnum):
    """What the router does when the prefill leg fails."""

    FAIL = "fail"
    DECODE_ONLY = "decode-only"
