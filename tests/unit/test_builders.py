"""Pure builders: golden manifests per example, and the properties every child must have."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tandem.api.owned import owned_flag_conflicts
from tandem.api.v1alpha1 import InferenceServiceSpec
from tandem.api.vocabulary import Role
from tandem.plan import plan_service
from tandem.plan.kv import kv_strategy
from tandem.plan.kv.lmcache import LMCacheStrategy
from tandem.plan.quantity import to_bytes
from tandem.render import Owner, build_children
from tests.conftest import EXAMPLES, load_example, make_spec

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
OWNER = Owner(name="svc", namespace="ml", uid="1234-uid")
# Fields vLLM 0.32's KVTransferConfig accepts (vllm/config/kv_transfer.py).
KV_FIELDS = {
    "kv_connector", "engine_id", "kv_buffer_device", "kv_role", "kv_port",
    "kv_connector_extra_config", "kv_connector_module_path", "enable_permute_local_kv",
    "kv_load_failure_policy",
}  # fmt: skip


def engine_args(spec: InferenceServiceSpec, name: str, role: str) -> list[str]:
    return list(plan_service(spec, Owner(name, "ml", "uid")).pool(Role(role)).args)


def kv_transfer_config(spec: InferenceServiceSpec, role: str) -> dict[str, Any]:
    return kv_strategy(spec, OWNER).kv_transfer_config(Role(role))


def lmcache_config(spec: InferenceServiceSpec, name: str, ns: str, role: str) -> dict[str, Any]:
    return LMCacheStrategy(spec, Owner(name, ns, "uid")).lmcache_config(Role(role))


def children(raw: dict[str, Any], owner: Owner = OWNER) -> dict[str, dict[str, Any]]:
    spec = InferenceServiceSpec.model_validate(raw)
    return {f"{c['kind']}/{c['metadata']['name']}": c for c in build_children(spec, owner)}


def container(objs: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    c: dict[str, Any] = objs[f"Deployment/{name}"]["spec"]["template"]["spec"]["containers"][0]
    return c


def env(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_golden(path: Path) -> None:
    doc = load_example(path)
    owner = Owner(doc["metadata"]["name"], doc["metadata"]["namespace"], "00000000-uid")
    spec = InferenceServiceSpec.model_validate(doc["spec"])
    rendered = yaml.safe_dump_all(build_children(spec, owner), sort_keys=True)
    golden = GOLDEN / f"{path.stem}.yaml"
    if os.environ.get("TANDEM_UPDATE_GOLDEN") or not golden.exists():
        golden.write_text(rendered)
    assert rendered == golden.read_text(), f"regenerate with TANDEM_UPDATE_GOLDEN=1: {golden}"


def test_children_set_and_order() -> None:
    objs = children(make_spec())
    assert list(objs) == [
        "ConfigMap/svc-lmcache",
        "ServiceAccount/svc-router",
        "Role/svc-router",
        "RoleBinding/svc-router",
        "Service/svc-prefill",
        "Service/svc-decode",
        "Service/svc-router",
        "Service/svc-kv-ready",
        "Deployment/svc-prefill",
        "Deployment/svc-decode",
        "Deployment/svc-router",
    ]
    nixl = children(make_spec(kvTransfer={"connector": "nixl"}))
    assert "ConfigMap/svc-lmcache" not in nixl


def test_owner_references_and_labels() -> None:
    for key, obj in children(make_spec()).items():
        meta = obj["metadata"]
        assert meta["namespace"] == "ml", key
        (ref,) = meta["ownerReferences"]
        assert ref == {
            "apiVersion": "tandem.dev/v1alpha1", "kind": "InferenceService", "name": "svc",
            "uid": "1234-uid", "controller": True, "blockOwnerDeletion": True,
        }  # fmt: skip
        labels = meta["labels"]
        assert labels["app.kubernetes.io/instance"] == "svc"
        assert labels["app.kubernetes.io/managed-by"] == "tandem-operator"
        assert labels["app.kubernetes.io/part-of"] == "tandem"
        assert labels["tandem.dev/instance"] == "svc"
        assert "tandem.dev/role" in labels
        assert "generateName" not in meta


@pytest.mark.parametrize(("tp", "pp"), [(1, 1), (2, 1), (2, 2), (4, 2)])
def test_gpu_requests_equal_tensor_times_pipeline(tp: int, pp: int) -> None:
    par = {"parallelism": {"tensor": tp, "pipeline": pp}}
    objs = children(make_spec(prefill=par, decode=par))
    c = container(objs, "svc-prefill")
    assert c["resources"]["requests"]["nvidia.com/gpu"] == str(tp * pp)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == str(tp * pp)
    assert flag(c["args"], "--tensor-parallel-size") == str(tp)
    assert flag(c["args"], "--pipeline-parallel-size") == str(pp)
    assert ("--distributed-executor-backend" in c["args"]) == (tp * pp > 1)


def test_custom_gpu_resource_name() -> None:
    res = {"resources": {"gpuResourceName": "amd.com/gpu"}}
    objs = children(make_spec(prefill=res, decode=res))
    assert container(objs, "svc-decode")["resources"]["limits"] == {"amd.com/gpu": "1"}


def test_kv_transfer_config_roles_and_fields() -> None:
    for connector in ("lmcache", "nixl"):
        spec = InferenceServiceSpec.model_validate(make_spec(kvTransfer={"connector": connector}))
        p, d = kv_transfer_config(spec, "prefill"), kv_transfer_config(spec, "decode")
        assert p["kv_role"] == "kv_producer" and d["kv_role"] == "kv_consumer"
        assert set(p) <= KV_FIELDS and set(d) <= KV_FIELDS
        for removed in ("kv_buffer_size", "kv_rank", "kv_parallel_size", "kv_ip"):
            assert removed not in p and removed not in d
        objs = children(make_spec(kvTransfer={"connector": connector}))
        args = container(objs, "svc-prefill")["args"]
        assert json.loads(flag(args, "--kv-transfer-config")) == p
    spec = InferenceServiceSpec.model_validate(make_spec())
    assert kv_transfer_config(spec, "prefill")["kv_connector"] == "LMCacheConnectorV1"
    assert (
        kv_transfer_config(spec, "decode")["kv_connector_extra_config"]["skip_last_n_tokens"] == 0
    )
    nixl = InferenceServiceSpec.model_validate(make_spec(kvTransfer={"connector": "nixl"}))
    assert kv_transfer_config(nixl, "decode")["kv_connector"] == "NixlConnector"
    assert kv_transfer_config(nixl, "decode")["kv_load_failure_policy"] == "recompute"


def test_lmcache_yaml_per_role() -> None:
    raw = make_spec(decode={"parallelism": {"tensor": 2}}, prefill={"parallelism": {"tensor": 2}})
    spec = InferenceServiceSpec.model_validate(raw)
    sender = lmcache_config(spec, "svc", "ml", "prefill")
    receiver = lmcache_config(spec, "svc", "ml", "decode")
    assert sender["pd_role"] == "sender" and receiver["pd_role"] == "receiver"
    assert sender["transfer_channel"] == receiver["transfer_channel"] == "nixl"
    assert sender["enable_pd"] and receiver["enable_pd"]
    assert sender["pd_proxy_host"] == "svc-kv-ready.ml.svc"
    assert sender["pd_proxy_port"] == 7500
    assert receiver["pd_peer_init_port"] == [7300, 7301]
    assert receiver["pd_peer_alloc_port"] == [7400, 7401]
    assert sender["pd_buffer_size"] == 2**30 and receiver["pd_buffer_size"] == 2 * 2**30
    for stale in ("enable_nixl", "nixl_receiver_host", "nixl_receiver_port", "nixl_role"):
        assert stale not in sender and stale not in receiver
    objs = children(raw)
    cm = objs["ConfigMap/svc-lmcache"]
    assert yaml.safe_load(cm["data"]["decode.yaml"]) == receiver
    c = container(objs, "svc-decode")
    assert env(c)["LMCACHE_CONFIG_FILE"] == "/etc/lmcache/decode.yaml"
    assert env(c)["LMCACHE_PD_PEER_HOST"] == "$(POD_IP)"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["lmc-init-1"] == 7301 and ports["lmc-alloc-0"] == 7400
    anno = objs["Deployment/svc-decode"]["spec"]["template"]["metadata"]["annotations"]
    assert anno["tandem.dev/lmcache-config-hash"]


def test_lmcache_config_change_rolls_pods() -> None:
    a = children(make_spec())["Deployment/svc-decode"]["spec"]["template"]["metadata"]
    b = children(make_spec(kvTransfer={"lmcache": {"chunkSize": 512}}))
    b_meta = b["Deployment/svc-decode"]["spec"]["template"]["metadata"]
    assert a["annotations"] != b_meta["annotations"]


def test_remote_cache_on_prefill() -> None:
    spec = InferenceServiceSpec.model_validate(
        make_spec(kvTransfer={"lmcache": {"remoteCache": {"url": "lm://cache:65432"}}})
    )
    assert lmcache_config(spec, "svc", "ml", "prefill")["remote_url"] == "lm://cache:65432"


def test_engine_pod_basics() -> None:
    objs = children(make_spec(model={"uri": "hf://org/model", "tokenSecretRef": {"name": "hf"}}))
    p, d = container(objs, "svc-prefill"), container(objs, "svc-decode")
    assert p["command"] == ["vllm", "serve"]
    assert env(p)["PYTHONHASHSEED"] == env(d)["PYTHONHASHSEED"]
    assert env(p)["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "token"}}
    assert env(p)["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    pod = objs["Deployment/svc-prefill"]["spec"]["template"]["spec"]
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in p["volumeMounts"]
    assert p["startupProbe"]["httpGet"]["path"] == "/health"
    assert p["startupProbe"]["periodSeconds"] * p["startupProbe"]["failureThreshold"] >= 1800
    assert p["readinessProbe"]["httpGet"]["path"] == "/health"
    assert p["livenessProbe"]["httpGet"]["path"] == "/health"
    assert flag(p["args"], "--served-model-name") == "svc"
    assert p["args"][0] == "org/model"


def test_hf_token_never_inline() -> None:
    text = json.dumps(
        list(
            children(
                make_spec(model={"uri": "hf://o/m", "tokenSecretRef": {"name": "s", "key": "k"}})
            ).values()
        )
    )
    assert '"HF_TOKEN", "value"' not in text


def test_nixl_side_channel_from_pod_ip() -> None:
    objs = children(make_spec(kvTransfer={"connector": "nixl", "nixl": {"sideChannelPort": 5700}}))
    e = env(container(objs, "svc-decode"))
    assert e["VLLM_NIXL_SIDE_CHANNEL_HOST"] == "$(POD_IP)"
    assert e["VLLM_NIXL_SIDE_CHANNEL_PORT"] == "5700"
    assert "LMCACHE_CONFIG_FILE" not in e


def test_user_env_replaces_defaults_in_place_and_pool_wins() -> None:
    objs = children(
        make_spec(
            engine={"env": [{"name": "UCX_CUDA_IPC_ENABLE_GET_ZCOPY", "value": "no"},
                            {"name": "VLLM_LOGGING_LEVEL", "value": "INFO"}]},
            decode={"env": [{"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}]},
        )
    )  # fmt: skip
    p = container(objs, "svc-prefill")["env"]
    d = container(objs, "svc-decode")["env"]
    for e in (p, d):
        names = [v["name"] for v in e]
        assert len(names) == len(set(names)), "one entry per name (SSA list-map)"
        assert env({"env": e})["UCX_CUDA_IPC_ENABLE_GET_ZCOPY"] == "no"
    assert env({"env": p})["VLLM_LOGGING_LEVEL"] == "INFO"
    assert env({"env": d})["VLLM_LOGGING_LEVEL"] == "DEBUG"


def test_nixl_reads_use_cuda_ipc_zero_copy_by_default() -> None:
    for connector in ("nixl", "lmcache"):
        objs = children(make_spec(kvTransfer={"connector": connector}))
        for role in ("prefill", "decode"):
            e = env(container(objs, f"svc-{role}"))
            assert e["UCX_CUDA_IPC_ENABLE_GET_ZCOPY"] == "yes"


def test_replicas_omitted_when_autoscaling() -> None:
    fixed = children(make_spec(prefill={"replicas": 3}))
    assert fixed["Deployment/svc-prefill"]["spec"]["replicas"] == 3
    auto = children(make_spec(autoscaling={"enabled": True}))
    assert "replicas" not in auto["Deployment/svc-prefill"]["spec"]
    assert "replicas" not in auto["Deployment/svc-decode"]["spec"]
    assert auto["Deployment/svc-router"]["spec"]["replicas"] == 2


def test_typed_knobs_become_flags() -> None:
    raw = make_spec(
        model={"uri": "hf://o/m", "maxModelLen": 4096, "dtype": "bfloat16", "quantization": "fp8", "revision": "abc"},
        kvTransfer={"connector": "nixl"},
        engine={"kvCacheDtype": "fp8", "prefixCaching": True, "chunkedPrefill": False,
                "gpuMemoryUtilizationPercent": 85, "enforceEager": True,
                "speculativeDecoding": {"method": "ngram", "numSpeculativeTokens": 3}},
    )  # fmt: skip
    spec = InferenceServiceSpec.model_validate(raw)
    d = engine_args(spec, "svc", "decode")
    p = engine_args(spec, "svc", "prefill")
    assert flag(d, "--max-model-len") == "4096"
    assert flag(d, "--dtype") == "bfloat16"
    assert flag(d, "--quantization") == "fp8"
    assert flag(d, "--kv-cache-dtype") == "fp8"
    assert flag(d, "--revision") == "abc"
    assert "--enable-prefix-caching" in d and "--no-enable-chunked-prefill" in d
    assert flag(d, "--gpu-memory-utilization") == "0.85"
    assert "--enforce-eager" in d
    assert json.loads(flag(d, "--speculative-config")) == {
        "method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 4, "prompt_lookup_min": 1,
    }  # fmt: skip
    assert "--speculative-config" not in p
    # Draft-model speculation on the decode pool alone is refused at admission (its KV layers
    # would not match the prefiller's): tests/admission_cases.py.


def test_lmcache_turns_prefix_caching_off_by_default() -> None:
    lm = engine_args(InferenceServiceSpec.model_validate(make_spec()), "svc", "prefill")
    assert "--no-enable-prefix-caching" in lm
    nixl = engine_args(
        InferenceServiceSpec.model_validate(make_spec(kvTransfer={"connector": "nixl"})),
        "svc",
        "prefill",
    )
    assert "--no-enable-prefix-caching" not in nixl and "--enable-prefix-caching" not in nixl


def test_user_args_last_and_conflicts_detected() -> None:
    spec = InferenceServiceSpec.model_validate(
        make_spec(engine={"args": ["--max-num-seqs", "64"]}, decode={"args": ["--block-size=32"]})
    )
    d = engine_args(spec, "svc", "decode")
    assert d[-3:] == ["--max-num-seqs", "64", "--block-size=32"]
    assert owned_flag_conflicts(spec) == []
    # Admission rejects derived flags (tests/admission_cases.py); the function names each one.
    bad = spec.model_copy(
        update={
            "prefill": spec.prefill.model_copy(update={"args": ["--tensor_parallel_size=4"]}),
            "engine": spec.engine.model_copy(update={"args": ["--port", "9"]}),
        }
    )
    assert owned_flag_conflicts(bad) == [
        "spec.engine.args: --port",
        "spec.prefill.args: --tensor_parallel_size",
    ]


def test_model_locations() -> None:
    pvc = children(make_spec(model={"uri": "pvc://weights/llama/8b"}))
    c = container(pvc, "svc-prefill")
    assert c["args"][0] == "/mnt/models/weights/llama/8b"
    vols = pvc["Deployment/svc-prefill"]["spec"]["template"]["spec"]["volumes"]
    assert {
        "name": "model",
        "persistentVolumeClaim": {"claimName": "weights", "readOnly": True},
    } in vols
    s3 = container(children(make_spec(model={"uri": "s3://bucket/llama"})), "svc-decode")
    assert s3["args"][0] == "s3://bucket/llama"
    assert flag(s3["args"], "--load-format") == "runai_streamer"


def test_headless_pool_services() -> None:
    objs = children(make_spec())
    svc = objs["Service/svc-prefill"]["spec"]
    assert svc["clusterIP"] == "None"
    assert svc["selector"] == {"tandem.dev/instance": "svc", "tandem.dev/role": "prefill"}
    dep = objs["Deployment/svc-prefill"]["spec"]
    assert dep["selector"]["matchLabels"] == svc["selector"]
    assert dep["template"]["metadata"]["labels"].items() >= svc["selector"].items()


def test_router_children() -> None:
    objs = children(
        make_spec(
            router={
                "replicas": 3,
                "policy": "prefix-aware",
                "serviceType": "LoadBalancer",
                "port": 80,
            }
        )
    )
    c = container(objs, "svc-router")
    assert c["command"] == ["tandem", "router"]
    args = c["args"]
    assert flag(args, "--policy") == "prefix-aware"
    assert flag(args, "--prefill-service") == "svc-prefill"
    assert flag(args, "--decode-service") == "svc-decode"
    assert flag(args, "--namespace") == "ml"
    assert flag(args, "--connector") == "lmcache"
    assert flag(args, "--kv-ready-port") == "7500"
    assert flag(args, "--decoder-init-ports") == "7300"
    assert objs["Deployment/svc-router"]["spec"]["replicas"] == 3
    svc = objs["Service/svc-router"]["spec"]
    assert svc["type"] == "LoadBalancer"
    # The KV-ready port is internal: its own ClusterIP Service, never on a LoadBalancer.
    assert [p["name"] for p in svc["ports"]] == ["http"]
    kv = objs["Service/svc-kv-ready"]["spec"]
    assert kv["type"] == "ClusterIP" and kv["selector"] == svc["selector"]
    assert kv["ports"] == [
        {"name": "kv-ready", "port": 7500, "targetPort": 7500, "protocol": "TCP"}
    ]
    role = objs["Role/svc-router"]
    assert role["rules"] == [
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    binding = objs["RoleBinding/svc-router"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "svc-router", "namespace": "ml"}
    ]
    pod = objs["Deployment/svc-router"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "svc-router"
    nixl_args = container(children(make_spec(kvTransfer={"connector": "nixl"})), "svc-router")[
        "args"
    ]
    assert "--kv-ready-port" not in nixl_args


@pytest.mark.parametrize(
    ("q", "n"),
    [
        ("1Gi", 2**30),
        ("512Mi", 512 * 2**20),
        ("1G", 10**9),
        ("1.5Gi", 3 * 2**29),
        ("8", 8),
        ("1e3", 1000),
    ],
)
def test_quantity(q: str, n: int) -> None:
    assert to_bytes(q) == n
