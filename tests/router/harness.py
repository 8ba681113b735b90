"""Test harness for router tests: fake engines on loopback and routers wired to them."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp

from tandem.router.app import Router
from tandem.router.config import Connector, RouterConfig
from tandem.router.pairs import PairState
from tests.fake_engine import FakeEngine, KvFabric

MODEL = "tiny"

#: Fault settings for every engine of a role, or one dict per engine.
Faults = dict[str, Any] | list[dict[str, Any]]


def make_config(**overrides: Any) -> RouterConfig:
    """A loopback router config with fast probes; override any field."""
    base = RouterConfig(
        model=MODEL,
        connector=Connector.NIXL,
        host="127.0.0.1",
        port=0,
        health_interval=0.2,
        request_timeout=5.0,
        kv_ready_port=0,
        kv_ready_timeout=1.0,
        # A canary that failed (a loaded test machine) is retried after this, not after 5 s.
        pair_retry_seconds=0.5,
        prefill_urls=("http://127.0.0.1:1",),
        decode_urls=("http://127.0.0.1:1",),
    )
    return replace(base, **overrides)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """Fake engines plus one or more routers in front of them."""

    prefill: list[FakeEngine]
    decode: list[FakeEngine]
    routers: list[Router]
    http: aiohttp.ClientSession
    kv: KvFabric
    stack: AsyncExitStack = field(repr=False)

    @property
    def router(self) -> Router:
        return self.routers[0]

    @property
    def url(self) -> str:
        return self.router.url

    async def post(self, path: str, body: dict[str, Any], **kw: Any) -> aiohttp.ClientResponse:
        """POST and read the whole answer (the response is released)."""
        async with self.http.post(self.url + path, json=body, **kw) as resp:
            await resp.read()
            return resp

    async def metrics_text(self, router: Router | None = None) -> str:
        async with self.http.get((router or self.router).url + "/metrics") as resp:
            return await resp.text()


async def wait_ready(http: aiohttp.ClientSession, url: str, timeout: float = 5.0) -> None:
    """Poll the router's /health until it answers 200."""
    deadline = time.monotonic() + timeout
    while True:
        async with http.get(url + "/health") as resp:
            if resp.status == 200:
                return
        if time.monotonic() > deadline:
            raise TimeoutError("router did not become ready")
        await asyncio.sleep(0.02)


async def wait_pairs(router: Router, state: PairState, count: int, timeout: float = 10.0) -> None:
    """Poll until `count` pairs are in `state`."""
    deadline = time.monotonic() + timeout
    while router.pairs.state_counts()[state] != count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"pairs: {router.pairs.state_counts()}, wanted {count} {state}")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def cluster(
    *,
    prefill: int = 1,
    decode: int = 1,
    protocol: str = "nixl",
    tp_size: int = 1,
    replicas: int = 1,
    wait: bool = True,
    prefill_faults: Faults | None = None,
    decode_faults: Faults | None = None,
    prefill_pp: int = 1,
    **router_overrides: Any,
) -> AsyncIterator[Cluster]:
    """Start `prefill` + `decode` fake engines sharing one `KvFabric`, and `replicas` routers
    over them (canaries on, as in production). `*_faults` are set before the routers start;
    `wait` waits for every router's /health and, with canaries, for every pair verified."""
    kv = KvFabric()
    async with AsyncExitStack() as stack:

        async def engine(role: str, faults: Faults | None, i: int) -> FakeEngine:
            pp = prefill_pp if role == "prefill" else 1
            fake = FakeEngine(
                role=role, protocol=protocol, tp_size=tp_size, pp_size=pp, model=MODEL, kv=kv
            )
            mine = faults[i] if isinstance(faults, list) else faults
            for key, value in (mine or {}).items():
                setattr(fake.faults, key, value)
            return await stack.enter_async_context(fake)

        p_engines = [await engine("prefill", prefill_faults, i) for i in range(prefill)]
        d_engines = [await engine("decode", decode_faults, i) for i in range(decode)]
        settings: dict[str, Any] = {
            "prefill_urls": tuple(e.url for e in p_engines),
            "decode_urls": tuple(e.url for e in d_engines),
        }
        if protocol == "lmcache":
            settings |= {
                "connector": Connector.LMCACHE,
                "decoder_init_ports": tuple(7300 + i for i in range(tp_size)),
                "decoder_alloc_ports": tuple(7400 + i for i in range(tp_size)),
            }
        settings |= router_overrides
        ports = [free_port() for _ in range(replicas)]
        if protocol == "lmcache":  # engines notify the first replica (it relays to the others)
            for fake in p_engines:
                fake.proxy = f"127.0.0.1:{ports[0]}"
        routers = [
            await stack.enter_async_context(Router(make_config(**settings, kv_ready_port=port)))
            for port in ports
        ]
        http = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
        )
        if wait:
            for r in routers:
                if r.config.canary:
                    await wait_pairs(r, PairState.VERIFIED, prefill * decode)
                await wait_ready(http, r.url)
        yield Cluster(p_engines, d_engines, routers, http, kv, stack)


def sse_payloads(raw: bytes) -> list[Any]:
    """The ``data:`` payloads of a server-sent-events body, JSON-decoded ([DONE] kept as is)."""
    out = []
    for event in raw.decode().split("\n\n"):
        if event.startswith("data: "):
            data = event[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out
