"""The operator against a real kube-apiserver, controller-manager, scheduler and KWOK nodes.

Every example is applied with kubectl; the children, their scheduling onto fake GPU nodes, the
status roll-up, kubectl's printer columns, updates, pruning and garbage collection are checked
on the real thing. The operator runs with the Helm chart's ServiceAccount token.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from e2e import harness as h

EXAMPLES = sorted(p.name for p in h.EXAMPLES.glob("*.yaml"))


def deployments(ns: str, name: str) -> dict[str, dict[str, Any]]:
    items = h.kget("deployments", namespace=ns, selector=f"tandem.dev/instance={name}")["items"]
    return {d["metadata"]["name"]: d for d in items}


def engine_container(dep: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]
    return c


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_reconciles_to_ready(
    operator: h.OperatorProcess, namespace: str, example: str
) -> None:
    doc = h.example(example, namespace)
    name = doc["metadata"]["name"]
    h.apply(doc)
    deps = h.wait_for(
        lambda: len(deployments(namespace, name)) == 3 and deployments(namespace, name),
        timeout=60,
        what="3 Deployments",
    )
    spec = doc["spec"]
    for role in ("prefill", "decode"):
        dep = deps[f"{name}-{role}"]
        c = engine_container(dep)
        par = spec[role].get("parallelism", {})
        gpus = par.get("tensor", 1) * par.get("pipeline", 1)
        assert c["resources"]["limits"]["nvidia.com/gpu"] == str(gpus)
        args = c["args"]
        assert args[args.index("--tensor-parallel-size") + 1] == str(par.get("tensor", 1))
        kv = json.loads(args[args.index("--kv-transfer-config") + 1])
        assert kv["kv_role"] == ("kv_producer" if role == "prefill" else "kv_consumer")
        connector = spec.get("kvTransfer", {}).get("connector", "lmcache")
        assert (
            kv["kv_connector"]
            == {"lmcache": "LMCacheConnectorV1", "nixl": "NixlConnector"}[connector]
        )
        labels = dep["metadata"]["labels"]
        assert labels["tandem.dev/role"] == role and labels["app.kubernetes.io/instance"] == name
        owner = dep["metadata"]["ownerReferences"][0]
        assert owner["kind"] == "InferenceService" and owner["controller"] is True
    if spec.get("kvTransfer", {}).get("connector", "lmcache") == "lmcache":
        cm = h.kget("configmap", f"{name}-lmcache", namespace)
        assert "pd_role: sender" in cm["data"]["prefill.yaml"]
        assert "pd_role: receiver" in cm["data"]["decode.yaml"]

    obj = h.wait_ready(name, namespace, timeout=120)
    pods = h.kget(
        "pods",
        namespace=namespace,
        selector=f"tandem.dev/instance={name},tandem.dev/role in (prefill,decode)",
    )["items"]
    assert pods and all(p["status"]["phase"] == "Running" for p in pods)
    assert all(p["spec"]["nodeName"].startswith("gpu-node-") for p in pods), (
        "engines must land on GPU nodes"
    )
    st = obj["status"]
    assert st["observedGeneration"] == obj["metadata"]["generation"]
    assert st["endpoint"] == f"http://{name}-router.{namespace}.svc:8000/v1"
    assert st["prefill"]["ready"] == f"{spec['prefill']['replicas']}/{spec['prefill']['replicas']}"
    for ctype in ("Accepted", "PrefillReady", "DecodeReady", "RouterReady", "Ready"):
        assert h.condition(obj, ctype)["status"] == "True", ctype  # type: ignore[index]

    # The printer columns. Read until the row shows Ready: kubectl reads the object again, and a
    # pod may legitimately go unready in between on a starved machine (the stale-status race
    # that once made this flap is fixed and unit-tested in test_reconcile_status_race.py).
    def row() -> tuple[str, str] | None:
        table = h.kubectl("get", "inferenceservices", name, "-n", namespace).stdout
        head, line = table.splitlines()[:2]
        return (head, line) if "True" in line else None

    header, line = h.wait_for(row, timeout=120, what="kubectl get showing Ready")
    assert header.split()[:5] == ["NAME", "READY", "PREFILL", "DECODE", "TPXPP"]
    assert st["prefill"]["ready"] in line and st["endpoint"] in line


def test_pool_larger_than_cluster_stays_pending(
    operator: h.OperatorProcess, namespace: str
) -> None:
    doc = h.example("llama-1p1d-lmcache.yaml", namespace, name="too-big")
    # LMCache needs the same parallelism in both pools: one 8-GPU prefill replica fits a node,
    # six 8-GPU decode replicas do not fit the four nodes that are left.
    doc["spec"]["prefill"] = {"replicas": 1, "parallelism": {"tensor": 8}}
    doc["spec"]["decode"] = {"replicas": 6, "parallelism": {"tensor": 8}}
    h.apply(doc)

    # Ready's reason is the first blocking condition's: while the prefill pod is still starting
    # it reads Progressing, so wait for both rather than read Ready the moment decode is seen.
    def unschedulable() -> dict[str, Any] | None:
        obj = h.isvc("too-big", namespace)
        decode, ready = h.condition(obj, "DecodeReady"), h.condition(obj, "Ready")
        if not (decode and ready and decode["reason"] == "PodsUnschedulable"):
            return None
        return obj if ready["reason"] == "PodsUnschedulable" else None

    obj = h.wait_for(unschedulable, timeout=90, what="DecodeReady and Ready PodsUnschedulable")
    assert "Insufficient nvidia.com/gpu" in h.condition(obj, "DecodeReady")["message"]  # type: ignore[index]
    ready = h.condition(obj, "Ready")
    assert ready is not None and ready["status"] == "False"
    assert h.condition(obj, "DecodeReady")["status"] == "False"  # type: ignore[index]
    pending = [
        p
        for p in h.kget("pods", namespace=namespace, selector="tandem.dev/role=decode")["items"]
        if p["status"]["phase"] == "Pending"
    ]
    assert pending


def test_semantic_rejection_keeps_running_pools(
    operator: h.OperatorProcess, namespace: str
) -> None:
    doc = h.example("qwen-nixl.yaml", namespace, name="keep")
    h.apply(doc)
    h.wait_ready("keep", namespace)
    before = {
        n: d["metadata"]["resourceVersion"] for n, d in deployments(namespace, "keep").items()
    }
    doc["spec"]["decode"]["parallelism"] = {"tensor": 16}  # 16 GPUs > gpusPerNode 8
    h.apply(doc)

    def rejected() -> dict[str, Any] | None:
        obj = h.isvc("keep", namespace)
        c = h.condition(obj, "Accepted")
        return obj if c and c["status"] == "False" else None

    obj = h.wait_for(rejected, timeout=60, what="Accepted=False")
    accepted = h.condition(obj, "Accepted")
    assert accepted is not None and accepted["reason"] == "ReplicaExceedsNode"
    assert "spec.decode" in accepted["message"]
    events = h.kget("events", namespace=namespace)["items"]
    warnings = [
        e
        for e in events
        if e["type"] == "Warning"
        and e["reason"] == "ReplicaExceedsNode"
        and e["involvedObject"]["name"] == "keep"
    ]
    assert warnings, "a Warning event must explain the rejection"
    after = {n: d["metadata"]["resourceVersion"] for n, d in deployments(namespace, "keep").items()}
    assert after == before, "running pools must be left untouched"
    # Fixing the spec accepts it again.
    doc["spec"]["decode"]["parallelism"] = {"tensor": 2}
    h.apply(doc)
    h.wait_for(
        lambda: h.condition(h.isvc("keep", namespace), "Accepted")["status"] == "True",
        timeout=60,
        what="Accepted=True",
    )  # type: ignore[index]


def test_updates_roll_only_the_right_children(operator: h.OperatorProcess, namespace: str) -> None:
    doc = h.example("llama-1p1d-lmcache.yaml", namespace, name="upd")
    h.apply(doc)
    h.wait_ready("upd", namespace)

    def generations() -> dict[str, int]:
        return {n: d["metadata"]["generation"] for n, d in deployments(namespace, "upd").items()}

    gen = generations()
    doc["spec"]["decode"]["replicas"] = 2
    h.apply(doc)
    h.wait_for(
        lambda: deployments(namespace, "upd")["upd-decode"]["spec"]["replicas"] == 2,
        timeout=60,
        what="decode replicas 2",
    )
    now = generations()
    assert now["upd-decode"] > gen["upd-decode"]
    assert now["upd-prefill"] == gen["upd-prefill"] and now["upd-router"] == gen["upd-router"]

    doc["spec"]["kvTransfer"] = {"connector": "nixl"}
    h.apply(doc)
    h.wait_for(
        lambda: not h.exists("configmap", "upd-lmcache", namespace),
        timeout=60,
        what="LMCache ConfigMap pruned",
    )
    deps = deployments(namespace, "upd")
    args = engine_container(deps["upd-decode"])["args"]
    kv = json.loads(args[args.index("--kv-transfer-config") + 1])
    assert kv["kv_connector"] == "NixlConnector"
    assert "--kv-ready-port" not in engine_container(deps["upd-router"])["args"]
    h.wait_ready("upd", namespace)

    # NIXL lets the pools differ (decode at least as wide): a wider decode rolls decode only.
    gen = generations()
    doc["spec"]["decode"]["parallelism"] = {"tensor": 2}
    h.apply(doc)
    h.wait_for(
        lambda: (
            engine_container(deployments(namespace, "upd")["upd-decode"])["resources"]["limits"][
                "nvidia.com/gpu"
            ]
            == "2"
        ),
        timeout=60,
        what="decode TP=2",
    )
    now = generations()
    assert now["upd-decode"] > gen["upd-decode"]
    assert now["upd-prefill"] == gen["upd-prefill"] and now["upd-router"] == gen["upd-router"]
    h.wait_ready("upd", namespace)


def test_deleting_the_service_collects_every_child(
    operator: h.OperatorProcess, namespace: str
) -> None:
    h.apply(h.example("llama-1p1d-lmcache.yaml", namespace, name="gc"))
    h.wait_ready("gc", namespace)
    h.kubectl("delete", "inferenceservice", "gc", "-n", namespace, "--wait=true", "--timeout=60s")
    sel = "tandem.dev/instance=gc"

    def gone() -> bool:
        for kind in (
            "deployments",
            "services",
            "configmaps",
            "serviceaccounts",
            "roles",
            "rolebindings",
        ):
            if h.kget(kind, namespace=namespace, selector=sel)["items"]:
                return False
        return True

    h.wait_for(gone, timeout=90, what="garbage collection of all children")


def test_drifted_child_is_corrected(operator: h.OperatorProcess, namespace: str) -> None:
    h.apply(h.example("qwen-nixl.yaml", namespace, name="drift"))
    h.wait_ready("drift", namespace)
    h.kubectl("delete", "service", "drift-prefill", "-n", namespace)
    h.wait_for(
        lambda: h.exists("service", "drift-prefill", namespace),
        timeout=40,
        what="Service recreated",
    )
    h.kubectl(
        "label",
        "deployment",
        "drift-decode",
        "-n",
        namespace,
        "tandem.dev/role=tampered",
        "--overwrite",
    )
    h.wait_for(
        lambda: (
            deployments(namespace, "drift")["drift-decode"]["metadata"]["labels"]["tandem.dev/role"]
            == "decode"
        ),
        timeout=40,
        what="label restored",
    )
