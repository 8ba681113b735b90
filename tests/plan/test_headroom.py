"""A connector buffer that cannot fit next to vLLM's KV cache is refused before anything runs."""

from __future__ import annotations

from typing import Any

from tandem.api.v1alpha1 import InferenceServiceSpec
from tandem.api.vocabulary import Role
from tandem.plan import Owner, plan_service
from tandem.plan.admission import check_plan
from tandem.plan.headroom import GPU_MEMORY_LABEL, gpu_memory_bytes
from tests.conftest import EXAMPLES, load_example, make_spec

H100 = 81559  # MiB, what GPU Feature Discovery reports for an H100 80GB HBM3


def node(mib: int | None, **labels: str) -> dict[str, Any]:
    if mib is not None:
        labels[GPU_MEMORY_LABEL] = str(mib)
    return {"metadata": {"labels": labels}}


def plan(**overrides: Any):  # type: ignore[no-untyped-def]
    spec = InferenceServiceSpec.model_validate(make_spec(**overrides))
    return plan_service(spec, Owner("svc", "ml", "uid"))


def test_default_buffers_fit_an_h100() -> None:
    assert check_plan(plan(), [node(H100)]) is None


def test_decode_buffer_beyond_headroom_is_refused() -> None:
    p = plan(
        engine={"gpuMemoryUtilizationPercent": 90},
        kvTransfer={"lmcache": {"decodeBufferSize": "8Gi"}},
    )
    r = check_plan(p, [node(H100)])
    assert r is not None and r.reason == "KVBufferExceedsHeadroom"
    assert r.message.startswith("spec.decode: the KV transfer buffer (8.0 GiB per GPU")
    assert "gpuMemoryUtilizationPercent 90" in r.message
    # Lower utilization leaves room for it.
    roomy = plan(
        engine={"gpuMemoryUtilizationPercent": 80},
        kvTransfer={"lmcache": {"decodeBufferSize": "8Gi"}},
    )
    assert check_plan(roomy, [node(H100)]) is None


def test_vllm_default_utilization_is_assumed() -> None:
    # 0.92 x 80 GiB leaves ~6.4 GiB: a 6 GiB buffer plus 1 GiB reserve does not fit.
    p = plan(kvTransfer={"lmcache": {"prefillBufferSize": "6Gi"}})
    r = check_plan(p, [node(H100)])
    assert r is not None and r.message.startswith("spec.prefill:")


def test_host_buffers_and_nixl_need_no_gpu_headroom() -> None:
    cpu = plan(kvTransfer={"lmcache": {"decodeBufferSize": "64Gi", "bufferDevice": "cpu"}})
    assert cpu.pool(Role.DECODE).gpu_buffer_bytes == 0
    assert check_plan(cpu, [node(H100)]) is None
    nixl = plan(kvTransfer={"connector": "nixl"}, engine={"gpuMemoryUtilizationPercent": 99})
    assert check_plan(nixl, [node(H100)]) is None


def test_unknown_gpu_memory_checks_nothing() -> None:
    p = plan(kvTransfer={"lmcache": {"decodeBufferSize": "64Gi"}})
    assert check_plan(p, [node(None)]) is None
    assert check_plan(p, None) is None


def test_smallest_matching_gpu_decides() -> None:
    nodes = [node(H100, pool="big"), node(40960, pool="small"), node(24576, pool="other")]
    assert gpu_memory_bytes(nodes, {}) == 24576 << 20
    assert gpu_memory_bytes(nodes, {"pool": "big"}) == H100 << 20
    p = plan(
        decode={"nodeSelector": {"pool": "big"}},
        kvTransfer={"lmcache": {"decodeBufferSize": "4Gi"}},
    )
    assert check_plan(p, nodes) is not None  # prefill may land on the 24 GiB GPU: 1Gi ok there
    assert check_plan(p, [node(H100, pool="big")]) is None


def test_examples_fit_the_gpus_they_select() -> None:
    for path in EXAMPLES:
        doc = load_example(path)
        p = plan_service(InferenceServiceSpec.model_validate(doc["spec"]), Owner("x", "y", "z"))
        assert (
            check_plan(p, [node(H100, **{"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"})])
            is None
        ), path.stem
