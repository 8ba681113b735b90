#!/usr/bin/env python3
"""Validate LMCache YAML/JSON config files with LMCache's OWN config loader (LMCache 0.5.6).

Run with the data-plane venv's python (the venv that has lmcache):

    "$VENV/bin/python" e2e/dataplane/lmcache_validate.py FILE [FILE ...]

For each file this does what vLLM's LMCache integration does at engine start
(``lmcache.integration.vllm.utils.lmcache_get_or_create_config``):

    cfg = LMCacheEngineConfig.from_file(path)   # lmcache/v1/config_base.py: yaml.safe_load,
                                                # alias resolution, per-key env_converter
    cfg.update_config_from_env()                # LMCACHE_<KEY> overrides, then cfg.validate()

(the remote-config fetch that follows in LMCache is not done). LMCACHE_* variables are
removed from the environment first so that the file is validated on its own; pass
``--with-env`` to apply them as the engine would.

LMCache only *logs* some problems and carries on; this script turns them into failures:

- unknown keys: LMCache logs "Unknown configuration key" and ignores the key. A key is
  accepted exactly when LMCache's ``_resolve_config_aliases`` accepts it: it is in
  ``_CONFIG_DEFINITIONS`` or in ``_DEPRECATED_CONFIGS``. Note that most entries of
  ``_CONFIG_ALIASES`` (``nixl_role``, ``nixl_peer_host``, ``enable_xpyd``...) are NOT in
  ``_DEPRECATED_CONFIGS``, so 0.5.6 ignores them as "Unknown configuration key" whether they
  come from a file, ``LMCACHE_*`` variables or a dict (checked). ``nixl_buffer_size`` is its
  own key (NIXL storage), not ``pd_buffer_size``.
- deprecated keys (in ``_DEPRECATED_CONFIGS``): a failure unless ``--allow-deprecated``;
- values the key's ``env_converter`` cannot convert (LMCache logs "Failed to convert" and
  uses None);
- with ``enable_pd``, the role-specific requirements that LMCache asserts only later, when
  the PD storage backend starts (mirrored from ``PDConfig.from_cache_engine_config`` in
  ``lmcache/v1/storage_backend/pd_backend.py`` / ``pd_backend_async.py``): receiver needs
  ``pd_peer_host``, ``pd_peer_init_port``, ``pd_peer_alloc_port``; sender needs
  ``pd_proxy_host`` and ``pd_proxy_port`` (unless ``pd_skip_proxy_notification``, sync
  backend only); the async backend (the default ``pd_backend_mode``) accepts only
  ``sender``/``receiver``.

Output: one JSON line per file, ``{"file", "ok", "errors", "warnings", "user_set",
"values"}`` where ``values`` holds the parsed values of the keys set in the file (after
LMCache's conversion and validation side effects, e.g. ``save_unfull_chunk`` forced to true
with ``enable_pd``). Exit status 1 if any file failed, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

FAIL_LOG_MARKERS = ("Unknown configuration key", "Failed to convert", "Failed to parse")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append(record.getMessage())
        except Exception:  # pragma: no cover - defensive
            self.records.append(str(record.msg))


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [_jsonable(x) for x in v]
    return repr(v)


def _load_raw(path: str) -> Any:
    import yaml  # LMCache itself loads files with yaml.safe_load (JSON is a YAML subset)

    with open(path) as f:
        return yaml.safe_load(f) or {}


def _pd_role_errors(cfg: Any) -> list[str]:
    if not getattr(cfg, "enable_pd", False):
        return []
    errs: list[str] = []
    role = cfg.pd_role
    mode = cfg.pd_backend_mode
    allowed = ("sender", "receiver") if mode == "async" else ("sender", "receiver", "both")
    if role not in allowed:
        errs.append(f"pd_role {role!r} is not one of {allowed} (pd_backend_mode={mode!r})")
    for k in ("pd_buffer_size", "pd_buffer_device"):
        if getattr(cfg, k) is None:
            errs.append(f"{k} is required with enable_pd")
    if role in ("receiver", "both"):
        for k in ("pd_peer_host", "pd_peer_init_port", "pd_peer_alloc_port"):
            if getattr(cfg, k) is None:
                errs.append(f"{k} is required for pd_role={role!r}")
    if role == "sender":
        skip = mode != "async" and bool(cfg.pd_skip_proxy_notification)
        if not skip:
            for k in ("pd_proxy_host", "pd_proxy_port"):
                if getattr(cfg, k) is None:
                    errs.append(f"{k} is required for pd_role='sender'")
    if cfg.pd_buffer_device is not None and cfg.pd_buffer_device not in ("cuda", "cpu", "xpu"):
        errs.append(f"pd_buffer_device {cfg.pd_buffer_device!r} is not cuda/cpu/xpu")
    return errs


def validate_file(path: str, allow_deprecated: bool) -> dict[str, Any]:
    from lmcache.v1 import config as lmc

    result: dict[str, Any] = {"file": path, "ok": False, "errors": [], "warnings": []}
    try:
        raw = _load_raw(path)
    except Exception as e:  # yaml error, missing file
        result["errors"].append(f"cannot read: {type(e).__name__}: {e}")
        return result
    if not isinstance(raw, dict):
        result["errors"].append(f"top level must be a mapping, got {type(raw).__name__}")
        return result

    defs = lmc._CONFIG_DEFINITIONS
    deprecated = lmc._DEPRECATED_CONFIGS
    aliases = lmc._CONFIG_ALIASES
    for key in raw:
        if key in defs:
            continue
        if key in deprecated:
            msg = f"deprecated key {key!r}: {deprecated[key]}"
            (result["warnings"] if allow_deprecated else result["errors"]).append(msg)
            continue
        hint = ""
        if key in aliases:
            hint = (
                f" (listed in _CONFIG_ALIASES as {aliases[key]!r}, but LMCache 0.5.6's"
                f" loader ignores it; write {aliases[key]!r})"
            )
        result["errors"].append(f"unknown key {key!r}{hint}")

    cap = _Capture()
    # LMCache's loggers (lmcache.*) have their own handlers and do not propagate, so the
    # capture handler goes on each of them.
    loggers = [logging.getLogger()] + [
        logging.getLogger(name)
        for name in list(logging.Logger.manager.loggerDict)
        if name == "lmcache" or name.startswith("lmcache.")
    ]
    for lg in loggers:
        lg.addHandler(cap)
    try:
        cfg = lmc.LMCacheEngineConfig.from_file(path)
        cfg.update_config_from_env()  # applies LMCACHE_* (if kept) and runs cfg.validate()
    except (AssertionError, ValueError, TypeError, KeyError) as e:
        result["errors"].append(f"LMCache rejected the config: {type(e).__name__}: {e}")
        cfg = None
    finally:
        for lg in loggers:
            lg.removeHandler(cap)

    for msg in dict.fromkeys(cap.records):  # de-duplicated, in order
        if msg.startswith("Unknown configuration key"):
            continue  # already reported above, with a hint
        if any(m in msg for m in FAIL_LOG_MARKERS):
            result["errors"].append(f"LMCache: {msg}")
        else:
            result["warnings"].append(f"LMCache: {msg}")

    if cfg is not None:
        result["errors"].extend(_pd_role_errors(cfg))
        user_set = sorted(getattr(cfg, "_user_set_keys", set()) or set())
        result["user_set"] = user_set
        result["values"] = {k: _jsonable(getattr(cfg, k)) for k in user_set}
        # Keys LMCache changed during validation (e.g. save_unfull_chunk with enable_pd).
        for k in ("save_unfull_chunk",):
            if k not in user_set:
                default = defs[k]["default"]
                if getattr(cfg, k) != default:
                    result["values"][k] = _jsonable(getattr(cfg, k))
    result["ok"] = not result["errors"]
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument(
        "--with-env",
        action="store_true",
        help="keep LMCACHE_* environment overrides (default: removed)",
    )
    ap.add_argument(
        "--allow-deprecated",
        action="store_true",
        help="report deprecated keys as warnings instead of errors",
    )
    args = ap.parse_args(argv)

    if not args.with_env:
        for k in [k for k in os.environ if k.startswith("LMCACHE_")]:
            del os.environ[k]

    # LMCache logs through its own handlers; keep stdout for the JSON lines only.
    logging.getLogger("lmcache").setLevel(logging.WARNING)
    try:
        import lmcache  # noqa: F401
        from lmcache.v1 import config as _lmc  # noqa: F401
    except Exception as e:
        print(json.dumps({"ok": False, "errors": [f"cannot import lmcache: {e!r}"]}))
        return 2

    failed = 0
    for path in args.files:
        res = validate_file(path, args.allow_deprecated)
        print(json.dumps(res, sort_keys=False), flush=True)
        if not res["ok"]:
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
