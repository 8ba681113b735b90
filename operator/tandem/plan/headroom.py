"""Does a connector's GPU buffer fit next to vLLM's KV cache? (issue: "buffers that fit")

LMCache's PD buffer is allocated *after* vLLM has profiled memory and sized its KV cache to
``--gpu-memory-utilization`` of the GPU (vLLM 0.32 ``v1/worker/gpu_worker.py:874``), so it has
to fit in what is left: ``(1 - utilization) x GPU memory``, next to the CUDA context and NCCL.
When it does not, the allocation fails inside LMCache, which catches it and serves in
"degraded mode" (recompute, ``v1/manager.py:104``): pods Ready, KV never moved. So the operator
refuses such a spec up front, when the nodes say how much memory their GPUs have (the
``nvidia.com/gpu.memory`` label of NVIDIA's GPU Feature Discovery, in MiB).

Sizing (see README, "Sizing the LMCache buffers"): one token's KV on one worker is
``2 x layers/pipeline x kv_heads/tensor x head_dim x bytes(kv dtype)``; a buffer must hold the
prompt tokens in flight through it (a decode buffer: those of every prefiller sending to it).
"""

from __future__ import annotations

from typing import Any, Final

from tandem.plan.model import PoolPlan

GPU_MEMORY_LABEL: Final = "nvidia.com/gpu.memory"  # MiB per GPU, from GPU Feature Discovery
# vLLM 0.32's default --gpu-memory-utilization (vllm/config/cache.py:102).
VLLM_DEFAULT_UTILIZATION: Final = 0.92
# Outside vLLM's budget besides the buffer: CUDA context, NCCL communicators, allocator slack.
RESERVED_BYTES: Final = 1 << 30
GIB: Final = float(1 << 30)


def gpu_memory_bytes(nodes: list[dict[str, Any]], matching: dict[str, str]) -> int | None:
    """The smallest GPU memory among nodes matching ``matching`` that publish it, or None."""
    sizes = []
    for node in nodes:
        node_labels = node.get("metadata", {}).get("labels", {}) or {}
        if not all(node_labels.get(k) == v for k, v in matching.items()):
            continue
        try:
            sizes.append(int(node_labels[GPU_MEMORY_LABEL]) << 20)
        except (KeyError, ValueError):
            continue
    return min(sizes) if sizes else None


def headroom_problem(pool: PoolPlan, gpu_bytes: int) -> str | None:
    """Why the pool's connector buffer cannot fit beside vLLM on a GPU of ``gpu_bytes``."""
    if pool.gpu_buffer_bytes == 0:
        return None
    utilization = pool.gpu_memory_utilization or VLLM_DEFAULT_UTILIZATION
    headroom = int((1 - utilization) * gpu_bytes)
    need = pool.gpu_buffer_bytes + RESERVED_BYTES
    if need <= headroom:
        return None
    return (
        f"spec.{pool.role}: the KV transfer buffer ({pool.gpu_buffer_bytes / GIB:.1f} GiB per "
        f"GPU, plus {RESERVED_BYTES / GIB:.0f} GiB for CUDA and NCCL) does not fit in the "
        f"{headroom / GIB:.1f} GiB vLLM leaves free on a {gpu_bytes / GIB:.0f} GiB GPU at "
        f"gpuMemoryUtilizationPercent {round(utilization * 100)}; lower the buffer size or "
        "engine.gpuMemoryUtilizationPercent"
    )
