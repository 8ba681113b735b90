#!/usr/bin/env python3
"""Check a ``vllm serve`` argument list with vLLM 0.32's own argument parser.

Run with the data-plane venv's python:

    "$VENV/bin/python" e2e/dataplane/vllm_args_check.py [--] MODEL --port 8000 --dtype bfloat16 ...
    "$VENV/bin/python" e2e/dataplane/vllm_args_check.py --probe   # which common flags exist
    "$VENV/bin/python" e2e/dataplane/vllm_args_check.py --batch FILE  # {"name": [args], ...}

The arguments are what follows ``vllm serve`` (the positional model tag may be given or
left out). The parser is the one ``vllm serve`` builds
(``vllm.entrypoints.launchers.cli_args.make_arg_parser`` on a ``FlexibleArgumentParser``), so
unknown flags, bad choices and bad ``--kv-transfer-config`` JSON fail exactly as the server
would fail at startup. Prints one JSON object (``ok``, ``error`` or the parsed non-default
values); exit 1 if rejected. ``--probe`` parses a list of flags one by one and prints
which are accepted.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys

PROBE = [
    ["--host", "127.0.0.1"],
    ["--port", "8000"],
    ["--served-model-name", "tiny"],
    ["--tensor-parallel-size", "1"],
    ["--pipeline-parallel-size", "1"],
    ["--max-model-len", "1024"],
    ["--dtype", "bfloat16"],
    ["--enable-prefix-caching"],
    ["--no-enable-prefix-caching"],
    ["--enable-chunked-prefill"],
    ["--no-enable-chunked-prefill"],
    ["--kv-cache-dtype", "auto"],
    ["--disable-log-requests"],
    ["--enable-log-requests"],
    ["--no-enable-log-requests"],
    ["--disable-log-stats"],
    ["--uvicorn-log-level", "warning"],
    ["--enforce-eager"],
    ["--max-num-seqs", "4"],
    ["--gpu-memory-utilization", "0.9"],
    ["--block-size", "128"],
    ["--kv-transfer-config", '{"kv_connector":"NixlConnector","kv_role":"kv_producer"}'],
]


def _parser():
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))


def _parse(parser, args: list[str]):
    if not args or args[0].startswith("-"):
        args = ["/model", *args]  # model tag is positional in `vllm serve`
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = parser.parse_args(args)
    except SystemExit:
        lines = [ln for ln in err.getvalue().splitlines() if "error:" in ln]
        return None, (lines[-1] if lines else err.getvalue().strip()[-500:])
    return ns, None


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--":
        argv = argv[1:]
    parser = _parser()
    if len(argv) == 2 and argv[0] == "--batch":
        # A JSON file holding {"name": [args...], ...}: one parser (one vLLM import) for all.
        failed = 0
        with open(argv[1]) as f:
            batch = json.load(f)
        for name, args in batch.items():
            _, error = _parse(parser, list(args))
            print(json.dumps({"name": name, "ok": error is None, "error": error}))
            failed += error is not None
        return 1 if failed else 0
    if argv == ["--probe"]:
        res = {}
        for case in PROBE:
            ns, error = _parse(parser, list(case))
            res[case[0]] = "ok" if error is None else error
        print(json.dumps(res, indent=1))
        return 0
    ns, error = _parse(parser, argv)
    if error is not None:
        print(json.dumps({"ok": False, "error": error}))
        return 1
    defaults = vars(parser.parse_args([getattr(ns, "model_tag", None) or "/model"]))
    changed = {}
    for k, v in vars(ns).items():
        if k in defaults and defaults[k] == v:
            continue
        if hasattr(v, "__dataclass_fields__"):
            import dataclasses

            v = dataclasses.asdict(v)
        try:
            json.dumps(v)
        except TypeError:
            v = repr(v)
        changed[k] = v
    print(json.dumps({"ok": True, "non_default": changed}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
