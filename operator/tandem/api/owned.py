"""Flags and environment variables Tandem derives from the spec, which users may not set.

The engines' command line and environment carry values the router and the KV connector rely on
(the port, the parallelism, the KV-transfer configuration, the pod IP, ...). A user value for one
of them would silently make the engines disagree with the rest of the service, so the API rejects
them: ``spec.engine.args``/``spec.<pool>.args`` may not set an owned flag in any spelling vLLM
accepts, and ``spec.engine.env``/``spec.<pool>.env`` may not set an owned variable.

Pure functions over plain strings (the spec is only a type here): the rule table
(``tandem.api.v1alpha1.rules``) turns them into CEL and model validators, and the renderers and
the reconciler's checks read the same lists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from tandem.api.v1alpha1 import EngineSpec, InferenceServiceSpec, PoolSpec

# Canonical spellings (vLLM also reads "_" for "-" in long options, and "--flag=value").
OWNED_FLAGS: Final = (
    "--model",
    "--served-model-name",
    "--host",
    "--port",
    "--tensor-parallel-size",
    "-tp",
    "--pipeline-parallel-size",
    "-pp",
    "--kv-transfer-config",
)
# Flags whose dotted sub-keys set part of an owned value ("--kv-transfer-config.kv_role=...").
OWNED_FLAG_PREFIXES: Final = ("--kv-transfer-config",)

OWNED_ENV: Final = (
    "POD_IP",
    "PYTHONHASHSEED",
    "HF_TOKEN",
    "VLLM_NIXL_SIDE_CHANNEL_HOST",
    "VLLM_NIXL_SIDE_CHANNEL_PORT",
    "LMCACHE_CONFIG_FILE",
    "LMCACHE_PD_PEER_HOST",
)


def canonical_flag(arg: str) -> str:
    """The option an argument sets, as vLLM reads it: the text before ``=``, and for a long
    option ``_`` read as ``-``."""
    flag = arg.split("=", 1)[0]
    return flag.replace("_", "-") if flag.startswith("--") else flag


def owned_flag(arg: str) -> str | None:
    """The flag as written (without ``=value``) when ``arg`` sets a flag Tandem derives."""
    flag = canonical_flag(arg)
    if flag in OWNED_FLAGS or any(flag.startswith(f"{p}.") for p in OWNED_FLAG_PREFIXES):
        return arg.split("=", 1)[0]
    return None


def _spellings(flag: str) -> str:
    return "--" + flag[2:].replace("-", "[-_]") if flag.startswith("--") else flag


# The same test as :func:`owned_flag`, as one RE2/Python regex for the CRD's CEL. Written with
# "[.]" rather than a backslash so it can sit in a CEL string literal as is.
OWNED_FLAG_PATTERN: Final = (
    "(?s)^(("
    + "|".join(_spellings(f) for f in OWNED_FLAGS)
    + ")(=.*)?|("
    + "|".join(_spellings(p) for p in OWNED_FLAG_PREFIXES)
    + ")[.].*)$"
)


def _places(spec: InferenceServiceSpec) -> tuple[tuple[str, EngineSpec | PoolSpec], ...]:
    """Where args and env can be given, with the spec path each is reported under."""
    return (("engine", spec.engine), ("prefill", spec.prefill), ("decode", spec.decode))


def owned_flag_conflicts(spec: InferenceServiceSpec) -> list[str]:
    """``spec.<where>.args`` entries that set a flag Tandem derives (``spec.engine.args: -tp``)."""
    return [
        f"spec.{where}.args: {flag}"
        for where, part in _places(spec)
        for flag in map(owned_flag, part.args)
        if flag is not None
    ]


def owned_env_conflicts(spec: InferenceServiceSpec) -> list[str]:
    """``spec.<where>.env`` entries that set a variable Tandem derives."""
    return [
        f"spec.{where}.env: {var.name}"
        for where, part in _places(spec)
        for var in part.env
        if var.name in OWNED_ENV
    ]
