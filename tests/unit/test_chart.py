"""The Helm chart: lint, render, least privilege, hardening, modes (real helm binary)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tandem"


def helm() -> str:
    cache = Path(os.environ.get("TANDEM_CACHE", Path.home() / ".cache" / "tandem"))
    for candidate in (
        os.environ.get("TANDEM_HELM"),
        shutil.which("helm"),
        str(cache / "bin" / "helm"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail(
        "helm not found: run `e2e/cluster.sh tools` (it installs helm into $TANDEM_CACHE/bin)"
    )


def template(*sets: str) -> list[dict[str, Any]]:
    args = [helm(), "template", "tandem", str(CHART), "--namespace", "tandem-system"]
    for s in sets:
        args += ["--set", s]
    out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=60).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_lint() -> None:
    for sets in (
        [],
        ["watchNamespaces={ml,research}", "replicaCount=2"],
        ["metrics.serviceMonitor.enabled=true"],
    ):
        cmd = [helm(), "lint", str(CHART), "--strict"] + [a for s in sets for a in ("--set", s)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr


def test_schema_rejects_bad_values() -> None:
    r = subprocess.run(
        [helm(), "template", "t", str(CHART), "--set", "replicaCount=0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and "replicaCount" in r.stderr
    r = subprocess.run(
        [helm(), "template", "t", str(CHART), "--set", "bogus=1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0


def test_default_render() -> None:
    docs = template()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"]
    (dep,) = by_kind(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["command"] == ["tandem", "run"]
    assert "--all-namespaces" in c["args"] and "--standalone" in c["args"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"]["memory"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    for d in docs:
        assert d["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        if d["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            assert "namespace" not in d["metadata"]
        elif d["kind"] not in ("Role", "RoleBinding"):  # those name the watched namespaces
            assert d["metadata"]["namespace"] == "tandem-system", d["kind"]


def test_rbac_least_privilege() -> None:
    (role,) = by_kind(template(), "ClusterRole")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
        assert "*" not in rule.get("apiGroups", [])
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert "secrets" not in resources
    assert {
        "inferenceservices",
        "inferenceservices/status",
        "deployments",
        "endpointslices",
    } <= resources


def test_namespaced_mode_uses_roles() -> None:
    docs = template("watchNamespaces={ml,research}")
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["ml", "research"]
    assert len(by_kind(docs, "RoleBinding")) == 2
    (cluster,) = by_kind(docs, "ClusterRole")
    cluster_resources = {r for rule in cluster["rules"] for r in rule["resources"]}
    assert "deployments" not in cluster_resources
    (dep,) = by_kind(docs, "Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=ml" in args and "--all-namespaces" not in args


def test_replicas_use_peering() -> None:
    (dep,) = by_kind(template("replicaCount=3"), "Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--peering" in args and "--peering-name=tandem" in args
    assert "strategy" not in dep["spec"]


def test_service_monitor_optional() -> None:
    assert not by_kind(template(), "ServiceMonitor")
    (sm,) = by_kind(template("metrics.serviceMonitor.enabled=true"), "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
