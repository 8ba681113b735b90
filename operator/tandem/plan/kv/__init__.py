"""KV connectors: one strategy module per ``spec.kvTransfer.connector`` value.

Adding a connector is one new module implementing :class:`KvStrategy` and one line in
``STRATEGIES`` (plus its settings block and admission rules in the API, and its hand-off in the
router's ``protocols/``).
"""

from __future__ import annotations

from collections.abc import Callable

from tandem.api.v1alpha1 import InferenceServiceSpec
from tandem.api.vocabulary import Connector
from tandem.plan.kv.base import KvStrategy, kv_config_json
from tandem.plan.kv.lmcache import LMCacheStrategy
from tandem.plan.kv.nixl import NixlStrategy
from tandem.plan.model import Owner

STRATEGIES: dict[Connector, Callable[[InferenceServiceSpec, Owner], KvStrategy]] = {
    Connector.LMCACHE: LMCacheStrategy,
    Connector.NIXL: NixlStrategy,
}


def kv_strategy(spec: InferenceServiceSpec, owner: Owner) -> KvStrategy:
    """The strategy of the spec's connector."""
    return STRATEGIES[spec.kv_transfer.connector](spec, owner)


__all__ = ["STRATEGIES", "KvStrategy", "kv_config_json", "kv_strategy"]
