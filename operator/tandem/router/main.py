"""`tandem router`: the command line of the P/D router.

The flags are a fixed contract with the operator's builders, which generate exactly these; the lead
mounts `router_command` as `tandem router`, and `python -m tandem.router` runs it stand-alone.
Two optional extras beyond the contract, both with safe defaults: `--prefill-timeout` and
`--kv-ready-timeout`, plus `--log-level`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

import click

from tandem.router.config import (
    ConfigError,
    Connector,
    KubernetesSource,
    PrefillFailurePolicy,
    RouterConfig,
    parse_ports,
)
from tandem.router.pick import PolicyName

log = logging.getLogger(__name__)

_STANDARD_RECORD_KEYS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class KeyValueFormatter(logging.Formatter):
    """Kubernetes-style logs: the message, then the record's `extra` fields as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD_RECORD_KEYS}
        if extras:
            line += " " + " ".join(f"{k}={v!r}" for k, v in extras.items())
        return line


def setup_logging(level: str) -> None:
    """Log to stderr with key=value extras."""
    handler = logging.StreamHandler()
    handler.setFormatter(KeyValueFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def build_config(**opts: Any) -> RouterConfig:
    """Turn parsed flags into a validated RouterConfig (raises ConfigError)."""
    k8s_flags = (opts["namespace"], opts["prefill_service"], opts["decode_service"])
    kubernetes = None
    if any(k8s_flags):
        if not all(k8s_flags):
            raise ConfigError(
                "Kubernetes mode needs --namespace, --prefill-service and --decode-service"
            )
        kubernetes = KubernetesSource(
            namespace=opts["namespace"],
            prefill_service=opts["prefill_service"],
            decode_service=opts["decode_service"],
            engine_port=opts["engine_port"],
        )
    return RouterConfig(
        model=opts["model"],
        connector=Connector(opts["connector"]),
        host=opts["host"],
        port=opts["port"],
        policy=PolicyName(opts["policy"]),
        min_prompt_tokens=opts["min_prompt_tokens"],
        on_prefill_failure=PrefillFailurePolicy(opts["on_prefill_failure"]),
        request_timeout=opts["request_timeout"],
        prefill_timeout=opts["prefill_timeout"],
        max_inflight_per_engine=opts["max_inflight_per_engine"],
        metrics_refresh_seconds=opts["metrics_refresh_seconds"],
        health_interval=opts["health_interval"],
        kubernetes=kubernetes,
        prefill_urls=tuple(opts["prefill"]),
        decode_urls=tuple(opts["decode"]),
        kv_ready_port=opts["kv_ready_port"],
        advertise_host=opts["advertise_host"],
        decoder_init_ports=parse_ports(opts["decoder_init_ports"]),
        decoder_alloc_ports=parse_ports(opts["decoder_alloc_ports"]),
        kv_ready_timeout=opts["kv_ready_timeout"],
    ).validate()


async def serve(config: RouterConfig) -> None:
    """Run a router until SIGTERM or SIGINT."""
    from tandem.router.app import Router

    discovery = None
    if config.kubernetes is not None:
        from tandem.router.discovery import KubernetesDiscovery

        discovery = KubernetesDiscovery(config.kubernetes)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Router(config, discovery=discovery):
        log.info("Serving", extra={"event_loop": type(loop).__module__})
        await stop.wait()
        log.info("Received signal to stop")


def _choice(enum: type[Any]) -> click.Choice[str]:
    return click.Choice([e.value for e in enum])


@click.command("router", context_settings={"show_default": True, "max_content_width": 100})
@click.option("--host", default="0.0.0.0", help="Address to listen on.")
@click.option("--port", default=8000, type=int, help="Port to listen on.")
@click.option("--model", required=True, help="Served model name (the OpenAI `model`).")
@click.option("--connector", type=_choice(Connector), default="nixl", help="KV hand-off protocol.")
@click.option("--policy", type=_choice(PolicyName), default="least-loaded", help="Engine pick.")
@click.option(
    "--min-prompt-tokens",
    default=0,
    type=click.IntRange(min=0),
    help="Prompts with fewer (estimated: 4 chars/token; LMCache: exact) tokens skip prefill.",
)
@click.option(
    "--on-prefill-failure",
    type=_choice(PrefillFailurePolicy),
    default="fail",
    help="fail: answer 503; decode-only: send the request to a decode engine without KV.",
)
@click.option("--request-timeout", default=600.0, type=float, help="Per-request total seconds.")
@click.option(
    "--prefill-timeout",
    default=None,
    type=float,
    help="Seconds for the prefill engine call [default: half of --request-timeout].",
)
@click.option(
    "--max-inflight-per-engine",
    default=256,
    type=click.IntRange(min=1),
    help="Requests per engine before new ones queue (FIFO) in the router.",
)
@click.option(
    "--metrics-refresh-seconds",
    default=0.0,
    type=float,
    help="Scrape engines' /metrics this often to blend their load in (0 = off).",
)
@click.option("--health-interval", default=5.0, type=float, help="Seconds between /health probes.")
@click.option("--namespace", default=None, help="Kubernetes mode: namespace of the Services.")
@click.option("--prefill-service", default=None, help="Kubernetes mode: prefill Service name.")
@click.option("--decode-service", default=None, help="Kubernetes mode: decode Service name.")
@click.option("--engine-port", default=8000, type=int, help="Kubernetes mode: engine HTTP port.")
@click.option("--prefill", multiple=True, help="Static mode: a prefill engine URL (repeatable).")
@click.option("--decode", multiple=True, help="Static mode: a decode engine URL (repeatable).")
@click.option(
    "--kv-ready-port", default=7500, type=int, help="LMCache: this router's ZMQ PULL port."
)
@click.option(
    "--advertise-host",
    default="127.0.0.1",
    help="LMCache: this replica's reachable address (pod IP), encoded into request ids.",
)
@click.option("--decoder-init-ports", default=None, help="LMCache: per-TP-rank init ports (CSV).")
@click.option("--decoder-alloc-ports", default=None, help="LMCache: per-TP-rank alloc ports (CSV).")
@click.option(
    "--kv-ready-timeout",
    default=10.0,
    type=float,
    help="LMCache: seconds to wait for KV-ready notifications after the prefill answered.",
)
@click.option(
    "--log-level",
    default="info",
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Log verbosity.",
)
def router_command(log_level: str, **opts: Any) -> None:
    """Run the Tandem prefill/decode router."""
    try:
        config = build_config(**opts)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    setup_logging(log_level)
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(serve(config))


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed, else asyncio's default.

    uvloop is optional: it saved 10-20% of the router's CPU per short request in
    bench/router_bench.py-style measurements (nothing measurable for 220 KB prompts, where
    socket copies dominate); aiohttp runs on it unchanged.
    """
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(argv: list[str] | None = None) -> None:
    """Entry point: parse `argv` (default: sys.argv[1:]) and run the router."""
    router_command.main(args=argv, prog_name="tandem router")
