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
  lines 411-416) splits each ``[block_size, 2*head_size]`` (block, head) tile as
  ``view(2*block_size, head_size).chunk(2)``: the first ``block_size`` rows are K, the rest V.

:class:`CpuPagedConnector` does the two copies LMCache needs (paged cache -> memory object on
the sender, memory object -> paged cache on the receiver) with torch indexing on that CPU
layout, in LMCache's ``KV_2LTD`` object format ``[2, layers, tokens, heads*head_size]``.
Everything that makes up the hand-off stays LMCache's and vLLM's own code: the vLLM adapter and
scheduler hooks, token hashing and lookup, ``PDBackendAsync`` (receiver allocation over ZMQ,
NIXL/UCX write into the receiver's CPU buffer, registered as ``cpu`` memory), the ``ProxyNotif``
"KV ready" message to the router, and the receiver's retrieve.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
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

    class CpuPagedConnector(GPUConnectorInterface):  # type: ignore[misc]
        """vLLM CPU paged KV cache <-> LMCache ``KV_2LTD`` memory objects, by torch indexing.

        vLLM 0.32's CPU backend registers one tensor per layer,
        ``[num_blocks, num_kv_heads, block_size, 2 * head_size]``; viewed as
        ``[num_blocks, num_kv_heads, 2, block_size, head_size]`` index 0 is K and 1 is V.
        A token in slot ``s`` lives at block ``s // block_size``, row ``s % block_size``.
        """

        def __init__(self, num_layers: int, num_kv_heads: int, head_size: int) -> None:
            self.num_layers = num_layers
            self.num_kv_heads = num_kv_heads
            self.head_size = head_size
            self.hidden_dim_size = num_kv_heads * head_size
            self.kvcaches: list[torch.Tensor] | None = None
            self._key: tuple[int, ...] = ()
            self._views: list[torch.Tensor] = []
            self.block_size = 0

        def initialize_kvcaches_ptr(self, **kwargs: Any) -> None:
            if "kvcaches" in kwargs:
                self.kvcaches = list(kwargs["kvcaches"])

        def _layers(self) -> list[torch.Tensor]:
            assert self.kvcaches, "kvcaches must be passed to the connector"
            key = tuple(t.data_ptr() for t in self.kvcaches)
            if key == self._key:
                return self._views
            views = []
            for t in self.kvcaches:
                nb, nh, bs, cs = t.shape
                if t.device.type != "cpu" or nh != self.num_kv_heads or cs != 2 * self.head_size:
                    raise ValueError(f"unexpected CPU KV cache {tuple(t.shape)} on {t.device}")
                if not t.is_contiguous():
                    raise ValueError(f"non-contiguous CPU KV cache, strides {t.stride()}")
                views.append(t.view(nb, nh, 2, bs, self.head_size))
            if len(views) != self.num_layers:
                raise ValueError(f"{len(views)} KV layers, LMCache expects {self.num_layers}")
            self.block_size = views[0].shape[3]
            log.info("tandem CPU shim: %d layers of %s %s", len(views), tuple(t.shape), t.dtype)
            self._key, self._views = key, views
            return views

        def _where(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            slots = slots.to(device="cpu", dtype=torch.long)
            return slots // self.block_size, slots % self.block_size

        def from_gpu(self, memory_obj: Any, start: int, end: int, **kwargs: Any) -> None:
            self.initialize_kvcaches_ptr(**kwargs)
            layers = self._layers()
            if memory_obj.metadata.fmt != MemoryFormat.KV_2LTD:
                raise ValueError(f"memory object format {memory_obj.metadata.fmt}, want KV_2LTD")
            block, row = self._where(kwargs["slot_mapping"][start:end])
            n = end - start
            out = memory_obj.tensor
            for i, layer in enumerate(layers):
                tokens = layer[block, :, :, row, :]  # [n, heads, 2, head_size]
                out[:, i, :n].copy_(tokens.permute(2, 0, 1, 3).reshape(2, n, -1))

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
            block, row = self._where(kwargs["slot_mapping"][start + skip : end])
            src = memory_obj.tensor
            for i, layer in enumerate(layers):
                kv = src[:, i, skip : skip + n].reshape(2, n, self.num_kv_heads, self.head_size)
                layer[block, :, :, row, :] = kv.permute(1, 2, 0, 3).to(layer.dtype)

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
