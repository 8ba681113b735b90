"""The router's settings, validated once at start-up.

The command-line flags are a contract with the operator's builders (`build/router.py` generates
them), so this module mirrors them one to one and rejects inconsistent combinations early
(static *and* Kubernetes discovery, LMCache without decoder ports, …) instead of failing on the
first request.
"""

from __future__ import annotations

from dataclasses import dataclass

from tandem.api.vocabulary import Connector, PrefillFailurePolicy
from tandem.router.pick import PolicyName

__all__ = ["ConfigError", "Connector", "KubernetesSource", "PrefillFailurePolicy", "RouterConfig"]


class ConfigError(ValueError):
    """The flags contradict each other."""


@dataclass(frozen=True, slots=True)
class KubernetesSource:
    """Endpoints come from the EndpointSlices of two Services."""

    namespace: str
    prefill_service: str
    decode_service: str
    engine_port: int


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """Everything `tandem router` was told on its command line."""

    model: str
    connector: Connector = Connector.NIXL
    host: str = "0.0.0.0"
    port: int = 8000
    policy: PolicyName = PolicyName.LEAST_LOADED
    min_prompt_tokens: int = 0
    on_prefill_failure: PrefillFailurePolicy = PrefillFailurePolicy.FAIL
    request_timeout: float = 600.0
    #: Bound on the prefill engine call; None means half of `request_timeout`, so a hung
    #: prefiller still leaves time for the decode-only fallback.
    prefill_timeout: float | None = None
    max_inflight_per_engine: int = 256
    metrics_refresh_seconds: float = 0.0
    health_interval: float = 5.0
    kubernetes: KubernetesSource | None = None
    prefill_urls: tuple[str, ...] = ()
    decode_urls: tuple[str, ...] = ()
    kv_ready_port: int = 7500
    advertise_host: str = "127.0.0.1"
    decoder_init_ports: tuple[int, ...] = ()
    decoder_alloc_ports: tuple[int, ...] = ()
    #: How long to wait for LMCache's KV-ready notifications after the prefill answered.
    kv_ready_timeout: float = 10.0

    def __post_init__(self) -> None:
        # Accept the flag strings as well as the enums (tests and callers pass either).
        object.__setattr__(self, "connector", Connector(self.connector))
        object.__setattr__(self, "policy", PolicyName(self.policy))
        object.__setattr__(
            self, "on_prefill_failure", PrefillFailurePolicy(self.on_prefill_failure)
        )

    @property
    def effective_prefill_timeout(self) -> float:
        """The prefill-leg bound actually applied."""
        if self.prefill_timeout is not None:
            return self.prefill_timeout
        return self.request_timeout / 2

    def validate(self) -> RouterConfig:
        """Return self, or raise ConfigError naming the conflicting flags."""
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
        if self.connector is Connector.LMCACHE:
            if not self.decoder_init_ports or not self.decoder_alloc_ports:
                raise ConfigError(
                    "--connector lmcache needs --decoder-init-ports and --decoder-alloc-ports"
                )
            if len(self.decoder_init_ports) != len(self.decoder_alloc_ports):
                raise ConfigError(
                    "--decoder-init-ports and --decoder-alloc-ports need one entry per TP rank "
                    "each (same length)"
                )
        positive = {
            "--request-timeout": self.request_timeout,
            "--health-interval": self.health_interval,
            "--max-inflight-per-engine": self.max_inflight_per_engine,
            "--kv-ready-timeout": self.kv_ready_timeout,
        }
        for flag, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{flag} must be positive")
        if self.min_prompt_tokens < 0 or self.metrics_refresh_seconds < 0:
            raise ConfigError("--min-prompt-tokens and --metrics-refresh-seconds must be >= 0")
        if self.prefill_timeout is not None and self.prefill_timeout <= 0:
            raise ConfigError("--prefill-timeout must be positive")
        return self


def parse_ports(csv: str | None) -> tuple[int, ...]:
    """`7300,7301` → (7300, 7301); empty or None → ()."""
    if not csv:
        return ()
    try:
        ports = tuple(int(p) for p in csv.split(",") if p.strip())
    except ValueError as exc:
        raise ConfigError(f"not a comma-separated list of ports: {csv!r}") from exc
    if any(not 0 < p < 65536 for p in ports):
        raise ConfigError(f"port out of range in {csv!r}")
    return ports
