"""Kubernetes discovery's list+watch loop, driven by a fake API (no cluster needed)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tandem.api.vocabulary import Role
from tandem.router.config import KubernetesSource
from tandem.router.discovery import KubernetesDiscovery

pytestmark = pytest.mark.timeout(10)

SOURCE = KubernetesSource(namespace="ns", prefill_service="p", decode_service="d", engine_port=8000)


def slice_obj(name: str, *ips: str, ready: bool = True, version: str = "1") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "resourceVersion": version},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip in ips],
    }


class FakeApi:
    """Answers list calls from a queue of snapshots and records the selectors."""

    def __init__(self, lists: list[list[dict[str, Any]]]) -> None:
        self.lists = lists
        self.calls: list[dict[str, Any]] = []

    def list_namespaced_endpoint_slice(self, namespace: str, **kwargs: Any) -> Any:
        self.calls.append({"namespace": namespace, **kwargs})
        items = self.lists.pop(0) if len(self.lists) > 1 else self.lists[0]
        return {"metadata": {"resourceVersion": "10"}, "items": items}


class FakeWatch:
    """Yields scripted events, then raises or ends; `stop()` ends an open stream."""

    def __init__(self, script: list[Any], stopped: threading.Event) -> None:
        self.script = script
        self.stopped = stopped
        self.kwargs: dict[str, Any] = {}

    def stream(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterator[Any]:
        self.kwargs = kwargs
        for item in self.script:
            if isinstance(item, BaseException):
                raise item
            yield item
        self.stopped.wait(5)

    def stop(self) -> None:
        self.stopped.set()


def run_in_thread(
    disc: KubernetesDiscovery, api: FakeApi, published: list[list[str]]
) -> threading.Thread:
    thread = threading.Thread(target=disc.run_watch, args=(api, "p", published.append), daemon=True)
    thread.start()
    return thread


def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    event = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        event.wait(0.01)
    raise AssertionError("condition not met")


def test_list_then_watch_events_update_the_ready_set() -> None:
    stopped = threading.Event()
    events = [
        {"type": "ADDED", "object": slice_obj("b", "10.0.0.2")},
        {"type": "MODIFIED", "object": slice_obj("a", "10.0.0.1", ready=False)},
        {"type": "DELETED", "object": slice_obj("b", "10.0.0.2")},
    ]
    watches: list[FakeWatch] = []

    def make_watch() -> FakeWatch:
        watches.append(FakeWatch(events if not watches else [], stopped))
        return watches[-1]

    api = FakeApi([[slice_obj("a", "10.0.0.1")]])
    disc = KubernetesDiscovery(SOURCE, watch_factory=make_watch, serialize=lambda o: o)
    published: list[list[str]] = []
    thread = run_in_thread(disc, api, published)
    wait_until(lambda: len(published) >= 4)
    assert published[:4] == [
        ["http://10.0.0.1:8000"],
        ["http://10.0.0.1:8000", "http://10.0.0.2:8000"],
        ["http://10.0.0.2:8000"],
        [],
    ]
    assert api.calls[0]["namespace"] == "ns"
    assert api.calls[0]["label_selector"] == "kubernetes.io/service-name=p"
    assert watches[0].kwargs["resource_version"] == "10"
    asyncio.run(disc.stop())
    thread.join(2)
    assert not thread.is_alive()


def test_expired_watch_relists() -> None:
    stopped = threading.Event()
    gone = {"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}}
    scripts = [[gone], []]

    def make_watch() -> FakeWatch:
        return FakeWatch(scripts.pop(0) if scripts else [], stopped)

    api = FakeApi([[slice_obj("a", "10.0.0.1")], [slice_obj("a", "10.0.0.1", "10.0.0.5")]])
    disc = KubernetesDiscovery(SOURCE, watch_factory=make_watch, serialize=lambda o: o)
    published: list[list[str]] = []
    thread = run_in_thread(disc, api, published)
    wait_until(lambda: len(published) >= 2)
    assert published[1] == ["http://10.0.0.1:8000", "http://10.0.0.5:8000"]
    assert len(api.calls) == 2  # listed again after 410, without backoff
    asyncio.run(disc.stop())
    thread.join(2)


def test_unchanged_lists_are_not_published_again() -> None:
    stopped = threading.Event()
    relists = iter([[RuntimeError("watch broke")], []])

    def make_watch() -> FakeWatch:
        return FakeWatch(next(relists, []), stopped)

    api = FakeApi([[slice_obj("a", "10.0.0.1")]])
    disc = KubernetesDiscovery(
        SOURCE, watch_factory=make_watch, serialize=lambda o: o, initial_backoff=0.01
    )
    published: list[list[str]] = []
    thread = run_in_thread(disc, api, published)
    wait_until(lambda: len(api.calls) >= 2, timeout=5)
    assert published == [["http://10.0.0.1:8000"]]
    asyncio.run(disc.stop())
    thread.join(2)


async def test_start_feeds_both_pools_on_the_event_loop() -> None:
    stopped = threading.Event()
    api = FakeApi([[slice_obj("a", "10.0.0.1")]])
    disc = KubernetesDiscovery(
        SOURCE,
        api_factory=lambda: api,
        watch_factory=lambda: FakeWatch([], stopped),
        serialize=lambda o: o,
    )
    applied: dict[Role, list[str]] = {}
    loop_thread: list[int] = []

    def apply(role: Role, urls: list[str]) -> None:
        loop_thread.append(threading.get_ident())
        applied[role] = urls

    await disc.start(apply)
    for _ in range(300):
        if len(applied) == 2:
            break
        await asyncio.sleep(0.01)
    await disc.stop()
    assert applied == {
        Role.PREFILL: ["http://10.0.0.1:8000"],
        Role.DECODE: ["http://10.0.0.1:8000"],
    }
    assert set(loop_thread) == {threading.get_ident()}


async def test_real_kubernetes_client_against_a_fake_api_server() -> None:
    """The real client's list+watch and model serialisation, against a loopback API server."""
    from aiohttp import web
    from kubernetes import client

    events: dict[str, asyncio.Queue[dict[str, Any]]] = {
        f"kubernetes.io/service-name={svc}": asyncio.Queue() for svc in ("p", "d")
    }
    seen: list[dict[str, str]] = []

    async def endpointslices(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.query))
        if request.query.get("watch") not in ("true", "True", "1"):
            body = {
                "kind": "EndpointSliceList",
                "apiVersion": "discovery.k8s.io/v1",
                "metadata": {"resourceVersion": "5"},
                "items": [slice_obj("a", "10.0.0.1")],
            }
            return web.json_response(body)
        resp = web.StreamResponse()
        resp.content_type = "application/json"
        await resp.prepare(request)
        queue = events[request.query["labelSelector"]]
        while True:
            event = await queue.get()
            await resp.write(json.dumps(event).encode() + b"\n")

    app = web.Application()
    app.router.add_get("/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices", endpointslices)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def api_factory() -> Any:
        config = client.Configuration(host=f"http://127.0.0.1:{port}")
        return client.DiscoveryV1Api(client.ApiClient(config))

    applied: list[tuple[Role, list[str]]] = []
    disc = KubernetesDiscovery(SOURCE, api_factory=api_factory)
    await disc.start(lambda role, urls: applied.append((role, urls)))
    try:
        for _ in range(300):
            if len(applied) >= 2:
                break
            await asyncio.sleep(0.01)
        assert dict(applied) == {
            Role.PREFILL: ["http://10.0.0.1:8000"],
            Role.DECODE: ["http://10.0.0.1:8000"],
        }
        added = slice_obj("b", "10.0.0.2", version="6")
        added |= {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1"}
        for queue in events.values():  # one watch per Service
            await queue.put({"type": "ADDED", "object": added})
        for _ in range(300):
            if len(applied) >= 4:
                break
            await asyncio.sleep(0.01)
        both = ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]
        assert dict(applied[2:]) == {Role.PREFILL: both, Role.DECODE: both}
        selectors = {q.get("labelSelector") for q in seen}
        assert selectors == {"kubernetes.io/service-name=p", "kubernetes.io/service-name=d"}
    finally:
        await disc.stop()
        await runner.cleanup()
