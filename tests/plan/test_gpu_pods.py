"""Engine pods a real GPU cluster can run: transport resources, hardening, placement."""

from __future__ import annotations

import json
from typing import Any

from tandem.api.v1alpha1 import InferenceServiceSpec
from tandem.plan import Owner
from tandem.render import build_children
from tests.conftest import make_spec


def pod(role: str = "decode", **overrides: Any) -> dict[str, Any]:
    spec = InferenceServiceSpec.model_validate(make_spec(**overrides))
    (dep,) = [
        c
        for c in build_children(spec, Owner("svc", "ml", "uid"))
        if c["kind"] == "Deployment" and c["metadata"]["name"] == f"svc-{role}"
    ]
    template: dict[str, Any] = dep["spec"]["template"]
    return template


def test_engine_pods_are_hardened_and_never_best_effort() -> None:
    t = pod()
    spec, c = t["spec"], t["spec"]["containers"][0]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert c["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert c["resources"]["requests"] == {"nvidia.com/gpu": "1", "cpu": "4", "memory": "32Gi"}
    assert "memory" not in c["resources"]["limits"]  # model loading needs host memory
    big = pod(**{r: {"parallelism": {"tensor": 4}} for r in ("prefill", "decode")})
    assert big["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "16"


def test_rdma_transport_resources_and_capability() -> None:
    nic = {"resources": {"extra": {"rdma/ib": "1"}, "ephemeralStorage": "200Gi"},
           "podAnnotations": {"k8s.v1.cni.cncf.io/networks": "rdma-net"},
           "runtimeClassName": "nvidia"}  # fmt: skip
    t = pod(kvTransfer={"connector": "nixl", "rdma": True}, decode=nic)
    spec, c = t["spec"], t["spec"]["containers"][0]
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["IPC_LOCK"]}
    assert c["resources"]["requests"]["rdma/ib"] == c["resources"]["limits"]["rdma/ib"] == "1"
    assert c["resources"]["limits"]["ephemeral-storage"] == "200Gi"
    cache = next(v for v in spec["volumes"] if v["name"] == "cache")
    assert cache["emptyDir"] == {"sizeLimit": "200Gi"}
    assert t["metadata"]["annotations"] == {"k8s.v1.cni.cncf.io/networks": "rdma-net"}
    assert spec["runtimeClassName"] == "nvidia"
    # The prefill pool did not ask for NICs: same transport capability, no extra resources.
    p = pod("prefill", kvTransfer={"connector": "nixl", "rdma": True}, decode=nic)
    assert "rdma/ib" not in p["spec"]["containers"][0]["resources"]["requests"]


def test_pod_annotations_keep_the_config_hash() -> None:
    t = pod(decode={"podAnnotations": {"team": "ml"}})
    annotations = t["metadata"]["annotations"]
    assert annotations["team"] == "ml" and "tandem.dev/lmcache-config-hash" in annotations


def test_affinity_and_pull_secrets_pass_through() -> None:
    affinity = {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                 "labelSelector": {"matchLabels": {"tandem.dev/role": "decode"}}}}
            ]
        }
    }  # fmt: skip
    t = pod(decode={"affinity": affinity}, engine={"imagePullSecrets": ["regcred"]})
    assert t["spec"]["affinity"] == affinity
    assert t["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_nixl_host_buffer_mode() -> None:
    c = pod(kvTransfer={"connector": "nixl", "nixl": {"kvBufferDevice": "cpu"}})["spec"]
    args = c["containers"][0]["args"]
    config = json.loads(args[args.index("--kv-transfer-config") + 1])
    assert config["kv_buffer_device"] == "cpu"
    default = pod(kvTransfer={"connector": "nixl"})["spec"]["containers"][0]["args"]
    assert "kv_buffer_device" not in default[default.index("--kv-transfer-config") + 1]


def test_nixl_lease_is_tunable() -> None:
    spec = pod(kvTransfer={"connector": "nixl", "nixl": {"kvLeaseSeconds": 120}})["spec"]
    args = spec["containers"][0]["args"]
    config = json.loads(args[args.index("--kv-transfer-config") + 1])
    assert config["kv_connector_extra_config"]["kv_lease_duration"] == 120
