"""Invalid manifests are rejected by the API server itself (schema + CEL), naming the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from e2e import harness as h

BASE: dict[str, Any] = {
    "apiVersion": "tandem.dev/v1alpha1",
    "kind": "InferenceService",
    "metadata": {"name": "bad"},
    "spec": {"model": {"uri": "hf://org/model"}},
}


def with_spec(**parts: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    doc["spec"].update(parts)
    return doc


def named(name: str) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    doc["metadata"]["name"] = name
    return doc


# (case, manifest, text the API server's error must contain)
CASES: list[tuple[str, dict[str, Any], str]] = [
    ("no spec.model", {**BASE, "spec": {}}, "spec.model"),
    ("uri scheme", with_spec(model={"uri": "http://x/y"}), "spec.model.uri"),
    ("uri without org", with_spec(model={"uri": "hf://llama"}), "spec.model.uri"),
    ("unknown field", with_spec(bogus=1), "bogus"),
    ("unknown nested field", with_spec(prefill={"replica": 1}), "replica"),
    (
        "tensor 0",
        with_spec(prefill={"parallelism": {"tensor": 0}}),
        "spec.prefill.parallelism.tensor",
    ),
    (
        "pipeline 0",
        with_spec(decode={"parallelism": {"pipeline": 0}}),
        "spec.decode.parallelism.pipeline",
    ),
    (
        "tensor too large",
        with_spec(decode={"parallelism": {"tensor": 128}}),
        "spec.decode.parallelism.tensor",
    ),
    ("negative replicas", with_spec(prefill={"replicas": -1}), "spec.prefill.replicas"),
    (
        "tensor as string",
        with_spec(prefill={"parallelism": {"tensor": "two"}}),
        "spec.prefill.parallelism.tensor",
    ),
    (
        "min > max replicas",
        with_spec(prefill={"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}),
        "minReplicas must be less than or equal to maxReplicas",
    ),
    (
        "decode min > max",
        with_spec(decode={"autoscaling": {"minReplicas": 3, "maxReplicas": 1}}),
        "spec.decode.autoscaling.minReplicas",
    ),
    (
        "ratio min > max",
        with_spec(autoscaling={"prefillToDecodeRatio": {"min": 3, "max": 1}}),
        "spec.autoscaling.prefillToDecodeRatio",
    ),
    (
        "ratio zero",
        with_spec(autoscaling={"prefillToDecodeRatio": {"min": 0, "max": 1}}),
        "spec.autoscaling.prefillToDecodeRatio.min",
    ),
    (
        "lmcache block with nixl",
        with_spec(kvTransfer={"connector": "nixl", "lmcache": {"chunkSize": 256}}),
        "kvTransfer.lmcache may only be set when connector is lmcache",
    ),
    (
        "nixl block with lmcache",
        with_spec(kvTransfer={"connector": "lmcache", "nixl": {}}),
        "kvTransfer.nixl may only be set when connector is nixl",
    ),
    (
        "unknown connector",
        with_spec(kvTransfer={"connector": "mooncake"}),
        "spec.kvTransfer.connector",
    ),
    (
        "nixl decode tp < prefill tp",
        with_spec(
            kvTransfer={"connector": "nixl"},
            prefill={"parallelism": {"tensor": 4}},
            decode={"parallelism": {"tensor": 2}},
        ),
        "decode.parallelism.tensor >= prefill.parallelism.tensor",
    ),
    ("router policy", with_spec(router={"policy": "random"}), "spec.router.policy"),
    (
        "min prompt tokens",
        with_spec(router={"disaggregation": {"minPromptTokens": -1}}),
        "spec.router.disaggregation.minPromptTokens",
    ),
    ("interval format", with_spec(autoscaling={"interval": "soon"}), "spec.autoscaling.interval"),
    (
        "replicas outside autoscaling bounds",
        with_spec(autoscaling={"enabled": True}, prefill={"replicas": 9}),
        "prefill.replicas must lie within",
    ),
    (
        "maxGPUs below minimum",
        with_spec(autoscaling={"maxGPUs": 1}, prefill={"parallelism": {"tensor": 2}}),
        "autoscaling.maxGPUs is below",
    ),
    (
        "token secret for pvc",
        with_spec(model={"uri": "pvc://weights/llama", "tokenSecretRef": {"name": "hf"}}),
        "tokenSecretRef is only used for hf:// models",
    ),
    (
        "revision for s3",
        with_spec(model={"uri": "s3://bucket/llama", "revision": "main"}),
        "revision is only used for hf:// models",
    ),
    (
        "draft without model",
        with_spec(engine={"speculativeDecoding": {"method": "draft"}}),
        "draftModel is required when method is draft",
    ),
    (
        "ngram with draft model",
        with_spec(engine={"speculativeDecoding": {"method": "ngram", "draftModel": "o/m"}}),
        "draftModel must not be set when method is ngram",
    ),
    ("kv cache dtype", with_spec(engine={"kvCacheDtype": "int4"}), "spec.engine.kvCacheDtype"),
    ("shm quantity", with_spec(engine={"shmSize": "lots"}), "spec.engine.shmSize"),
    (
        "buffer quantity",
        with_spec(kvTransfer={"lmcache": {"decodeBufferSize": "2 GB"}}),
        "spec.kvTransfer.lmcache.decodeBufferSize",
    ),
    (
        "kv usage > 100",
        with_spec(decode={"autoscaling": {"targetKVCacheUsagePercent": 150}}),
        "spec.decode.autoscaling.targetKVCacheUsagePercent",
    ),
    (
        "prometheus without settings",
        with_spec(autoscaling={"source": {"type": "prometheus"}}),
        "prometheus settings are required when type is prometheus",
    ),
    (
        "different gpu resources",
        with_spec(decode={"resources": {"gpuResourceName": "amd.com/gpu"}}),
        "same resources.gpuResourceName",
    ),
    ("engine port", with_spec(engine={"port": 70000}), "spec.engine.port"),
    ("service type", with_spec(router={"serviceType": "ExternalName"}), "spec.router.serviceType"),
    (
        "startup budget",
        with_spec(engine={"startupTimeoutSeconds": 5}),
        "spec.engine.startupTimeoutSeconds",
    ),
    ("name too long", named("a" * 41), "metadata.name must be at most 40 characters"),
]


def test_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize(("case", "doc", "needle"), CASES, ids=[c[0] for c in CASES])
def test_rejected_by_api_server(
    cluster: str, chart: str, namespace: str, case: str, doc: dict[str, Any], needle: str
) -> None:
    r = h.apply(doc, namespace=namespace, check=False)
    assert r.returncode != 0, f"{case}: the API server accepted an invalid manifest"
    assert needle in r.stderr, r.stderr
    assert not h.kget("inferenceservices", namespace=namespace)["items"]


def test_defaults_filled_by_api_server(cluster: str, chart: str, namespace: str) -> None:
    doc = named("defaults")
    h.apply(doc, namespace=namespace)
    obj = h.isvc("defaults", namespace)
    spec = obj["spec"]
    assert spec["kvTransfer"]["connector"] == "lmcache"
    assert spec["prefill"]["parallelism"] == {"tensor": 1, "pipeline": 1}
    assert spec["decode"]["autoscaling"]["targetKVCacheUsagePercent"] == 80
    assert spec["router"]["policy"] == "least-loaded"
    assert spec["autoscaling"]["interval"] == "10s"
