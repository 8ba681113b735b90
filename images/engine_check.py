"""Prove that an engine environment can move KV, not only that its packages import.

Run by ``images/engine.Dockerfile`` at build time (``--cuda``: the image must carry the CUDA
paths) and by the data-plane tier against the CPU environment (without ``--cuda``). Each check
prints one line; the exit status is the number of failed checks.

What ``--cuda`` proves, and why each matters:

- LMCache's compiled ``lmcache.cuda_ops`` extension loads and exposes ops. LMCache 0.5.6 binds
  it *softly* (``v1/platform/devices/cuda/device_ops.py``: a missing extension logs a warning and
  falls back to torch ops), so a broken build would otherwise serve at a fraction of the speed.
- NIXL's UCX plugin is present and registers ``VRAM`` memory: without a CUDA-enabled UCX, vLLM's
  NixlConnector and LMCache's NIXL channel cannot register GPU KV at all.
- NIXL's bundled UCX carries its CUDA transports (``libuct_cuda``: cuda_copy / cuda_ipc).
- The installed versions equal the pins the operator was tested with.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
from collections.abc import Callable
from pathlib import Path


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "missing"


def check_versions(pins: dict[str, str]) -> Callable[[], str]:
    def run() -> str:
        found = {dist: _version(dist) for dist in pins}
        wrong = {d: v for d, v in found.items() if not v.startswith(pins[d])}
        if wrong:
            raise AssertionError(f"versions {wrong}, expected {pins}")
        return ", ".join(f"{d} {v}" for d, v in found.items())

    return run


def check_connectors() -> str:
    from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory

    registry = KVConnectorFactory._registry
    missing = {"NixlConnector", "LMCacheConnectorV1"} - set(registry)
    if missing:
        raise AssertionError(f"vLLM's KV connector registry lacks {sorted(missing)}")
    return "vLLM registers NixlConnector and LMCacheConnectorV1"


def _nixl_agent() -> object:
    from nixl._api import nixl_agent, nixl_agent_config

    return nixl_agent("tandem-engine-check", nixl_agent_config(backends=[]))


def check_nixl_ucx(cuda: bool) -> Callable[[], str]:
    def run() -> str:
        agent = _nixl_agent()
        plugins = agent.get_plugin_list()  # type: ignore[attr-defined]
        if "UCX" not in plugins:
            raise AssertionError(f"NIXL has no UCX plugin (plugins: {plugins})")
        mems = agent.get_plugin_mem_types("UCX")  # type: ignore[attr-defined]
        if cuda and "VRAM" not in mems:
            raise AssertionError(f"NIXL's UCX plugin cannot register GPU memory: {mems}")
        return f"NIXL UCX plugin, memory types {sorted(mems)}"

    return run


def check_ucx_cuda_transports() -> str:
    found = []
    for flavour in ("nixl_cu13", "nixl_cu12"):
        try:
            module = importlib.import_module(flavour)
        except ImportError:
            continue
        site = Path(module.__file__ or "").parent.parent
        found += sorted(site.glob(f"{flavour}.libs/ucx/libuct_cuda.so*"))
    if not found:
        raise AssertionError("no libuct_cuda in any NIXL CUDA flavour: UCX lacks CUDA transports")
    return f"UCX CUDA transports: {found[0].parent.parent.name}/ucx/{found[0].name}"


def check_lmcache_cuda_ops() -> str:
    native = importlib.import_module("lmcache.cuda_ops")
    ops = [n for n in dir(native) if not n.startswith("_") and callable(getattr(native, n))]
    if not ops:
        raise AssertionError("lmcache.cuda_ops exposes no ops")
    return f"lmcache.cuda_ops: {len(ops)} ops"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuda", action="store_true", help="require the CUDA paths")
    parser.add_argument("--vllm", default="0.32.0")
    parser.add_argument("--lmcache", default="0.5.6")
    parser.add_argument("--nixl", default="1.5.1")
    args = parser.parse_args(argv)
    checks: list[tuple[str, Callable[[], str]]] = [
        ("versions", check_versions({"lmcache": args.lmcache, "nixl": args.nixl})),
        ("vllm", check_versions({"vllm": args.vllm})),
        ("connectors", check_connectors),
        ("nixl-ucx", check_nixl_ucx(args.cuda)),
    ]
    if args.cuda:
        checks += [
            ("ucx-cuda", check_ucx_cuda_transports),
            ("lmcache-cuda-ops", check_lmcache_cuda_ops),
        ]
    failed = 0
    for name, check in checks:
        try:
            print(f"ok   {name}: {check()}")
        except Exception as e:  # each check reports, the exit status counts
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
    return failed


if __name__ == "__main__":
    raise SystemExit(main())
