"""The router's settings: the command-line contract it shares with the operator.

`RouterConfig` lives in `tandem.contracts.router`, next to its flag table, because the operator
renders the same value into the router Deployment's args that the router parses here; this
module re-exports it (and the words it is built from) under the router's own package.
"""

from __future__ import annotations

from tandem.api.vocabulary import Connector, PrefillFailurePolicy
from tandem.contracts.router import ConfigError, KubernetesSource, RouterConfig, parse_ports

__all__ = [
    "ConfigError",
    "Connector",
    "KubernetesSource",
    "PrefillFailurePolicy",
    "RouterConfig",
    "parse_ports",
]
