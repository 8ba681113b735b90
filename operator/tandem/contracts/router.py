"""``tandem router``'s command line as one typed value: :class:`RouterConfig`.

The operator builds a RouterConfig from the spec and renders it with :meth:`RouterConfig.to_args`
into the router Deployment's ``args``; the router parses them back with
:meth:`RouterConfig.from_args` (or, behind click, :meth:`RouterConfig.from_flags`). Each flag's
name, help text, default, wire form and bound are written once, as metadata on the dataclass
field (:mod:`tandem.contracts.flags`), and ``tandem router``'s click options are generated from
the same table (:data:`FLAGS`), so ``RouterConfig.from_args(c.to_args()) == c`` for every config.

A RouterConfig is validated when it is constructed (:meth:`RouterConfig.validate`, called once
from ``__post_init__``): one that exists is consistent, whichever side built it. Inconsistent
combinations (static *and* Kubernetes discovery, LMCache without decoder ports, ...) fail at
start-up, or in the operator before it renders them, instead of on the first request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field
from typing import Final

from tandem.api.vocabulary import (
    ROUTER_CONTAINER_PORT,
    Connector,
    PrefillFailurePolicy,
    RouterPolicy,
)
from tandem.contracts.flags import (
    BOOL,
    INT,
    PORTS,
    SECONDS,
    TEXT,
    URLS,
    Bound,
    ConfigError,
    Emit,
    Flag,
    arguments,
    by_connector,
    check_bounds,
    choice,
    flag,
    group,
    parse_ports,
    render_number,
    table,
    tokenize,
)

__all__ = [
    "FLAGS",
    "ROUTER_PORT",
    "ConfigError",
    "Flag",
    "KubernetesSource",
    "RouterConfig",
    "parse_ports",
    "render_number",
]

#: The router's HTTP port inside its pod (the Service port is ``spec.router.port``).
ROUTER_PORT: Final = ROUTER_CONTAINER_PORT

LMCACHE: Final = Connector.LMCACHE


@dataclass(frozen=True, slots=True)
class KubernetesSource:
    """Endpoints come from the EndpointSlices of two Services."""

    namespace: str = field(
        metadata=flag("--namespace", "Kubernetes mode: namespace of the Services.", TEXT)
    )
    prefill_service: str = field(
        metadata=flag("--prefill-service", "Kubernetes mode: prefill Service name.", TEXT)
    )
    decode_service: str = field(
        metadata=flag("--decode-service", "Kubernetes mode: decode Service name.", TEXT)
    )
    engine_port: int = field(
        default=8000, metadata=flag("--engine-port", "Kubernetes mode: engine HTTP port.", INT)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RouterConfig:
    """Everything ``tandem router`` is told on its command line.

    Field order is flag order: :meth:`to_args` writes the flags in this order, which is the
    order of the router Deployment's ``args``.
    """

    host: str = field(
        default="0.0.0.0", metadata=flag("--host", "Address to listen on.", TEXT, Emit.ALWAYS)
    )
    port: int = field(
        default=ROUTER_PORT, metadata=flag("--port", "Port to listen on.", INT, Emit.ALWAYS)
    )
    model: str = field(
        metadata=flag("--model", "Served model name (the OpenAI `model`).", TEXT, Emit.ALWAYS)
    )
    connector: Connector = field(
        default=Connector.LMCACHE,
        metadata=flag("--connector", "KV hand-off protocol.", choice(Connector), Emit.ALWAYS),
    )
    policy: RouterPolicy = field(
        default=RouterPolicy.LEAST_LOADED,
        metadata=flag("--policy", "Engine pick.", choice(RouterPolicy), Emit.ALWAYS),
    )
    min_prompt_tokens: int = field(
        default=0,
        metadata=flag(
            "--min-prompt-tokens",
            "Prompts with fewer (estimated: 4 chars/token; LMCache: exact) tokens skip prefill.",
            INT,
            Emit.ALWAYS,
            bound=Bound.NON_NEGATIVE,
        ),
    )
    on_prefill_failure: PrefillFailurePolicy = field(
        default=PrefillFailurePolicy.FAIL,
        metadata=flag(
            "--on-prefill-failure",
            "fail: answer 503; decode-only: send the request to a decode engine without KV.",
            choice(PrefillFailurePolicy),
            Emit.ALWAYS,
        ),
    )
    request_timeout: float = field(
        default=600.0,
        metadata=flag(
            "--request-timeout",
            "Per-request total seconds.",
            SECONDS,
            Emit.ALWAYS,
            bound=Bound.POSITIVE,
        ),
    )
    #: Bound on the prefill engine call; None means half of `request_timeout`, so a hung
    #: prefiller still leaves time for the decode-only fallback.
    prefill_timeout: float | None = field(
        default=None,
        metadata=flag(
            "--prefill-timeout",
            "Seconds for the prefill engine call [default: half of --request-timeout].",
            SECONDS,
            bound=Bound.POSITIVE,
        ),
    )
    max_inflight_per_engine: int = field(
        default=256,
        metadata=flag(
            "--max-inflight-per-engine",
            "Requests per engine before new ones queue (FIFO) in the router.",
            INT,
            Emit.ALWAYS,
            bound=Bound.POSITIVE,
        ),
    )
    metrics_refresh_seconds: float = field(
        default=0.0,
        metadata=flag(
            "--metrics-refresh-seconds",
            "Scrape engines' /metrics this often to blend their load in (0 = off).",
            SECONDS,
            bound=Bound.NON_NEGATIVE,
        ),
    )
    health_interval: float = field(
        default=5.0,
        metadata=flag(
            "--health-interval",
            "Seconds between /health probes.",
            SECONDS,
            bound=Bound.POSITIVE,
        ),
    )
    #: Kubernetes mode; its flags are all written whenever it is set.
    kubernetes: KubernetesSource | None = field(
        default=None, metadata=group(KubernetesSource, "Kubernetes mode")
    )
    prefill_urls: tuple[str, ...] = field(
        default=(),
        metadata=flag("--prefill", "Static mode: a prefill engine URL (repeatable).", URLS),
    )
    decode_urls: tuple[str, ...] = field(
        default=(),
        metadata=flag("--decode", "Static mode: a decode engine URL (repeatable).", URLS),
    )
    kv_ready_port: int = field(
        default=7500,
        metadata=flag(
            "--kv-ready-port", "LMCache: this router's ZMQ PULL port.", INT, connector=LMCACHE
        ),
    )
    advertise_host: str = field(
        default="127.0.0.1",
        metadata=flag(
            "--advertise-host",
            "LMCache: this replica's reachable address (pod IP), encoded into request ids.",
            TEXT,
            connector=LMCACHE,
        ),
    )
    decoder_init_ports: tuple[int, ...] = field(
        default=(),
        metadata=flag(
            "--decoder-init-ports",
            "LMCache: per-TP-rank init ports (CSV).",
            PORTS,
            connector=LMCACHE,
        ),
    )
    decoder_alloc_ports: tuple[int, ...] = field(
        default=(),
        metadata=flag(
            "--decoder-alloc-ports",
            "LMCache: per-TP-rank alloc ports (CSV).",
            PORTS,
            connector=LMCACHE,
        ),
    )
    #: How long to wait for LMCache's KV-ready notifications after the prefill answered.
    kv_ready_timeout: float = field(
        default=10.0,
        metadata=flag(
            "--kv-ready-timeout",
            "LMCache: seconds to wait for KV-ready notifications after the prefill answered.",
            SECONDS,
            bound=Bound.POSITIVE,
        ),
    )
    #: How many ProxyNotifs one LMCache hand-off produces: one per *sender* rank, so the prefill
    #: engine's world size (tensor x pipeline; LMCache runs with ``save_only_first_rank: false``).
    #: None keeps the old count, one per decoder rank (``len(decoder_init_ports)``).
    kv_ready_notifications: int | None = field(
        default=None,
        metadata=flag(
            "--kv-ready-notifications",
            "LMCache: KV-ready notifications per hand-off, the prefill world size (TP x PP) "
            "[default: one per --decoder-init-ports entry].",
            INT,
            bound=Bound.POSITIVE,
        ),
    )
    canary: bool = field(
        default=True,
        metadata=flag(
            "--canary",
            "Send one tiny hand-off through each new prefill/decode pair and check that the "
            "decoder received KV (true/false).",
            BOOL,
        ),
    )
    require_verified_pairs: bool = field(
        default=True,
        metadata=flag(
            "--require-verified-pairs",
            "With --canary: a pair takes traffic only once its canary passed (false: also "
            "until its first canary finished).",
            BOOL,
        ),
    )
    pair_retry_seconds: float = field(
        default=30.0,
        metadata=flag(
            "--pair-retry-seconds",
            "Seconds between canaries of a broken pair (without --canary: before a broken "
            "pair gets traffic again).",
            SECONDS,
            bound=Bound.POSITIVE,
        ),
    )

    def __post_init__(self) -> None:
        # Callers may pass the flag strings for the enums ("lmcache"); store the enums.
        for row in FLAGS:
            if row.codec.choices and row.group is None:
                try:
                    object.__setattr__(self, row.attr, row.codec.parse(row.value(self)))
                except ValueError:
                    choices = ", ".join(row.codec.choices)
                    raise ConfigError(f"{row.name} must be one of: {choices}") from None
        self.validate()

    @property
    def effective_prefill_timeout(self) -> float:
        """The prefill-leg bound actually applied."""
        if self.prefill_timeout is not None:
            return self.prefill_timeout
        return self.request_timeout / 2

    @property
    def expected_kv_notifications(self) -> int:
        """ProxyNotifs that make one LMCache hand-off complete."""
        if self.kv_ready_notifications is not None:
            return self.kv_ready_notifications
        return len(self.decoder_init_ports)

    def validate(self) -> RouterConfig:
        """Return self, or raise ConfigError naming the conflicting flags.

        Runs once, from ``__post_init__``: callers never need to call it.
        """
        if not self.model:
            raise ConfigError("--model must not be empty")
        self._check_endpoints()
        self._check_connector_flags()
        check_bounds(self, FLAGS)
        return self

    def _check_endpoints(self) -> None:
        static = bool(self.prefill_urls or self.decode_urls)
        if static and self.kubernetes is not None:
            raise ConfigError("use either --prefill/--decode or --namespace/--*-service, not both")
        if not static and self.kubernetes is None:
            raise ConfigError(
                "no endpoints: pass --prefill URL and --decode URL, or --namespace with "
                "--prefill-service and --decode-service"
            )
        if static and not (self.prefill_urls and self.decode_urls):
            raise ConfigError("static mode needs at least one --prefill and one --decode URL")
        for url in (*self.prefill_urls, *self.decode_urls):
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"endpoint URL must start with http:// or https://: {url}")

    def _check_connector_flags(self) -> None:
        """The chosen connector's flags without a usable default must be given."""
        missing = [row.name for row in _OWNED.get(self.connector, ()) if row.value(self) == ()]
        if missing:
            raise ConfigError(f"--connector {self.connector} needs {' and '.join(missing)}")
        if len(self.decoder_init_ports) != len(self.decoder_alloc_ports):
            raise ConfigError(
                "--decoder-init-ports and --decoder-alloc-ports need one entry per TP rank "
                "each (same length)"
            )

    # -- the wire form ----------------------------------------------------------------------

    def to_args(self) -> list[str]:
        """The command line that :meth:`from_args` parses back into this config.

        Flags marked :attr:`Emit.ALWAYS` are written even at their defaults (the operator's
        Deployments have always carried them), as are the chosen connector's flags; the rest
        only when they differ from their defaults.
        """
        owned = _OWNED.get(self.connector, ())
        args: list[str] = []
        for row in FLAGS:
            value = row.value(self)
            if value is MISSING:  # a group that is not set
                continue
            if row.emit is Emit.ALWAYS or row in owned or value != row.default:
                args += row.render(value)
        return args

    @classmethod
    def from_args(cls, argv: Sequence[str]) -> RouterConfig:
        """Parse ``--flag value`` / ``--flag=value`` pairs (raises ConfigError).

        As with click, a single-valued flag given twice keeps its last value.
        """
        return cls.from_flags(tokenize(argv, _BY_NAME))

    @classmethod
    def from_flags(cls, given: Mapping[str, Sequence[str]]) -> RouterConfig:
        """Build from ``{flag name: the texts given for it}``; absent flags take the defaults."""
        return cls(**arguments(cls, FLAGS, given))


#: Every flag of ``tandem router`` that RouterConfig carries, in command-line order.
FLAGS: Final[tuple[Flag, ...]] = table(RouterConfig)
_BY_NAME: Final = {row.name: row for row in FLAGS}
#: The flags each connector owns (written whenever it is chosen).
_OWNED: Final = by_connector(FLAGS)
