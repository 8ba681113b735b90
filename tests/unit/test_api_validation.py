"""The API models reject bad specs with a message that names the field.

These are the operator-side rules (pydantic); the same cross-field rules run in the API server
as CEL (tested end to end against a real kube-apiserver in e2e/).
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tandem.api.v1alpha1 import InferenceServiceSpec, parse_duration
from tandem.reconcile.reconciler import format_validation_error
from tests.conftest import EXAMPLES, load_example, make_spec

BAD: list[tuple[str, dict[str, Any], str]] = [
    ("missing model", {"model": None}, "model"),
    ("bad uri scheme", make_spec(model={"uri": "http://x/y"}), "model.uri"),
    ("hf uri without org", make_spec(model={"uri": "hf://model"}), "model.uri"),
    ("unknown top-level field", make_spec(bogus=1), "bogus"),
    ("unknown nested field", make_spec(prefill={"replica": 2}), "prefill.replica"),
    (
        "tensor zero",
        make_spec(prefill={"parallelism": {"tensor": 0}}),
        "prefill.parallelism.tensor",
    ),
    (
        "pipeline zero",
        make_spec(decode={"parallelism": {"pipeline": 0}}),
        "decode.parallelism.pipeline",
    ),
    ("negative replicas", make_spec(decode={"replicas": -1}), "decode.replicas"),
    (
        "min > max",
        make_spec(prefill={"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}),
        "prefill.autoscaling.minReplicas",
    ),
    (
        "ratio min > max",
        make_spec(autoscaling={"prefillToDecodeRatio": {"min": 4, "max": 1}}),
        "prefillToDecodeRatio.min",
    ),
    (
        "ratio zero",
        make_spec(autoscaling={"prefillToDecodeRatio": {"min": 0, "max": 1}}),
        "prefillToDecodeRatio.min",
    ),
    (
        "lmcache block with nixl",
        make_spec(kvTransfer={"connector": "nixl", "lmcache": {}}),
        "kvTransfer.lmcache",
    ),
    (
        "nixl block with lmcache",
        make_spec(kvTransfer={"connector": "lmcache", "nixl": {}}),
        "kvTransfer.nixl",
    ),
    ("unknown connector", make_spec(kvTransfer={"connector": "mooncake"}), "kvTransfer.connector"),
    (
        "nixl decode tp < prefill tp",
        make_spec(
            kvTransfer={"connector": "nixl"},
            prefill={"parallelism": {"tensor": 4}},
            decode={"parallelism": {"tensor": 2}},
        ),
        "decode.parallelism.tensor",
    ),
    ("bad router policy", make_spec(router={"policy": "random"}), "router.policy"),
    (
        "negative min prompt tokens",
        make_spec(router={"disaggregation": {"minPromptTokens": -5}}),
        "router.disaggregation.minPromptTokens",
    ),
    ("bad interval", make_spec(autoscaling={"interval": "ten seconds"}), "autoscaling.interval"),
    (
        "replicas outside bounds",
        make_spec(
            autoscaling={"enabled": True},
            prefill={"replicas": 9, "autoscaling": {"maxReplicas": 4}},
        ),
        "prefill.replicas",
    ),
    (
        "maxGPUs below minimum",
        make_spec(autoscaling={"maxGPUs": 1}, prefill={"parallelism": {"tensor": 2}}),
        "autoscaling.maxGPUs",
    ),
    (
        "token secret for pvc",
        make_spec(model={"uri": "pvc://weights/llama", "tokenSecretRef": {"name": "hf"}}),
        "model.tokenSecretRef",
    ),
    (
        "revision for s3",
        make_spec(model={"uri": "s3://bucket/llama", "revision": "main"}),
        "model.revision",
    ),
    (
        "draft without model",
        make_spec(engine={"speculativeDecoding": {"method": "draft"}}),
        "speculativeDecoding.draftModel",
    ),
    (
        "ngram with draft model",
        make_spec(engine={"speculativeDecoding": {"method": "ngram", "draftModel": "x/y"}}),
        "speculativeDecoding.draftModel",
    ),
    ("bad kv cache dtype", make_spec(engine={"kvCacheDtype": "int4"}), "engine.kvCacheDtype"),
    ("bad quantity", make_spec(engine={"shmSize": "lots"}), "engine.shmSize"),
    (
        "bad buffer size",
        make_spec(kvTransfer={"lmcache": {"prefillBufferSize": "1 GB"}}),
        "lmcache.prefillBufferSize",
    ),
    (
        "kv usage over 100",
        make_spec(decode={"autoscaling": {"targetKVCacheUsagePercent": 150}}),
        "decode.autoscaling.targetKVCacheUsagePercent",
    ),
    (
        "prometheus without settings",
        make_spec(autoscaling={"source": {"type": "prometheus"}}),
        "source.prometheus",
    ),
    (
        "different gpu resources",
        make_spec(decode={"resources": {"gpuResourceName": "amd.com/gpu"}}),
        "decode.resources.gpuResourceName",
    ),
    ("bad port", make_spec(engine={"port": 70000}), "engine.port"),
    ("bad service type", make_spec(router={"serviceType": "ExternalName"}), "router.serviceType"),
    (
        "bad env name",
        make_spec(engine={"env": [{"name": "1X", "value": "y"}]}),
        "engine.env.0.name",
    ),
    (
        "toleration operator",
        make_spec(prefill={"tolerations": [{"key": "a", "operator": "In"}]}),
        "prefill.tolerations.0.operator",
    ),
]


@pytest.mark.parametrize(("case", "raw", "field"), BAD, ids=[b[0] for b in BAD])
def test_bad_spec_names_the_field(case: str, raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        InferenceServiceSpec.model_validate(raw)
    message = format_validation_error(exc.value)
    assert field in message, message


def test_at_least_thirty_bad_specs() -> None:
    assert len(BAD) >= 30


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_validate(path: Any) -> None:
    doc = load_example(path)
    spec = InferenceServiceSpec.model_validate(doc["spec"])
    assert spec.model.uri


def test_defaults_are_explicit() -> None:
    spec = InferenceServiceSpec.model_validate(make_spec())
    wire = spec.wire()
    assert wire["kvTransfer"] == {"connector": "lmcache"}
    assert wire["prefill"]["parallelism"] == {"tensor": 1, "pipeline": 1}
    assert wire["decode"]["autoscaling"]["targetKVCacheUsagePercent"] == 80
    assert "targetKVCacheUsagePercent" not in wire["prefill"]["autoscaling"]
    assert wire["router"]["policy"] == "least-loaded"
    assert wire["autoscaling"]["enabled"] is False


def test_wire_round_trip() -> None:
    for path in EXAMPLES:
        spec = InferenceServiceSpec.model_validate(load_example(path)["spec"])
        again = InferenceServiceSpec.model_validate(spec.wire())
        assert again == spec


@pytest.mark.parametrize(("text", "seconds"), [("10s", 10), ("2m", 120), ("1h", 3600)])
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


def test_parse_duration_rejects() -> None:
    with pytest.raises(ValueError):
        parse_duration("10")
