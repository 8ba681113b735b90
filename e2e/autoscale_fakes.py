"""Fake vLLM and router ``/metrics`` servers on the KWOK pod IPs of one InferenceService.

KWOK pods run nothing, and Services get no endpoints on this cluster (Kubernetes refuses loopback
endpoints), but every pod has its own loopback IP (``127.10.N.x`` on ``gpu-node-N``,
``127.11.0.x`` on ``cpu-node-0``). The autoscaler scrapes ``http://<podIP>:8000/metrics`` of the
ready pods it lists, so :class:`MetricsFleet` watches the pods of one InferenceService and, for
every running pod with an IP, listens on exactly ``<podIP>:8000``, the engine's (or router's)
port; it stops listening when the pod is gone or its IP changes.

What the servers answer is set per role by the test (:meth:`MetricsFleet.set`):

- counts (``waiting``, ``running``, and the routers' ``queue_depth``) are **pool totals**, spread
  evenly over the pool's pods being served, so a pool's queue does not grow when it scales out
  (the autoscaler sums the pods: it sees the total);
- ``kv_usage`` (0..1) is each engine pod's own value;
- ``mode``: ``serve``; ``down`` closes the role's listeners and their open connections (the
  autoscaler's scrapes get "connection refused"); ``error`` answers ``503``.

Metric names and labels are vLLM 0.32's and the Tandem router's, as in tests/fake_engine.py.
One asyncio loop in a background thread serves everything; each pod has its own aiohttp runner,
so stopping one pod also closes the keep-alive connections the operator holds to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Literal

import kubernetes
from aiohttp import web
from tests.fake_engine import gauge_lines

from tandem.reconcile.k8s import Kube

log = logging.getLogger("e2e.autoscale_fakes")

PORT = 8000
POD = web.AppKey("pod", str)
ROLES = ("prefill", "decode", "router")
Mode = Literal["serve", "down", "error"]


@dataclass(frozen=True)
class RoleMetrics:
    """What the pods of one role report (see the module docstring for the semantics)."""

    waiting: float = 0.0
    running: float = 0.0
    kv_usage: float = 0.0
    queue_depth: float = 0.0
    mode: Mode = "serve"


@dataclass
class _Served:
    pod: str
    role: str
    ip: str
    runner: web.AppRunner
    scrapes: int = 0


@dataclass
class _State:
    settings: dict[str, RoleMetrics] = field(
        default_factory=lambda: {r: RoleMetrics() for r in ROLES}
    )
    served: dict[str, _Served] = field(default_factory=dict)  # pod name -> server
    errors: list[str] = field(default_factory=list)
    # Per role: (time.monotonic(), what was answered) of recent scrapes, newest last.
    answered: dict[str, list[tuple[float, RoleMetrics]]] = field(
        default_factory=lambda: {r: [] for r in ROLES}
    )


def engine_text(waiting: float, running: float, kv_usage: float, model: str = "fake") -> str:
    return "\n".join([*gauge_lines(waiting, running, kv_usage, model), ""])


def router_text(prefill_pending: float) -> str:
    return "\n".join(
        [
            "# HELP tandem_router_queue_depth Requests waiting in the router for a free engine slot",
            "# TYPE tandem_router_queue_depth gauge",
            f'tandem_router_queue_depth{{role="prefill"}} {prefill_pending}',
            'tandem_router_queue_depth{role="decode"} 0.0',
            "",
        ]
    )


def _running_pods(pods: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """pod name -> (role, IP) for every running, not terminating pod with an IP."""
    out = {}
    for p in pods:
        meta, st = p.get("metadata", {}), p.get("status", {}) or {}
        role = (meta.get("labels") or {}).get("tandem.dev/role")
        if role not in ROLES or meta.get("deletionTimestamp"):
            continue
        if st.get("phase") == "Running" and st.get("podIP"):
            out[meta["name"]] = (role, st["podIP"])
    return out


class MetricsFleet:
    """Metrics servers following the pods of ``namespace/name``; use as a context manager."""

    def __init__(
        self,
        namespace: str,
        name: str,
        *,
        kubeconfig: str | None = None,
        port: int = PORT,
        poll_s: float = 2.0,
    ) -> None:
        self.namespace, self.name, self.port, self.poll_s = namespace, name, port, poll_s
        self._kube = Kube(kubernetes.config.new_client_from_config(config_file=kubeconfig))  # type: ignore[no-untyped-call]
        self._lock = threading.Lock()
        self._state = _State()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._wakeup: asyncio.Event | None = None
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None
        self._started = threading.Event()
        # set() bumps the generation; a sync that started after it records it as done.
        self._cv = threading.Condition()
        self._generation = 0
        self._synced_generation = -1

    # ---------------------------------------------------------------- test controls

    def set(self, role: str, **values: Any) -> None:
        """Change what ``role``'s pods report (any :class:`RoleMetrics` field)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        with self._lock:
            self._state.settings[role] = replace(self._state.settings[role], **values)
        with self._cv:
            self._generation += 1
        self._wake()

    def served(self, role: str | None = None) -> dict[str, str]:
        """Pods currently served (name -> IP), optionally of one role."""
        with self._lock:
            return {
                s.pod: s.ip for s in self._state.served.values() if role is None or s.role == role
            }

    def scrapes(self, role: str) -> int:
        """Scrapes answered for ``role``'s pods so far (pods still served)."""
        with self._lock:
            return sum(s.scrapes for s in self._state.served.values() if s.role == role)

    def last_scrape(
        self, role: str, where: Callable[[RoleMetrics], bool] = lambda m: True
    ) -> float | None:
        """``time.monotonic()`` of the latest scrape of ``role`` answered with settings matching
        ``where`` (e.g. the last time the autoscaler saw a queue), or None."""
        with self._lock:
            for at, m in reversed(self._state.answered[role]):
                if where(m):
                    return at
        return None

    def errors(self) -> list[str]:
        with self._lock:
            return list(self._state.errors)

    def wait_synced(self, timeout: float = 10.0) -> None:
        """Block until a full sync with the cluster started after this call has finished.

        After it, listeners follow the latest :meth:`set` and every pod that was running when
        this was called is served (unless its role is ``down``, or its IP could not be bound).
        """
        with self._cv:
            self._generation += 1
            wanted = self._generation
        self._wake()
        with self._cv:
            if not self._cv.wait_for(lambda: self._synced_generation >= wanted, timeout):
                raise TimeoutError(
                    f"metrics fleet did not sync within {timeout}s: {self.errors()[-3:]}"
                )

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> MetricsFleet:
        self._thread = threading.Thread(
            target=self._run, name=f"metrics-fleet-{self.namespace}", daemon=True
        )
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("metrics fleet did not start")
        self._watcher = threading.Thread(
            target=self._watch, name=f"metrics-fleet-watch-{self.namespace}", daemon=True
        )
        self._watcher.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._thread = None
        if self._watcher is not None:
            self._watcher.join(timeout=10)  # its watch requests time out after 2 s
        self._watcher = None
        with contextlib.suppress(Exception):
            self._kube.api.close()  # type: ignore[no-untyped-call]

    def __enter__(self) -> MetricsFleet:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- the loop

    def _run(self) -> None:
        asyncio.run(self._main())

    def _wake(self) -> None:
        loop, wakeup = self._loop, self._wakeup
        if loop is not None and wakeup is not None:
            with contextlib.suppress(RuntimeError):  # loop closed
                loop.call_soon_threadsafe(wakeup.set)

    def _watch(self) -> None:
        """Wake the sync loop on every pod event, so new pods are served within milliseconds.

        (The autoscaler lists ready pods every interval: a pod it lists that is not served yet
        makes its metrics partial, which holds scale-downs.)
        """
        api = kubernetes.client.CoreV1Api(self._kube.api)
        selector = f"tandem.dev/instance={self.name}"
        while not self._closing.is_set():
            try:
                w = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
                for _ in w.stream(  # type: ignore[no-untyped-call]
                    api.list_namespaced_pod,
                    self.namespace,
                    label_selector=selector,
                    timeout_seconds=2,
                    _request_timeout=10,
                ):
                    self._wake()
                    if self._closing.is_set():
                        w.stop()  # type: ignore[no-untyped-call]
                        break
            except Exception as e:  # a dropped watch: start another one
                self._error(f"pod watch: {type(e).__name__}: {e}")
                self._closing.wait(1.0)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._started.set()
        try:
            while not self._stop.is_set():
                with self._cv:
                    generation = self._generation
                try:
                    await self._sync()
                    with self._cv:
                        self._synced_generation = generation
                        self._cv.notify_all()
                except Exception as e:  # API hiccups: try again at the next poll
                    self._error(f"sync failed: {type(e).__name__}: {e}")
                await self._sleep()
        finally:
            with self._lock:
                served = list(self._state.served.values())
                self._state.served.clear()
            for s in served:
                await self._close(s)

    async def _sleep(self) -> None:
        """Until the next poll, a pod event, a :meth:`set` or :meth:`stop`."""
        assert self._stop is not None and self._wakeup is not None
        waits = {
            asyncio.ensure_future(self._stop.wait()),
            asyncio.ensure_future(self._wakeup.wait()),
        }
        _, pending = await asyncio.wait(waits, timeout=self.poll_s, return_when="FIRST_COMPLETED")
        for t in pending:
            t.cancel()
        self._wakeup.clear()
        await asyncio.sleep(0.05)  # coalesce bursts of pod events

    def _error(self, text: str) -> None:
        log.warning("%s", text)
        with self._lock:
            self._state.errors.append(f"{time.strftime('%H:%M:%S')} {text}")
            del self._state.errors[:-50]

    async def _sync(self) -> None:
        pods = await asyncio.to_thread(
            self._kube.list_kind, "Pod", self.namespace, f"tandem.dev/instance={self.name}"
        )
        wanted = _running_pods(pods)
        with self._lock:
            modes = {r: s.mode for r, s in self._state.settings.items()}
            current = dict(self._state.served)
        for pod, s in current.items():
            role_ip = wanted.get(pod)
            if role_ip != (s.role, s.ip) or modes[s.role] == "down":
                with self._lock:
                    self._state.served.pop(pod, None)
                await self._close(s)
        for pod, (role, ip) in sorted(wanted.items()):
            if pod in current and current[pod].ip == ip and modes[role] != "down":
                continue
            if modes[role] == "down":
                continue
            served = await self._open(pod, role, ip)
            if served is not None:
                with self._lock:
                    self._state.served[pod] = served

    async def _open(self, pod: str, role: str, ip: str) -> _Served | None:
        app = web.Application()
        app[POD] = pod
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, ip, self.port, reuse_address=True).start()
        except OSError as e:  # e.g. the previous owner of a reused IP still closing
            await runner.cleanup()
            self._error(f"cannot listen on {ip}:{self.port} for {pod}: {e}")
            return None
        return _Served(pod, role, ip, runner)

    async def _close(self, s: _Served) -> None:
        try:
            await s.runner.cleanup()  # closes the listener and every open connection
        except Exception as e:
            self._error(f"closing {s.pod} ({s.ip}): {e}")

    def _lookup(self, request: web.Request) -> tuple[_Served, RoleMetrics, int] | None:
        pod = request.app[POD]
        with self._lock:
            s = self._state.served.get(pod)
            if s is None:
                return None
            s.scrapes += 1
            peers = sum(1 for o in self._state.served.values() if o.role == s.role)
            settings = self._state.settings[s.role]
            if settings.mode == "serve":
                answered = self._state.answered[s.role]
                answered.append((time.monotonic(), settings))
                del answered[:-500]
            return s, settings, max(peers, 1)

    async def _health(self, request: web.Request) -> web.Response:
        found = self._lookup(request)
        ok = found is not None and found[1].mode == "serve"
        return web.Response(status=200 if ok else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        found = self._lookup(request)
        if found is None:
            return web.Response(status=503, text="pod not served\n")
        s, m, n = found
        if m.mode != "serve":
            return web.Response(status=503, text="metrics unavailable\n")
        if s.role == "router":
            text = router_text(m.queue_depth / n)
        else:
            text = engine_text(m.waiting / n, m.running / n, m.kv_usage)
        return web.Response(text=text, content_type="text/plain")
