#!/usr/bin/env python3
"""Validate ``--kv-transfer-config`` JSON strings with vLLM's own ``KVTransferConfig``.

Run with the data-plane venv's python (vLLM 0.32.0):

    "$VENV/bin/python" e2e/dataplane/kv_config_validate.py JSON [JSON ...]

Each argument is parsed exactly as ``vllm serve --kv-transfer-config JSON`` parses it
(``vllm/engine/arg_utils.py``: ``_expand_json_human_readable_numbers`` then
``pydantic.TypeAdapter(KVTransferConfig).validate_json``). ``KVTransferConfig`` is a pydantic
dataclass with ``extra="forbid"`` (``vllm/config/utils.py``), so unknown fields such as the
removed ``kv_buffer_size`` / ``kv_rank`` / ``kv_parallel_size`` / ``kv_ip`` are rejected, and
its ``__post_init__`` rejects a ``kv_connector`` without ``kv_role``. In addition the
connector name must be registered in ``KVConnectorFactory`` (vLLM itself would only fail at
engine start), unless ``kv_connector_module_path`` names an out-of-tree module.

Prints one JSON line per argument: ``{"ok", "input", "config"|"error"}``; ``config`` is the
parsed dataclass (``engine_id`` is a random uuid4 when not given). Exit 1 if any is rejected.
"""

from __future__ import annotations

import dataclasses
import json
import sys


def _registered_connectors() -> set[str] | None:
    try:
        from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory
    except Exception:
        return None
    reg = getattr(KVConnectorFactory, "_registry", None)
    return set(reg) if isinstance(reg, dict) else None


def parse(val: str):
    from pydantic import TypeAdapter
    from vllm.config import KVTransferConfig

    try:  # the same pre-processing as the CLI (k/M/G suffixes in numbers)
        from vllm.engine.arg_utils import _expand_json_human_readable_numbers

        val = _expand_json_human_readable_numbers(val)
    except ImportError:
        pass
    return TypeAdapter(KVTransferConfig).validate_json(val)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 2
    registry = _registered_connectors()
    failed = 0
    for raw in argv:
        out: dict = {"input": raw}
        try:
            cfg = parse(raw)
            name = cfg.kv_connector
            if (
                name is not None
                and registry is not None
                and cfg.kv_connector_module_path is None
                and name not in registry
            ):
                raise ValueError(
                    f"kv_connector {name!r} is not registered in vLLM; known: {sorted(registry)}"
                )
            out["ok"] = True
            out["config"] = dataclasses.asdict(cfg)
        except Exception as e:  # pydantic.ValidationError, ValueError
            failed += 1
            out["ok"] = False
            out["error"] = f"{type(e).__name__}: {e}"
        print(json.dumps(out), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
