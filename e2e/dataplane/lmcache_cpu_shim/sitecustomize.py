"""TEST-ONLY: a CPU "GPU connector" for LMCache 0.5.6, so its PD hand-off runs on vLLM's CPU build.

Only the data-plane tier loads this file: ``test_lmcache_cpu.py`` puts this directory on the
``PYTHONPATH`` of the two engine processes it starts (Python imports ``sitecustomize`` at
start-up, and vLLM's EngineCore/Worker children inherit the variable). Nothing installed is
modified, no image ships it, and the operator never renders it.

What it changes, and nothing else: the module attribute
``lmcache.v1.gpu_connector.CreateGPUConnector`` (looked up at call time by
``vllm_service_factory.py:184-203``) is wrapped, right after LMCache imports that module, so that
for a vLLM worker on the ``cpu`` device (non-MLA, no layerwise/blending/v3) it returns
:class:`CpuPagedConnector` below instead of raising
``RuntimeError: No supported cpu connector found.`` (``gpu_connector/__init__.py:247``), which
leaves LMCache in "degraded mode (recompute)" and moves no KV. Every other device/engine goes
to the original function.

Why a connector of its own rather than LMCache's non-CUDA ones (checked against 0.5.6):

- HPU (``hpu_connector.py``, torch ``index_select``/``index_copy_``): imports
  ``habana_frameworks.torch`` at line 20 (``ModuleNotFoundError`` here), asserts
  ``device.type == "hpu"``, calls ``torch.hpu.synchronize()``, and expects per-layer (K, V)
  tuples ``[blocks, block_size, heads, head_size]``.
- XPU (``xpu_connectors.py``): ``torch.xpu.Stream()`` in ``__init__`` (line 86; on this torch
  "Tried to instantiate dummy base class Stream"), asserts ``device.type == "xpu"``, and copies
  with ``device_ops.multi_layer_kv_transfer``, whose torch baseline (the CPU ``device_ops``)
  raises ``NotImplementedError: HND layouts are not supported in the non-CUDA fallback``
  (``platform/torch_ops/mem_kernels.py:51``) for the format LMCache detects for vLLM's CPU
  cache (``NL_X_NB_NH_BS_CS``).
- That format also means something else: LMCache documents its trailing axis as per-head
  content with K/V packed, while vLLM's CPU attention (``v1/attention/backends/cpu_attn.py``,
  lines 411-416) splits each ``[block_size, 2*head_size]`` (block, head) tile into a K half and a
  V half, and its ``cpu_attn_reshape_and_cache`` op lays K out per attention ISA: with the
  ``vec`` ISA (AVX2, this machine) K is stored transposed, ``[head_size, block_size]``, V as
  ``[block_size, head_size]``. (A first version of this shim read K row-wise: full blocks still
  round-tripped, but the last partial block lost K elements, and greedy output diverged at
  bf16 near-ties only, so the layout is now derived from vLLM's op, see :func:`block_layout`.)

:class:`CpuPagedConnector` does the two copies LMCache needs (paged cache -> memory object on
the sender, memory object -> paged cache on the receiver) with torch indexing, at the element
positions vLLM's own op uses, in LMCache's ``KV_2LTD`` object format
``[2, layers, tokens, heads*head_size]``. Everything that makes up the hand-off stays LMCache's
and vLLM's own code: the vLLM adapter and scheduler hooks, token hashing and lookup,
``PDBackendAsync`` (receiver allocation over ZMQ, NIXL/UCX write into the receiver's CPU
buffer, registered as ``cpu`` memory), the ``ProxyNotif`` "KV ready" message to the router, and
the receiver's retrieve.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import math
import sys
from typing import Any

TARGET = "lmcache.v1.gpu_connector"


def _install(module: Any) -> None:
    import torch
    from lmcache.logging import init_logger
    from lmcache.utils import EngineType
    from lmcache.v1.gpu_connector.gpu_connectors import GPUConnectorInterface
    from lmcache.v1.memory_management import MemoryFormat

    log = init_logger("tandem_lmcache_cpu_shim")
    original = module.CreateGPUConnector

    def block_layout(
        num_kv_heads: int, block_size: int, head_size: int, dtype: torch.dtype
    ) -> tuple[str, torch.Tensor]:
        """Where vLLM's CPU attention puts each K and V element inside one KV block.

        The layout depends on the attention ISA (``vec`` stores each (block, head) K tile
        transposed, ``[head_size, block_size]``, and V as ``[block_size, head_size]``; ``amx``
        and others differ), so it is not hard-coded: vLLM's own ``cpu_attn_reshape_and_cache``
        (the op its attention layers write the cache with, same ISA choice) writes coordinate
        codes into a scratch block, and the positions they land at are read back. Returns the
        ISA and ``[2 (K, V), block_size, heads, head_size]`` element offsets within a block.
        """
        from vllm import _custom_ops as ops
        from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

        isa = _get_attn_isa(dtype, block_size, head_size, "auto")
        shape = (block_size, num_kv_heads, head_size)
        # Every element's (token row, head, dim) coordinates, one tensor each.
        grid = torch.meshgrid(*(torch.arange(n) for n in shape), indexing="ij")
        scratch = torch.zeros(1, num_kv_heads, block_size, 2 * head_size, dtype=dtype)
        key_cache, value_cache = scratch.view(1, num_kv_heads, 2 * block_size, -1).chunk(2, dim=2)
        slots = torch.arange(block_size, dtype=torch.long)
        zero = torch.zeros(shape, dtype=dtype)
        offsets = []
        for plane in (0, 1):  # K, V
            found = []
            for coord in grid:
                code = (coord + 1).to(dtype)
                if not torch.equal(code.to(torch.long), coord + 1):
                    raise ValueError(
                        f"{dtype} cannot hold probe codes up to {int(coord.max()) + 1}"
                    )
                scratch.zero_()
                k, v = (code, zero) if plane == 0 else (zero, code)
                ops.cpu_attn_reshape_and_cache(k, v, key_cache, value_cache, slots, isa)
                found.append(scratch.view(-1).to(torch.long))
            where = (found[0] > 0).nonzero().flatten()
            if where.numel() != block_size * num_kv_heads * head_size:
                raise ValueError(f"probe wrote {where.numel()} elements, want {math.prod(shape)}")
            pos = torch.full(shape, -1, dtype=torch.long)
            pos[found[0][where] - 1, found[1][where] - 1, found[2][where] - 1] = where
            if (pos < 0).any():
                raise ValueError("probe did not place every element")
            offsets.append(pos)
        return isa, torch.stack(offsets)

    class CpuPagedConnector(GPUConnectorInterface):  # type: ignore[misc]
        """vLLM CPU paged KV cache <-> LMCache ``KV_2LTD`` memory objects, by torch indexing.

        vLLM 0.32's CPU backend registers one tensor per layer,
        ``[num_blocks, num_kv_heads, block_size, 2 * head_size]``; a token in slot ``s`` lives in
        block ``s // block_size`` at row ``s % block_size``, and :func:`block_layout` says where
        its K and V elements are inside the block.
        """

        def __init__(self, num_layers: int, num_kv_heads: int, head_size: int) -> None:
            self.num_layers = num_layers
            self.num_kv_heads = num_kv_heads
            self.head_size = head_size
            self.hidden_dim_size = num_kv_heads * head_size
            self.kvcaches: list[torch.Tensor] | None = None
            self._key: tuple[int, ...] = ()
            self._blocks: list[torch.Tensor] = []
            self._offsets = torch.empty(0)
            self.block_size = 0

        def initialize_kvcaches_ptr(self, **kwargs: Any) -> None:
            if "kvcaches" in kwargs:
                self.kvcaches = list(kwargs["kvcaches"])

        def _layers(self) -> list[torch.Tensor]:
            """Each layer's cache as ``[num_blocks, elements per block]``."""
            assert self.kvcaches, "kvcaches must be passed to the connector"
            key = tuple(t.data_ptr() for t in self.kvcaches)
            if key == self._key:
                return self._blocks
            first = self.kvcaches[0]
            nb, nh, bs, cs = first.shape
            for t in self.kvcaches:
                if t.device.type != "cpu" or t.shape != first.shape or t.dtype != first.dtype:
                    raise ValueError(
                        f"unexpected CPU KV cache {tuple(t.shape)} {t.dtype} {t.device}"
                    )
                if not t.is_contiguous():
                    raise ValueError(f"non-contiguous CPU KV cache, strides {t.stride()}")
            if nh != self.num_kv_heads or cs != 2 * self.head_size:
                raise ValueError(f"CPU KV cache {tuple(first.shape)} != LMCache kv_shape")
            if len(self.kvcaches) != self.num_layers:
                raise ValueError(
                    f"{len(self.kvcaches)} KV layers, LMCache expects {self.num_layers}"
                )
            if first.dtype not in (torch.bfloat16, torch.float16, torch.float32):
                raise ValueError(f"KV cache dtype {first.dtype} is not supported by this shim")
            isa, self._offsets = block_layout(nh, bs, self.head_size, first.dtype)
            self.block_size = bs
            log.info(
                "tandem CPU shim: %d layers of %s %s, attention ISA %s",
                len(self.kvcaches),
                tuple(first.shape),
                first.dtype,
                isa,
            )
            self._key = key
            self._blocks = [t.view(nb, -1) for t in self.kvcaches]
            return self._blocks

        def _where(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """Block index ``[n, 1, 1]`` and in-block offsets ``[2, n, heads, head_size]``."""
            slots = slots.to(device="cpu", dtype=torch.long)
            block = (slots // self.block_size).view(-1, 1, 1)
            return block, self._offsets[:, slots % self.block_size]

        def from_gpu(self, memory_obj: Any, start: int, end: int, **kwargs: Any) -> None:
            self.initialize_kvcaches_ptr(**kwargs)
            layers = self._layers()
            if memory_obj.metadata.fmt != MemoryFormat.KV_2LTD:
                raise ValueError(f"memory object format {memory_obj.metadata.fmt}, want KV_2LTD")
            n = end - start
            block, offsets = self._where(kwargs["slot_mapping"][start:end])
            out = memory_obj.tensor
            for i, layer in enumerate(layers):
                for plane in (0, 1):
                    out[plane, i, :n].copy_(layer[block, offsets[plane]].view(n, -1))

        def to_gpu(self, memory_obj: Any, start: int, end: int, **kwargs: Any) -> None:
            self.initialize_kvcaches_ptr(**kwargs)
            layers = self._layers()
            if memory_obj.metadata.fmt != MemoryFormat.KV_2LTD:
                raise ValueError(f"memory object format {memory_obj.metadata.fmt}, want KV_2LTD")
            # Tokens vLLM already holds (its prefix cache) are not overwritten, as in the
            # CUDA/XPU connectors.
            skip = min(end - start, max(0, kwargs.get("vllm_cached_tokens", 0) - start))
            n = end - start - skip
            if n <= 0:
                return
            block, offsets = self._where(kwargs["slot_mapping"][start + skip : end])
            src = memory_obj.tensor
            shape = (n, self.num_kv_heads, self.head_size)
            for i, layer in enumerate(layers):
                for plane in (0, 1):
                    values = src[plane, i, skip : skip + n].reshape(shape).to(layer.dtype)
                    layer[block, offsets[plane]] = values

        def batched_from_gpu(self, memory_objs: Any, starts: Any, ends: Any, **kwargs: Any) -> None:
            for obj, start, end in zip(memory_objs, starts, ends, strict=True):
                self.from_gpu(obj, start, end, **kwargs)

        def batched_to_gpu(self, memory_objs: Any, starts: Any, ends: Any, **kwargs: Any) -> None:
            for obj, start, end in zip(memory_objs, starts, ends, strict=True):
                self.to_gpu(obj, start, end, **kwargs)

        def get_shape(self, num_tokens: int) -> torch.Size:
            return torch.Size([2, self.num_layers, num_tokens, self.hidden_dim_size])

    def create_gpu_connector(
        config: Any, metadata: Any, engine: Any, layout_hints: Any = None
    ) -> Any:
        from lmcache import torch_device_type

        plain = not (
            metadata.use_mla
            or config.use_layerwise
            or config.enable_blending
            or config.use_gpu_connector_v3
        )
        if torch_device_type == "cpu" and engine == EngineType.VLLM and plain:
            num_layers, _, _, num_kv_heads, head_size = metadata.kv_shape
            log.info("tandem CPU shim: CpuPagedConnector for kv_shape %s", metadata.kv_shape)
            return CpuPagedConnector(num_layers, num_kv_heads, head_size)
        return original(config, metadata, engine, layout_hints)

    module.CreateGPUConnector = create_gpu_connector


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Finds ``lmcache.v1.gpu_connector`` as usual and patches it once it has executed."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        run = loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            _install(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


sys.meta_path.insert(0, _PatchAfterImport())
