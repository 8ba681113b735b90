"""Test harness for router tests: fake engines on loopback and routers wired to them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp

from tandem.router.app import Router
from tandem.router.config import Connector, RouterConfig
from tests.fake_engine import FakeEngine

MODEL = "tiny"


def make_config(**overrides: Any) -> RouterConfig:
    """A loopback router config with fast probes; override any field."""
    base = RouterConfig(
        model=MODEL,
        host="127.0.0.1",
        port=0,
        health_interval=0.2,
        request_timeout=5.0,
        kv_ready_port=0,
        kv_ready_timeout=1.0,
        prefill_urls=("http://127.0.0.1:1",),
        decode_urls=("http://127.0.0.1:1",),
    )
    return replace(base, **overrides)


@dataclass
class Cluster:
    """Fake engines plus one or more routers in front of them."""

    prefill: list[FakeEngine]
    decode: list[FakeEngine]
    routers: list[Router]
    http: aiohttp.ClientSession
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
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while True:
        async with http.get(url + "/health") as resp:
            if resp.status == 200:
                return
        if time.monotonic() > deadline:
            raise TimeoutError("router did not become ready")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def cluster(
    *,
    prefill: int = 1,
    decode: int = 1,
    protocol: str = "nixl",
    tp_size: int = 1,
    replicas: int = 1,
    wait: bool = True,
    **router_overrides: Any,
) -> AsyncIterator[Cluster]:
    """Start `prefill` + `decode` fake engines and `replicas` routers over them."""
    async with AsyncExitStack() as stack:
        p_engines = [
            await stack.enter_async_context(
                FakeEngine(role="prefill", protocol=protocol, tp_size=tp_size, model=MODEL)
            )
            for _ in range(prefill)
        ]
        d_engines = [
            await stack.enter_async_context(
                FakeEngine(role="decode", protocol=protocol, tp_size=tp_size, model=MODEL)
            )
            for _ in range(decode)
        ]
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
        routers = [
            await stack.enter_async_context(Router(make_config(**settings)))
            for _ in range(replicas)
        ]
        if protocol == "lmcache":
            hub = routers[0].kv_hub
            assert hub is not None
            for engine in p_engines:
                engine.proxy = f"127.0.0.1:{hub.port}"
        http = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
        )
        if wait:
            for r in routers:
                await wait_ready(http, r.url)
        yield Cluster(p_engines, d_engines, routers, http, stack)


def sse_payloads(raw: bytes) -> list[Any]:
    """The ``data:`` payloads of a server-sent-events body, JSON-decoded ([DONE] kept as is)."""
    out = []
    for event in raw.decode().split("\n\n"):
        if event.startswith("data: "):
            data = event[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out
