"""Kubernetes endpoint discovery: watch the EndpointSlices of the prefill and decode Services.

The only module of the router that imports the Kubernetes client. It uses the synchronous client's
list+watch in one daemon thread per Service and hands each new URL list to the asyncio loop with
`call_soon_threadsafe` (kopf's docs warn that the sync client must never run on the loop itself).

Watch semantics: list (remember `resourceVersion`), then watch from it. Every watch error, expired
resource version (410 Gone), or normal end of a watch window leads back to a fresh list, so a
missed event can never leave a stale endpoint behind for more than one window. Errors back off
exponentially up to 30 s. The slice parsing itself is pure and lives in `slices.py`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol, cast

from tandem.api.vocabulary import Role
from tandem.router.config import KubernetesSource
from tandem.router.slices import urls_from_slices

log = logging.getLogger(__name__)

#: Server-side watch window; after it the thread re-lists.
WATCH_SECONDS = 60
#: Client-side bound on a list call (seconds).
LIST_TIMEOUT = 30
MAX_BACKOFF = 30.0

Apply = Callable[[Role, list[str]], None]


class SliceApi(Protocol):
    """The one call of `kubernetes.client.DiscoveryV1Api` this module uses."""

    def list_namespaced_endpoint_slice(self, namespace: str, **kwargs: Any) -> Any: ...


class WatchLike(Protocol):
    """`kubernetes.watch.Watch`, reduced to what is used (fakes implement it in tests)."""

    def stream(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any: ...

    def stop(self) -> None: ...


def default_api() -> SliceApi:
    """In-cluster credentials, falling back to the local kubeconfig (for development)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    api: SliceApi = cast(SliceApi, client.DiscoveryV1Api())
    return api


def default_watch() -> WatchLike:
    """A fresh `kubernetes.watch.Watch`."""
    from kubernetes import watch

    return cast(WatchLike, watch.Watch())  # type: ignore[no-untyped-call]


def to_json(obj: Any) -> Any:
    """API model objects → their JSON form (camelCase dicts); dicts pass through."""
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]


class KubernetesDiscovery:
    """Keeps both pools' membership equal to the ready endpoints of their Services."""

    def __init__(
        self,
        source: KubernetesSource,
        *,
        api_factory: Callable[[], SliceApi] = default_api,
        watch_factory: Callable[[], WatchLike] = default_watch,
        serialize: Callable[[Any], Any] = to_json,
        initial_backoff: float = 1.0,
    ) -> None:
        self._source = source
        self._initial_backoff = initial_backoff
        self._api_factory = api_factory
        self._watch_factory = watch_factory
        self._serialize = serialize
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watches: set[WatchLike] = set()
        self._lock = threading.Lock()

    async def start(self, apply: Apply) -> None:
        """Start one watcher thread per Service; `apply` runs on the calling loop."""
        loop = asyncio.get_running_loop()
        api = await asyncio.to_thread(self._api_factory)
        services = {
            Role.PREFILL: self._source.prefill_service,
            Role.DECODE: self._source.decode_service,
        }
        for role, service in services.items():

            def publish(urls: list[str], role: Role = role) -> None:
                loop.call_soon_threadsafe(apply, role, urls)

            thread = threading.Thread(
                target=self.run_watch,
                args=(api, service, publish),
                name=f"endpointslices-{role.value}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    async def stop(self) -> None:
        """Ask the threads to end (an open watch is stopped at its next event or window end)."""
        self._stopping.set()
        with self._lock:
            for w in self._watches:
                w.stop()
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 1.0)

    def run_watch(self, api: SliceApi, service: str, publish: Callable[[list[str]], None]) -> None:
        """List+watch one Service's slices until stopped (the body of a watcher thread)."""
        namespace, port = self._source.namespace, self._source.engine_port
        selector = f"kubernetes.io/service-name={service}"
        backoff = self._initial_backoff
        last: list[str] | None = None

        def maybe_publish(slices: dict[str, Any]) -> None:
            nonlocal last
            urls = urls_from_slices(slices.values(), port)
            if urls != last:
                last = urls
                publish(urls)

        while not self._stopping.is_set():
            try:
                listed = self._serialize(
                    api.list_namespaced_endpoint_slice(
                        namespace, label_selector=selector, _request_timeout=LIST_TIMEOUT
                    )
                )
                slices = {item["metadata"]["name"]: item for item in listed.get("items") or []}
                maybe_publish(slices)
                version = (listed.get("metadata") or {}).get("resourceVersion")
                self._watch_from(api, namespace, selector, version, slices, maybe_publish)
                backoff = self._initial_backoff
            except Exception as exc:  # the thread must survive API hiccups
                if self._stopping.is_set():
                    return
                gone = getattr(exc, "status", None) == 410
                log.warning(
                    "Failed watching EndpointSlices",
                    extra={"service": service, "error": repr(exc), "relist": True},
                )
                if not gone:
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)

    def _watch_from(
        self,
        api: SliceApi,
        namespace: str,
        selector: str,
        version: str | None,
        slices: dict[str, Any],
        maybe_publish: Callable[[dict[str, Any]], None],
    ) -> None:
        watcher = self._watch_factory()
        with self._lock:
            self._watches.add(watcher)
        try:
            for event in watcher.stream(
                api.list_namespaced_endpoint_slice,
                namespace,
                label_selector=selector,
                resource_version=version,
                timeout_seconds=WATCH_SECONDS,
                # A client-side bound too: a silently dead connection must not hang the thread.
                _request_timeout=WATCH_SECONDS + LIST_TIMEOUT,
            ):
                if self._stopping.is_set():
                    return
                kind = event.get("type")
                obj = self._serialize(event.get("object"))
                if kind == "ERROR":
                    code = (obj or {}).get("code")
                    raise WatchError(code, str((obj or {}).get("message", "")))
                name = ((obj or {}).get("metadata") or {}).get("name")
                if not name:
                    continue
                if kind == "DELETED":
                    slices.pop(name, None)
                else:
                    slices[name] = obj
                maybe_publish(slices)
        finally:
            with self._lock:
                self._watches.discard(watcher)


class WatchError(Exception):
    """An ERROR event in the watch stream (410 Gone: the resource version expired)."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(f"watch error {status}: {message}")
        self.status = status
