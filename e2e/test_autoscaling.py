"""The autoscaler inside the real operator process, against the real control plane.

The operator runs with the chart's ServiceAccount (so its RBAC is the chart's) and ticks every
``interval: 2s``. KWOK pods run nothing, so :class:`e2e.autoscale_fakes.MetricsFleet` serves
fake vLLM and router ``/metrics`` on each pod's own loopback IP, port 8000, with the queue
numbers each test sets; the autoscaler scrapes those exactly as it would scrape vLLM.

Proved here, on Deployments, status, conditions and events the API server holds:

- a prefill queue above target scales prefill up within a few intervals (``QueueAboveTarget``,
  ``lastScale`` from/to, ``desiredReplicas``, ``Autoscaling=True/Active``, a ``ScaledUp``
  event), and decode does not move;
- an unrelated spec change (router replicas, a prefill pod-template change) is reconciled
  without resetting the replicas the autoscaler set;
- once the queue is gone, the pool is not shrunk before ``scaleDownStabilizationSeconds`` (counted
  from the last scrape that still showed the queue) and is shrunk after it, one step at a time
  (``ScaledDown`` events);
- metrics that disappear (listeners closed, or 503) hold the pools (no scale-down though the
  window has passed): ``Autoscaling=False/MetricsUnavailable``, a Warning event,
  ``status.autoscaling.lastError`` naming the failures; when they come back the autoscaler
  resumes, scales down, and clears ``lastError``;
- under ``maxGPUs`` the pools stop at the budget (TP2 replicas count 2 GPUs each) and the
  condition says ``GPUBudgetReached``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import kubernetes

from e2e import harness as h
from e2e.autoscale_fakes import MetricsFleet
from tandem.reconcile.k8s import Kube

INTERVAL = 2  # spec.autoscaling.interval, seconds
WINDOW = 20  # scaleDownStabilizationSeconds of the scale-down test
# Slack for a 2-core machine shared with other jobs: a tick can start late, the operator's
# writes and kopf's event posting take a moment, the API server answers slowly under load.
SLACK = 10.0

T = TypeVar("T")


def manifest(
    namespace: str,
    name: str,
    *,
    tensor: int = 1,
    prefill: dict[str, Any] | None = None,
    decode: dict[str, Any] | None = None,
    autoscaling: dict[str, Any] | None = None,
) -> dict[str, Any]:
    pool = {
        "minReplicas": 1,
        "maxReplicas": 4,
        "targetWaitingPerReplica": 4,
        "scaleDownStabilizationSeconds": WINDOW,
    }
    return {
        "apiVersion": "tandem.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"uri": "hf://Qwen/Qwen2.5-0.5B-Instruct"},
            "prefill": {
                "replicas": 1,
                "parallelism": {"tensor": tensor},
                "autoscaling": {**pool, **(prefill or {})},
            },
            "decode": {
                "replicas": 1,
                "parallelism": {"tensor": tensor},
                "autoscaling": {**pool, **(decode or {})},
            },
            "kvTransfer": {"connector": "nixl"},
            "router": {"replicas": 1},
            "autoscaling": {
                "enabled": True,
                "interval": f"{INTERVAL}s",
                "staleAfterSeconds": 30,
                **(autoscaling or {}),
            },
        },
    }


class Api:
    """In-process reads (cheaper than a kubectl process per poll on a 2-core machine)."""

    def __init__(self, kubeconfig: str, namespace: str, name: str) -> None:
        self.kube = Kube(kubernetes.config.new_client_from_config(config_file=kubeconfig))  # type: ignore[no-untyped-call]
        self.namespace, self.name = namespace, name

    def close(self) -> None:
        self.kube.api.close()  # type: ignore[no-untyped-call]

    def isvc(self) -> dict[str, Any]:
        return self.kube.get("InferenceService", self.namespace, self.name)

    def replicas(self, role: str) -> int:
        dep = self.kube.get("Deployment", self.namespace, f"{self.name}-{role}")
        return int(dep["spec"].get("replicas", 1))

    def pools(self) -> tuple[int, int]:
        return self.replicas("prefill"), self.replicas("decode")

    def autoscaling(self) -> dict[str, Any]:
        c = h.condition(self.isvc(), "Autoscaling")
        return c or {}

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        out = []
        for e in self.kube.list_kind("Event", self.namespace):
            involved = e.get("involvedObject", {})
            if involved.get("kind") != "InferenceService" or involved.get("name") != self.name:
                continue
            if reason is None or e.get("reason") == reason:
                out.append(e)
        return out

    def pod_names(self, role: str) -> set[str]:
        selector = f"tandem.dev/instance={self.name},tandem.dev/role={role}"
        return {p["metadata"]["name"] for p in self.kube.list_kind("Pod", self.namespace, selector)}

    def pending_pods(self) -> list[str]:
        pods = self.kube.list_kind("Pod", self.namespace, f"tandem.dev/instance={self.name}")
        return [p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Pending"]


def wait(
    check: Callable[[], T | None],
    timeout: float,
    what: str,
    state: Callable[[], object] | None = None,
    interval: float = 0.25,
) -> T:
    """``h.wait_for``, with what things look like now added to the timeout message."""
    try:
        return h.wait_for(check, timeout=timeout, interval=interval, what=what)  # type: ignore[return-value]
    except TimeoutError as e:
        if state is None:
            raise
        try:
            now = f"now: {state()}"
        except Exception as s:
            now = f"state unreadable: {s}"
        raise TimeoutError(f"{e}; {now}") from None


def wait_condition(
    api: Api, status: str, timeout: float, contains: str | tuple[str, ...] = (), reason: str = ""
) -> dict[str, Any]:
    """The ``Autoscaling`` condition once it has ``status`` (and ``reason``/texts, if given)."""
    texts = (contains,) if isinstance(contains, str) else contains

    def check() -> dict[str, Any] | None:
        c = api.autoscaling()
        ok = (
            c.get("status") == status
            and (not reason or c.get("reason") == reason)
            and all(t in c.get("message", "") for t in texts)
        )
        return c if ok else None

    what = f"Autoscaling={status}" + (f"/{reason}" if reason else "") + f" {contains!r}"
    return wait(check, timeout, what, state=api.autoscaling)


def wait_events(api: Api, reason: str, text: str, count: int = 1) -> list[dict[str, Any]]:
    """At least ``count`` events of ``reason`` whose message contains ``text``."""

    def check() -> list[dict[str, Any]] | None:
        found = [e for e in api.events(reason) if text in e.get("message", "")]
        return found if len(found) >= count else None

    return wait(
        check,
        SLACK,
        f"{count} {reason} event(s) with {text!r}",
        state=lambda: [e["message"] for e in api.events(reason)],
    )


@contextmanager
def autoscaled(kubeconfig: str, doc: dict[str, Any]) -> Iterator[tuple[Api, MetricsFleet]]:
    """Apply ``doc`` with its fake metrics already following its pods; wait until the autoscaler
    has evaluated both pools on complete metrics (``Autoscaling=True``)."""
    ns, name = doc["metadata"]["namespace"], doc["metadata"]["name"]
    api = Api(kubeconfig, ns, name)
    try:
        with MetricsFleet(ns, name, kubeconfig=kubeconfig) as fleet:
            try:
                h.apply(doc)
                h.wait_ready(name, ns, timeout=90)
                wait(
                    lambda: (
                        len(fleet.served("router")) == doc["spec"]["router"]["replicas"]
                        and len(fleet.served("prefill")) == len(fleet.served("decode")) == 1
                    ),
                    30,
                    "fake metrics on every pod",
                    state=lambda: (fleet.served(), fleet.errors()[-3:]),
                )
                # The autoscaler has evaluated both pools on every pod's metrics.
                wait_condition(api, "True", 30, reason="Active")
                assert api.pools() == (1, 1)
                yield api, fleet
            finally:
                # Delete while the operator runs (its finalizer goes with it, so the namespace
                # does not hang in Terminating after the session's operator stops), and before
                # the fakes stop (the autoscaler stops first, so it has nothing to warn about).
                h.kubectl(
                    "delete", "inferenceservice", name, "-n", ns, "--wait=true", "--timeout=60s",
                    "--ignore-not-found", check=False,
                )  # fmt: skip
    finally:
        api.close()


def wait_replicas(api: Api, role: str, want: int, timeout: float) -> float:
    """Seconds until ``role``'s Deployment has ``want`` replicas."""
    start = time.monotonic()
    wait(
        lambda: api.replicas(role) == want,
        timeout,
        f"{role} replicas {want}",
        state=lambda: {"prefill/decode": api.pools(), "Autoscaling": api.autoscaling()},
    )
    return time.monotonic() - start


