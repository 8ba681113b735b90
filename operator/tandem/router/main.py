"""`tandem router`: the command line of the P/D router.

The flags are a contract with the operator, which renders them from the same typed value the
router parses them into: `tandem.contracts.router.RouterConfig`. The click options below are
generated from its flag table (name, help, choices and default written once, on the dataclass
fields); click only tokenises and prints `--help`, and `RouterConfig.from_flags` turns the texts
into a validated config. `--log-level` is the one option outside the contract. The lead mounts
`router_command` as `tandem router`, and `python -m tandem.router` runs it stand-alone.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

import click

from tandem.contracts.router import FLAGS, ConfigError, Flag, RouterConfig

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


def _option(flag: Flag) -> click.Option:
    """A click option for one contract flag: no default of its own, texts in, texts out."""
    shown = flag.default_text
    return click.Option(
        [flag.name, flag.param],
        type=click.Choice(flag.codec.choices) if flag.codec.choices else click.STRING,
        metavar=None if flag.codec.choices else flag.codec.metavar,
        multiple=flag.codec.repeated,
        required=flag.required,
        help=flag.help if shown is None else f"{flag.help} [default: {shown}]",
    )


def _config(given: dict[str, str | tuple[str, ...] | None]) -> RouterConfig:
    """The validated config for click's parsed options (raises click.UsageError)."""
    texts: dict[str, tuple[str, ...]] = {}
    for flag in FLAGS:
        value = given[flag.param]
        if value is not None and value != ():
            texts[flag.name] = (value,) if isinstance(value, str) else value
    try:
        return RouterConfig.from_flags(texts)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


def _router(log_level: str, **given: str | tuple[str, ...] | None) -> None:
    config = _config(given)
    setup_logging(log_level)
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(serve(config))


router_command = click.Command(
    "router",
    callback=_router,
    help="Run the Tandem prefill/decode router.",
    context_settings={"max_content_width": 100},
    params=[
        *map(_option, FLAGS),
        click.Option(
            ["--log-level"],
            default="info",
            show_default=True,
            type=click.Choice(["debug", "info", "warning", "error"]),
            help="Log verbosity.",
        ),
    ],
)


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
