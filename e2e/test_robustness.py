"""Operator robustness on the real control plane: crashes, idleness, bursts.

These tests stop the session's operator and run their own, scoped to the test's namespace, so
nothing else reconciles what they measure.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e import harness as h

CHILD_KINDS = ("deployments", "services", "configmaps", "serviceaccounts", "roles", "rolebindings")


@pytest.fixture
def solo(
    operator: h.OperatorProcess, chart: str, namespace: str, operator_logs: Path
) -> Iterator[tuple[str, str, Path]]:
    """Pause the session operator for the duration of the test."""
    operator.stop()
    try:
        yield chart, namespace, operator_logs
    finally:
        operator.start()


def children(ns: str) -> list[dict[str, Any]]:
    out = []
    for kind in CHILD_KINDS:
        out += [
            o
            for o in h.kget(kind, namespace=ns)["items"]
            if o["metadata"].get("labels", {}).get("app.kubernetes.io/managed-by")
            == "tandem-operator"
        ]
    return out


def assert_exact_children(ns: str, names: list[str]) -> None:
    objs = children(ns)
    seen: dict[tuple[str, str], int] = {}
    for o in objs:
        key = (o["kind"], o["metadata"]["name"])
        seen[key] = seen.get(key, 0) + 1
        owners = o["metadata"].get("ownerReferences", [])
        assert len(owners) == 1 and owners[0]["kind"] == "InferenceService", (
            f"orphan or multi-owned {key}"
        )
        assert owners[0]["name"] in names, f"child of an unknown owner: {key}"
    assert all(v == 1 for v in seen.values()), f"duplicates: {seen}"
    per_owner = 9  # nixl: 3 Deployments, 3 Services, SA, Role, RoleBinding
    assert len(objs) == per_owner * len(names), sorted(seen)


def small(name: str, ns: str) -> dict[str, Any]:
    doc = h.example("qwen-nixl.yaml", ns, name=name)
    doc["spec"]["router"]["replicas"] = 1
    doc["spec"]["prefill"] = {"replicas": 1}
    doc["spec"]["decode"] = {"replicas": 1}
    return doc


def test_killed_operator_converges_every_time(solo: tuple[str, str, Path]) -> None:
    kubeconfig, ns, logs = solo
    rng = random.Random(7)
    names: list[str] = []
    for i in range(10):
        op = h.OperatorProcess(
            kubeconfig, logs / f"kill-{i}.log", resync_seconds=5, namespaces=[ns]
        ).start()
        name = f"crash-{i}"
        names.append(name)
        h.apply(small(name, ns))
        if i % 3 == 1 and i > 1:  # also change an existing one mid-flight
            doc = small(names[i - 2], ns)
            doc["spec"]["decode"]["replicas"] = 2
            h.apply(doc)
        time.sleep(rng.uniform(0.2, 2.5))
        op.kill()
    op = h.OperatorProcess(
        kubeconfig, logs / "kill-final.log", resync_seconds=5, namespaces=[ns]
    ).start()
    try:
        for name in names:
            h.wait_ready(name, ns, timeout=120)
        assert_exact_children(ns, names)
    finally:
        op.stop()


def test_idle_operator_writes_nothing(solo: tuple[str, str, Path]) -> None:
    kubeconfig, ns, logs = solo
    op = h.OperatorProcess(kubeconfig, logs / "idle.log", resync_seconds=5, namespaces=[ns]).start()
    try:
        for name in ("idle-a", "idle-b"):
            h.apply(small(name, ns))
        for name in ("idle-a", "idle-b"):
            h.wait_ready(name, ns)
        time.sleep(8)  # let the last events settle

        def versions() -> dict[str, str]:
            out = {
                f"{o['kind']}/{o['metadata']['name']}": o["metadata"]["resourceVersion"]
                for o in children(ns)
            }
            for obj in h.kget("inferenceservices", namespace=ns)["items"]:
                out[f"isvc/{obj['metadata']['name']}"] = obj["metadata"]["resourceVersion"]
            return out

        before = versions()
        applied0 = op.metric("tandem_children_applied_total")
        writes0 = op.metric("tandem_status_writes_total")
        resyncs0 = op.metric('tandem_reconciles_total{result="ok",trigger="resync"}')
        time.sleep(60)
        assert versions() == before, "an idle resync changed an object"
        assert op.metric("tandem_children_applied_total") == applied0
        assert op.metric("tandem_status_writes_total") == writes0
        assert (
            op.metric('tandem_reconciles_total{result="ok",trigger="resync"}') - resyncs0 >= 10
        ), "resyncs must have run"
    finally:
        op.stop()


def test_burst_of_one_hundred(solo: tuple[str, str, Path], record_property: Any) -> None:
    kubeconfig, ns, logs = solo
    docs = []
    for i in range(100):
        doc = small(f"burst-{i:03d}", ns)
        # Scaled to zero so 100 services do not mean 500 fake pods on a 2-core machine; the
        # measure is the operator's throughput in building children.
        doc["spec"]["prefill"]["replicas"] = 0
        doc["spec"]["decode"]["replicas"] = 0
        doc["spec"]["router"]["replicas"] = 0
        docs.append(doc)
    import yaml

    op = h.OperatorProcess(
        kubeconfig, logs / "burst.log", resync_seconds=30, namespaces=[ns], extra=["--workers=16"]
    ).start()
    try:
        time.sleep(3)
        start = time.monotonic()
        h.kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=yaml.safe_dump_all(docs))
        h.wait_for(
            lambda: len(h.kget("deployments", namespace=ns)["items"]) == 300,
            timeout=300,
            interval=2,
            what="300 Deployments",
        )
        elapsed = time.monotonic() - start
        record_property("burst_100_seconds", round(elapsed, 1))
        print(f"\n100 InferenceServices -> all children in {elapsed:.1f}s")
        assert_exact_children(ns, [d["metadata"]["name"] for d in docs])
    finally:
        op.stop()