def rolled_out(api: Api, role: str) -> bool:
    """The Deployment's rollout is complete: every replica updated, ready, and no old pods."""
    d = api.kube.get("Deployment", api.namespace, f"{api.name}-{role}")
    st, want = d.get("status") or {}, d["spec"]["replicas"]
    return bool(
        st.get("observedGeneration") == d["metadata"]["generation"]
        and st.get("updatedReplicas") == st.get("readyReplicas") == st.get("replicas") == want
        and len(api.pod_names(role)) == want
    )


def stays(predicate: Callable[[], bool], seconds: float, what: str, interval: float = 0.5) -> None:
    """``predicate`` holds at every poll for ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert predicate(), what
        time.sleep(interval)


def last_scale(obj: dict[str, Any], role: str) -> dict[str, Any] | None:
    ls = ((obj.get("status") or {}).get(role) or {}).get("lastScale")
    return dict(ls) if ls else None


def wait_last_scale(api: Api, role: str, to: int) -> dict[str, Any]:
    """status.<role>.lastScale once it records a change to ``to`` replicas (the autoscaler
    writes status just after it scaled the Deployment)."""

    def check() -> dict[str, Any] | None:
        ls = last_scale(api.isvc(), role)
        return ls if ls is not None and ls["to"] == to else None

    return wait(
        check, SLACK, f"status.{role}.lastScale to {to}", state=lambda: last_scale(api.isvc(), role)
    )


def test_queue_scales_prefill_up_then_down_after_the_window(
    operator: h.OperatorProcess, namespace: str, cluster: str
) -> None:
    name = "qscale"
    doc = manifest(namespace, name)
    with autoscaled(cluster, doc) as (api, fleet):
        # --- scale-up: 12 waiting prefills at a target of 4 per replica need 3 replicas.
        fleet.set("prefill", waiting=12)
        took = wait_replicas(api, "prefill", 3, timeout=3 * INTERVAL + SLACK)
        ls = wait_last_scale(api, "prefill", 3)
        assert (ls["from"], ls["to"], ls["reason"]) == (1, 3, "QueueAboveTarget"), ls
        scaled_up_at = ls["time"]
        obj = api.isvc()
        assert obj["status"]["prefill"]["desiredReplicas"] == 3
        assert last_scale(obj, "decode") is None, "decode had no queue: it must not move"
        assert api.replicas("decode") == 1
        wait_condition(api, "True", SLACK, contains="prefill: 3 replicas", reason="Active")
        up = wait_events(api, "ScaledUp", "prefill: 1 -> 3")
        assert up[0]["type"] == "Normal" and "QueueAboveTarget" in up[0]["message"], up[0]
        assert not [e for e in api.events("ScaledUp") if e["message"].startswith("decode")]
        print(f"prefill 1 -> 3 {took:.1f}s after the queue appeared")

        # --- the reconcile does not fight the autoscaler: an unrelated change to the router and
        # a prefill pod-template change (the pool's Deployment is re-applied) keep 3 replicas.
        dep = api.kube.get("Deployment", namespace, f"{name}-prefill")
        generation = dep["metadata"]["generation"]
        doc["spec"]["router"]["replicas"] = 2
        doc["spec"]["prefill"]["env"] = [{"name": "E2E_UNRELATED", "value": "1"}]
        h.apply(doc)
        seen: list[int] = []  # prefill replicas at every poll from now on

        def prefill_replicas() -> int:
            seen.append(api.replicas("prefill"))
            return seen[-1]

        def reconciled() -> bool:
            prefill_replicas()
            d = api.kube.get("Deployment", namespace, f"{name}-prefill")
            env = d["spec"]["template"]["spec"]["containers"][0].get("env", [])
            return api.replicas("router") == 2 and any(e["name"] == "E2E_UNRELATED" for e in env)

        wait(reconciled, 30, "router 2 replicas and the prefill env applied")
        # The prefill pods are replaced one by one (maxUnavailable 1): wait for the rollout to
        # finish and every new pod to be served, or the scale-down below would start from
        # partial metrics (which hold, by design) and take longer than the window.
        wait(
            lambda: (
                prefill_replicas() == 3
                and rolled_out(api, "prefill")
                and set(fleet.served("prefill")) == api.pod_names("prefill")
            ),
            45,
            "the prefill rollout to finish with every new pod served",
            state=lambda: (seen[-5:], fleet.served("prefill"), api.pod_names("prefill")),
        )
        stays(lambda: prefill_replicas() == 3, 3 * INTERVAL, "prefill replicas", interval=0.25)
        assert set(seen) == {3}, f"prefill replicas moved during the reconcile: {seen}"
        dep = api.kube.get("Deployment", namespace, f"{name}-prefill")
        assert dep["metadata"]["generation"] > generation, "the template change was applied"
        owners = [
            m["manager"]
            for m in dep["metadata"]["managedFields"]
            if "f:replicas" in str((m.get("fieldsV1") or {}).get("f:spec", {}))
        ]
        assert owners == ["tandem-autoscaler"], owners
        assert (last_scale(api.isvc(), "prefill") or {}).get("time") == scaled_up_at

        # --- scale-down: the queue is gone; nothing moves before the 20 s window, counted from
        # the last scrape that still showed the queue (the fakes record when they answered).
        fleet.set("prefill", waiting=0)
        fleet.wait_synced()
        dropped = time.monotonic()
        wait(
            lambda: fleet.last_scrape("prefill", lambda m: m.waiting == 0),
            3 * INTERVAL + SLACK,
            "a scrape of the empty queue",
        )
        last_queue = fleet.last_scrape("prefill", lambda m: m.waiting > 0)
        assert last_queue is not None
        stays(
            lambda: api.replicas("prefill") == 3,
            last_queue + WINDOW - 2 - time.monotonic(),
            f"prefill must not scale down within the {WINDOW}s window",
        )
        assert not api.events("ScaledDown")
        wait_replicas(api, "prefill", 2, timeout=last_queue + WINDOW + SLACK - time.monotonic())
        after, since_drop = time.monotonic() - last_queue, time.monotonic() - dropped
        # (A tick reads its clock, lists pools and pods, then scrapes: allow for that lag.)
        assert after >= WINDOW - 2, f"scaled down {after:.1f}s after the queue was last seen"
        ls = wait_last_scale(api, "prefill", 2)
        assert (ls["from"], ls["to"], ls["reason"]) == (3, 2, "Idle"), ls
        # maxScaleDownStep 1: one replica per decision, down to minReplicas.
        wait_replicas(api, "prefill", 1, timeout=3 * INTERVAL + SLACK)
        downs = wait_events(api, "ScaledDown", "prefill: ", count=2)
        messages = sorted(e["message"] for e in downs)
        assert any("prefill: 3 -> 2" in m for m in messages), messages
        assert any("prefill: 2 -> 1" in m for m in messages), messages
        assert all(e["type"] == "Normal" for e in downs)
        assert api.replicas("decode") == 1
        print(
            f"prefill 3 -> 2 {after:.1f}s after the last scrape showing the queue, "
            f"{since_drop:.1f}s after it dropped (window {WINDOW}s)"
        )


def test_missing_metrics_hold_the_pool(
    operator: h.OperatorProcess, namespace: str, cluster: str
) -> None:
    window = 6
    name = "holds"
    doc = manifest(namespace, name, prefill={"scaleDownStabilizationSeconds": window})
    with autoscaled(cluster, doc) as (api, fleet):
        fleet.set("prefill", waiting=12)
        wait_replicas(api, "prefill", 3, timeout=3 * INTERVAL + SLACK)
        wait(lambda: len(fleet.served("prefill")) == 3, SLACK, "3 prefill pods served")
        wait_condition(api, "True", SLACK, contains="prefill: 3 replicas")
        warnings_before = {e["metadata"]["uid"] for e in api.events("MetricsUnavailable")}

        # The queue is gone *and* the metrics stop: without metrics the autoscaler cannot know.
        # Prefill's listeners close (connection refused); decode answers 503.
        fleet.set("prefill", waiting=0, mode="down")
        fleet.set("decode", mode="error")
        fleet.wait_synced()
        assert not fleet.served("prefill")
        # (A tick that lands while the listeners are closing sees some pods: MetricsPartial.)
        cond = wait_condition(
            api,
            "False",
            2 * INTERVAL + SLACK,
            contains=("prefill: MetricsMissing", "decode: MetricsMissing"),
        )
        assert cond["reason"] == "MetricsUnavailable", cond
        assert "prefill: MetricsMissing, holding 3 replicas" in cond["message"], cond
        assert "decode: MetricsMissing, holding 1 replicas" in cond["message"], cond
        obj = api.isvc()
        error = (obj["status"].get("autoscaling") or {}).get("lastError") or ""
        assert obj["status"]["autoscaling"]["source"] == "scrape"
        assert "prefill: all 3 pods failed" in error, error
        assert "Cannot connect" in error or "refused" in error.lower(), error
        assert "decode: all 1 pods failed" in error and "503" in error, error
        warnings = wait(
            lambda: [
                e
                for e in api.events("MetricsUnavailable")
                if e["metadata"]["uid"] not in warnings_before
            ],
            SLACK,
            "a new MetricsUnavailable event",
        )
        assert warnings[0]["type"] == "Warning", warnings
        assert "prefill: Metrics" in warnings[0]["message"], warnings
        # Several intervals past the scale-down window: the pool holds.
        stays(
            lambda: api.pools() == (3, 1),
            window + 4 * INTERVAL,
            "pools must hold while prefill metrics are missing",
        )
        assert not api.events("ScaledDown")
        cond = api.autoscaling()
        assert (cond["status"], cond["reason"]) == ("False", "MetricsUnavailable"), cond

        # Metrics are back (still no queue): the autoscaler resumes and shrinks the idle pool.
        fleet.set("prefill", mode="serve")
        fleet.set("decode", mode="serve")
        fleet.wait_synced()
        wait_condition(api, "True", 2 * INTERVAL + SLACK)
        wait_replicas(api, "prefill", 2, timeout=window + 2 * INTERVAL + SLACK)
        obj = api.isvc()
        assert not (obj["status"].get("autoscaling") or {}).get("lastError")


def test_gpu_budget_caps_both_pools(
    operator: h.OperatorProcess, namespace: str, cluster: str
) -> None:
    name = "budget"
    budget, gpus_per_replica = 8, 2
    big = {"maxReplicas": 6, "maxScaleUpStep": 4}
    doc = manifest(
        namespace,
        name,
        tensor=gpus_per_replica,
        prefill=big,
        decode=big,
        autoscaling={"maxGPUs": budget},
    )
    with autoscaled(cluster, doc) as (api, fleet):
        # Each pool alone asks for maxReplicas (6 x 2 GPUs each): far past the budget.
        fleet.set("prefill", waiting=400)
        fleet.set("decode", waiting=400)

        seen: list[tuple[int, int]] = []

        def at_budget() -> tuple[int, int] | None:
            seen.append(api.pools())
            p, d = seen[-1]
            return (p, d) if (p + d) * gpus_per_replica == budget else None

        p, d = wait(at_budget, 3 * INTERVAL + SLACK, "pools at the budget", state=api.pools)
        over = [(p, d) for p, d in seen if (p + d) * gpus_per_replica > budget]
        assert not over, f"replicas went past the {budget}-GPU budget: {over}"
        assert p >= 1 and d >= 1
        wait_condition(api, "True", 2 * INTERVAL + SLACK, reason="GPUBudgetReached")
        obj = api.isvc()
        reasons = {r: (last_scale(obj, r) or {}).get("reason") for r in ("prefill", "decode")}
        assert "GPUBudget" in reasons.values(), reasons
        # It stays at the budget for several intervals (no overshoot, no pods left Pending).
        stays(
            lambda: api.pools() == (p, d),
            4 * INTERVAL,
            f"pools must stay at the GPU budget ({p}P + {d}D)",
        )
        assert not api.pending_pods()
        warnings = api.events("GPUBudgetReached")
        assert warnings and warnings[0]["type"] == "Warning", warnings
        print(f"at the {budget}-GPU budget: {p} prefill + {d} decode replicas of 2 GPUs")
