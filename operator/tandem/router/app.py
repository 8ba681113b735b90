"""One router instance: wires configuration, pools, discovery, probes, protocol and HTTP server.

Everything lives on the instance (no module state), so tests can run two replicas side by side in
one process, e.g. for the LMCache relay between replicas. Use it as an async context manager:

    async with Router(config) as router:
        ...  # serving on router.port

Start-up order matters: pools and the shared HTTP session first, then the KV-ready socket (its
port goes into request ids), then the hand-off protocol and its canary runner, then discovery
(which triggers immediate probes of new endpoints; a pair's canary starts once both of its
endpoints answered their probe), then the periodic prober and the canaries, and the listening
socket last.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

import aiohttp
from aiohttp import web

from tandem.api.vocabulary import Role, RouterPolicy
from tandem.router.canary import CanaryRunner
from tandem.router.config import Connector, PrefillFailurePolicy, RouterConfig
from tandem.router.dispatch import Dispatcher
from tandem.router.endpoints import Endpoint, EndpointPool, HealthState
from tandem.router.health import HealthProber
from tandem.router.metrics import RouterMetrics
from tandem.router.pairs import PairBook, PairPolicy
from tandem.router.pick import make_policy
from tandem.router.protocols.base import Handoff, RouterContext
from tandem.router.protocols.nixl import NixlHandoff
from tandem.router.server import RouterServer
from tandem.router.upstream import POOL_KEEPALIVE_SECONDS, reuse_tracer

if TYPE_CHECKING:  # pyzmq and msgpack are needed only with --connector lmcache
    from tandem.router.kvready import KvReadyHub

log = logging.getLogger(__name__)


class Discovery(Protocol):
    """A source of endpoint URLs per role (see `discovery.KubernetesDiscovery`).

    `start` must call `apply(role, urls)` on the event loop whenever a role's set changes.
    """

    async def start(self, apply: Callable[[Role, list[str]], None]) -> None: ...

    async def stop(self) -> None: ...


class Router:
    """A running Tandem router."""

    def __init__(self, config: RouterConfig, *, discovery: Discovery | None = None) -> None:
        self.config = config  # validated when it was constructed
        self._discovery = discovery
        self.pools: dict[Role, EndpointPool] = {
            role: EndpointPool(role=role, max_inflight=config.max_inflight_per_engine)
            for role in Role
        }
        self.pairs = PairBook(
            PairPolicy(
                canary=config.canary,
                require_verified=config.require_verified_pairs,
                retry_seconds=config.pair_retry_seconds,
            )
        )
        self.pairs.on_broken = lambda _pair: self._wake_canaries()
        self.metrics = RouterMetrics(self.pools, self.pairs)
        self.kv_hub: KvReadyHub | None = None
        self._session: aiohttp.ClientSession | None = None
        self._prober: HealthProber | None = None
        self._ctx: RouterContext | None = None
        self.canaries: CanaryRunner | None = None
        self._runner: web.AppRunner | None = None
        self.port = config.port

    @property
    def url(self) -> str:
        """Base URL of the listening socket (loopback form for wildcard binds)."""
        host = self.config.host if self.config.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    def _context(self, session: aiohttp.ClientSession) -> RouterContext:
        cfg = self.config
        policy = make_policy(cfg.policy)
        balance = (
            policy
            if cfg.policy is not RouterPolicy.PREFIX_AWARE
            else make_policy(RouterPolicy.LEAST_LOADED)
        )
        return RouterContext(
            config=cfg,
            session=session,
            pools=self.pools,
            metrics=self.metrics,
            prefill_policy=policy,
            decode_policy=balance,
            direct_policy=policy,
            pairs=self.pairs,
        )

    def _handoff(self, ctx: RouterContext) -> Handoff:
        if self.config.connector is Connector.NIXL:
            return NixlHandoff(ctx)
        from tandem.router.protocols.lmcache import LmcacheHandoff

        assert self.kv_hub is not None
        return LmcacheHandoff(ctx, self.kv_hub)

    def _apply(self, role: Role, urls: list[str]) -> None:
        self.pools[role].set_urls(urls)
        self.pairs.sync(self.pools[Role.PREFILL].endpoints, self.pools[Role.DECODE].endpoints)
        self._wake_canaries()

    def _wake_canaries(self) -> None:
        if self.canaries is not None:
            self.canaries.wake()

    def _health_changed(self, endpoint: Endpoint, previous: HealthState) -> None:
        """A pair whose endpoint comes back (restart, outage) is verified again."""
        if endpoint.state is HealthState.HEALTHY and previous is HealthState.UNHEALTHY:
            self.pairs.reset(endpoint.url)
        self._wake_canaries()

    async def start(self) -> None:
        """Bind sockets, discover endpoints, start probing, start serving."""
        cfg = self.config
        # limit=0: the router bounds concurrency itself (--max-inflight-per-engine); aiohttp's
        # default of 100 pooled connections would silently cap throughput. Idle connections
        # are dropped before uvicorn's 5 s keep-alive closes them (see upstream.py).
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=POOL_KEEPALIVE_SECONDS)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False,  # relay bytes as the engine sent them
            cookie_jar=aiohttp.DummyCookieJar(),  # engines set no cookies; skip the bookkeeping
            trace_configs=[reuse_tracer()],
        )
        if cfg.connector is Connector.LMCACHE:
            from tandem.router.kvready import KvReadyHub

            self.kv_hub = KvReadyHub(
                cfg.host,
                cfg.kv_ready_port,
                cfg.advertise_host,
                on_outcome=lambda o: self.metrics.kv_ready_notifications.labels(o).inc(),
            )
            await self.kv_hub.start()
        self._prober = HealthProber(
            self._session, self.pools, cfg.health_interval, cfg.metrics_refresh_seconds
        )
        prober = self._prober

        def probe_new(endpoints: list[Endpoint]) -> None:
            prober.probe_soon(endpoints)

        ctx = self._ctx = self._context(self._session)
        handoff = self._handoff(ctx)
        self.canaries = CanaryRunner(ctx, handoff)
        for pool in self.pools.values():
            pool.on_added = probe_new
            pool.on_health = self._health_changed
        if self._discovery is not None:
            await self._discovery.start(self._apply)
        else:
            self._apply(Role.PREFILL, list(cfg.prefill_urls))
            self._apply(Role.DECODE, list(cfg.decode_urls))
        self._prober.start()
        self.canaries.start()

        server = RouterServer(
            model=cfg.model,
            pools=self.pools,
            metrics=self.metrics,
            dispatcher=Dispatcher(ctx, handoff),
            request_timeout=cfg.request_timeout,
            prefix_affinity=cfg.policy is RouterPolicy.PREFIX_AWARE,
            pairs=self.pairs,
            fallback=cfg.on_prefill_failure is PrefillFailurePolicy.DECODE_ONLY,
        )
        self._runner = web.AppRunner(server.app(), handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg.host, cfg.port, reuse_address=True)
        await site.start()
        sockets = site._server.sockets if site._server is not None else ()  # type: ignore[attr-defined]
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info(
            "Started router",
            extra={"port": self.port, "connector": cfg.connector.value, "policy": cfg.policy.value},
        )

    async def stop(self) -> None:
        """Stop serving, then stop background work and close sockets."""
        if self._runner is not None:
            await self._runner.cleanup()
        if self._discovery is not None:
            await self._discovery.stop()
        if self._prober is not None:
            await self._prober.stop()
        if self.canaries is not None:
            await self.canaries.stop()
        if self._ctx is not None:
            await self._ctx.stop_background()
        if self.kv_hub is not None:
            await self.kv_hub.stop()
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> Router:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
