"""KV hand-off over NIXL as the engine image pins it (nixl 1.5.1), against a plain device copy.

What the NixlConnector does between a prefill and a decode engine, without the engines: the
"prefill" process holds a KV cache laid out as vLLM lays it out (per layer
``[2, blocks, block_size, kv_heads, head_dim]``), registers it with a NIXL agent (UCX backend)
and publishes its agent metadata and block descriptors; the "decode" process registers its own
cache, adds the remote agent and READs the prompt's blocks, one descriptor per layer, K/V and
block, exactly the granularity the connector transfers. The data is checked (a checksum of what
arrived against what was sent), and the time is compared with the named baseline measured in
the same run: one contiguous ``torch`` copy of the same number of bytes on the same device.

    python bench/nixl_kv_bench.py                     # GPU (VRAM), Llama-3.1-8B KV geometry
    python bench/nixl_kv_bench.py --device cpu --layers 4 --tokens 512 2048   # DRAM, anywhere

Needs ``torch`` and ``nixl`` (with ``nixl-cu13`` or ``nixl-cu12``) importable; not part of the
test suite (CI has no GPU). On one GPU both processes share the device, so this measures NIXL's
same-node path (UCX cuda_ipc), not the cross-node RDMA a real cluster uses.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Geometry:
    """The KV cache shape of one engine (defaults: Llama-3.1-8B, bf16, 16-token blocks)."""

    layers: int = 32
    kv_heads: int = 8
    head_dim: int = 128
    block_size: int = 16
    dtype_bytes: int = 2

    @property
    def block_bytes(self) -> int:
        """Bytes of one block of K (or V) in one layer: one transfer descriptor."""
        return self.block_size * self.kv_heads * self.head_dim * self.dtype_bytes

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)


def _cache(geo: Geometry, blocks: int, device: str, fill: bool) -> list[Any]:
    import torch

    shape = (2, blocks, geo.block_size, geo.kv_heads, geo.head_dim)
    out = []
    for layer in range(geo.layers):
        t = torch.empty(shape, dtype=torch.bfloat16, device=device)
        if fill:
            g = torch.Generator(device=device).manual_seed(1234 + layer)
            t.copy_(torch.randn(shape, generator=g, device=device, dtype=torch.float32))
        else:
            t.zero_()
        out.append(t)
    return out


def _descriptors(cache: list[Any], geo: Geometry, blocks: int) -> Any:
    """One (address, length, device) row per layer, K/V and block, as the connector sends."""
    import numpy as np

    rows = []
    for t in cache:
        dev = max(t.get_device(), 0)
        base = t.data_ptr()
        for kv in range(2):
            for b in range(blocks):
                offset = (kv * t.shape[1] + b) * geo.block_bytes
                rows.append((base + offset, geo.block_bytes, dev))
    return np.array(rows, dtype=np.uint64)


def _checksum(cache: list[Any], blocks: int) -> float:
    import torch

    return float(sum(t[:, :blocks].to(torch.float64).sum().item() for t in cache))


def _mem_type(device: str) -> str:
    return "DRAM" if device == "cpu" else "VRAM"


def prefill_side(conn: Any, geo: Geometry, blocks: int, device: str) -> None:
    """The KV producer: fill the cache, register it, publish metadata and descriptors."""
    from nixl._api import nixl_agent, nixl_agent_config

    cache = _cache(geo, blocks, device, fill=True)
    agent = nixl_agent("prefill", nixl_agent_config(backends=["UCX"]))
    agent.register_memory(cache)
    conn.send(
        {
            "metadata": agent.get_agent_metadata(),
            "descs": _descriptors(cache, geo, blocks),
        }
    )
    while True:
        msg = conn.recv()
        if msg["op"] == "checksum":
            conn.send(_checksum(cache, msg["blocks"]))
        elif msg["op"] == "stop":
            return


def decode_side(
    conn: Any, geo: Geometry, blocks: int, device: str, tokens: list[int], iters: int
) -> list[dict[str, Any]]:
    """The KV consumer: READ each prompt's blocks from the producer and time it."""
    import torch
    from nixl._api import nixl_agent, nixl_agent_config

    hello = conn.recv()
    cache = _cache(geo, blocks, device, fill=False)
    agent = nixl_agent("decode", nixl_agent_config(backends=["UCX"]))
    agent.register_memory(cache)
    remote = agent.add_remote_agent(hello["metadata"])
    mem = _mem_type(device)
    local_side = agent.prep_xfer_dlist("NIXL_INIT_AGENT", _descriptors(cache, geo, blocks), mem)
    remote_side = agent.prep_xfer_dlist(remote, hello["descs"], mem)
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    results = []
    for n_tokens in tokens:
        n_blocks = geo.blocks_for(n_tokens)
        # Descriptor i is (layer, kv, block) in the same order on both sides.
        idx = [
            (layer * 2 + kv) * blocks + b
            for layer in range(geo.layers)
            for kv in range(2)
            for b in range(n_blocks)
        ]
        nbytes = len(idx) * geo.block_bytes
        times = []
        for i in range(iters + 1):
            for t in cache:
                t.zero_()
            sync()
            start = time.perf_counter()
            handle = agent.make_prepped_xfer("READ", local_side, idx, remote_side, idx)
            state = agent.transfer(handle)
            while state == "PROC":
                state = agent.check_xfer_state(handle)
            if state != "DONE":
                raise RuntimeError(f"NIXL transfer ended in state {state}")
            elapsed = time.perf_counter() - start
            agent.release_xfer_handle(handle)
            if i:  # the first transfer sets up the connection
                times.append(elapsed)
        conn.send({"op": "checksum", "blocks": n_blocks})
        want = conn.recv()
        got = _checksum(cache, n_blocks)
        # Baseline: one contiguous copy of the same number of bytes on the same device.
        src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device)
        dst = torch.empty_like(src)
        base = []
        for i in range(iters + 1):
            sync()
            start = time.perf_counter()
            dst.copy_(src)
            sync()
            if i:
                base.append(time.perf_counter() - start)
        del src, dst
        results.append(
            {
                "tokens": n_tokens,
                "descriptors": len(idx),
                "bytes": nbytes,
                "nixl_s": statistics.median(times),
                "copy_s": statistics.median(base),
                "checksum_ok": abs(got - want) <= 1e-6 * max(1.0, abs(want)),
            }
        )
    conn.send({"op": "stop"})
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (VRAM) or cpu (DRAM)")
    ap.add_argument("--tokens", type=int, nargs="+", default=[512, 2048, 8192, 32768])
    ap.add_argument("--layers", type=int, default=Geometry.layers)
    ap.add_argument("--kv-heads", type=int, default=Geometry.kv_heads, help="per TP rank")
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()
    geo = Geometry(layers=args.layers, kv_heads=args.kv_heads)
    blocks = geo.blocks_for(max(args.tokens))
    ctx = mp.get_context("spawn")
    a, b = ctx.Pipe()
    producer = ctx.Process(target=prefill_side, args=(a, geo, blocks, args.device))
    producer.start()
    consumer_conn, decode_conn = ctx.Pipe()
    consumer = ctx.Process(
        target=_decode_entry,
        args=(b, decode_conn, geo, blocks, args.device, args.tokens, args.iters),
    )
    consumer.start()
    results = consumer_conn.recv()
    consumer.join(timeout=60)
    producer.join(timeout=60)
    print(f"geometry: {asdict(geo)}, block descriptor {geo.block_bytes} B, device {args.device}")
    print(
        f"{'tokens':>8}{'descs':>8}{'MiB':>9}{'nixl ms':>10}{'GB/s':>8}"
        f"{'copy ms':>10}{'GB/s':>8}{'ratio':>8}  data"
    )
    ok = True
    for r in results:
        gb = r["bytes"] / 1e9
        ratio = r["nixl_s"] / r["copy_s"]
        ok &= r["checksum_ok"]
        print(
            f"{r['tokens']:>8}{r['descriptors']:>8}{r['bytes'] / 2**20:>9.1f}"
            f"{r['nixl_s'] * 1e3:>10.2f}{gb / r['nixl_s']:>8.1f}"
            f"{r['copy_s'] * 1e3:>10.2f}{gb / r['copy_s']:>8.1f}{ratio:>7.2f}x  "
            + ("ok" if r["checksum_ok"] else "MISMATCH")
        )
    print("ratio = NIXL READ time / one contiguous torch copy of the same bytes (same run)")
    print(json.dumps(results))
    return 0 if ok else 1


def _decode_entry(
    peer: Any, report: Any, geo: Geometry, blocks: int, device: str, tokens: list[int], iters: int
) -> None:
    report.send(decode_side(peer, geo, blocks, device, tokens, iters))


if __name__ == "__main__":
    raise SystemExit(main())
