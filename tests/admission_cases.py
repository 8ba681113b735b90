"""One table of admission cases, run against pydantic (tests/unit) and the API server (e2e).

Each case is a JSON merge patch on :data:`BASE`, the field the rejection must name (as the API
server prints it: ``spec.engine.env[0].name``) and, for rules of the rule table
(``tandem.api.v1alpha1.rules``), the rule's message, which both sides print after that path.
Field constraints (bounds, patterns, enums) word their errors differently on the two sides, so
for those only the path is compared. ``server_says`` is for the few cases where the API server's
own structural checks answer before the rule (server-side apply refuses duplicate list-map keys
while building the patch): the e2e test looks for that text instead of the message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BASE: dict[str, Any] = {
    "apiVersion": "tandem.dev/v1alpha1",
    "kind": "InferenceService",
    "metadata": {"name": "adm"},
    "spec": {"model": {"uri": "hf://org/model"}},
}


@dataclass(frozen=True)
class Case:
    id: str
    patch: dict[str, Any]
    path: str
    message: str | None = None
    server_says: str | None = None


def spec(**parts: Any) -> dict[str, Any]:
    """A merge patch on ``spec``."""
    return {"spec": parts}


def name(value: str) -> dict[str, Any]:
    return {"metadata": {"name": value}}


def pools(**parallelism: int) -> dict[str, Any]:
    """Both pools with the same parallelism (the lmcache connector needs equal shapes)."""
    return {role: {"parallelism": dict(parallelism)} for role in ("prefill", "decode")}


def env(*names: str) -> list[dict[str, str]]:
    return [{"name": n, "value": "x"} for n in names]


MIN_MAX = "minReplicas must be less than or equal to maxReplicas"
OWNED_FLAG = "args must not set a flag Tandem derives from the spec"
OWNED_ENV = "env must not set a variable Tandem derives from the spec"
LMCACHE_OVERLAP = "the LMCache init and alloc port ranges"
IN_LMCACHE_RANGE = "engine.port must not fall in the LMCache init or alloc port range"
NIXL = {"connector": "nixl"}

# One case per line: the tables read as tables.
# fmt: off
REJECTED: list[Case] = [
    # ------------------------------------------------------------ field constraints
    Case("no model", spec(model=None), "spec.model"),
    Case("uri scheme", spec(model={"uri": "http://x/y"}), "spec.model.uri"),
    Case("hf uri without org", spec(model={"uri": "hf://model"}), "spec.model.uri"),
    Case("unknown field", spec(bogus=1), "spec.bogus"),
    Case("unknown nested field", spec(prefill={"replica": 2}), "spec.prefill.replica"),
    Case("tensor 0", spec(prefill={"parallelism": {"tensor": 0}}), "spec.prefill.parallelism.tensor"),
    Case("pipeline 0", spec(decode={"parallelism": {"pipeline": 0}}), "spec.decode.parallelism.pipeline"),
    Case("tensor too large", spec(decode={"parallelism": {"tensor": 128}}), "spec.decode.parallelism.tensor"),
    Case("tensor as string", spec(prefill={"parallelism": {"tensor": "two"}}), "spec.prefill.parallelism.tensor"),
    Case("negative replicas", spec(decode={"replicas": -1}), "spec.decode.replicas"),
    Case("ratio zero", spec(autoscaling={"prefillToDecodeRatio": {"min": 0, "max": 1}}), "spec.autoscaling.prefillToDecodeRatio.min"),
    Case("unknown connector", spec(kvTransfer={"connector": "mooncake"}), "spec.kvTransfer.connector"),
    Case("router policy", spec(router={"policy": "random"}), "spec.router.policy"),
    Case("negative min prompt tokens", spec(router={"disaggregation": {"minPromptTokens": -5}}), "spec.router.disaggregation.minPromptTokens"),
    Case("interval format", spec(autoscaling={"interval": "ten seconds"}), "spec.autoscaling.interval"),
    Case("zero interval", spec(autoscaling={"interval": "0s"}), "spec.autoscaling.interval"),
    Case("kv cache dtype", spec(engine={"kvCacheDtype": "int4"}), "spec.engine.kvCacheDtype"),
    Case("shm quantity", spec(engine={"shmSize": "lots"}), "spec.engine.shmSize"),
    Case("negative shm", spec(engine={"shmSize": "-1Gi"}), "spec.engine.shmSize"),
    Case("zero buffer", spec(kvTransfer={"lmcache": {"prefillBufferSize": "0"}}), "spec.kvTransfer.lmcache.prefillBufferSize"),
    Case("buffer quantity", spec(kvTransfer={"lmcache": {"decodeBufferSize": "2 GB"}}), "spec.kvTransfer.lmcache.decodeBufferSize"),
    Case("negative memory", spec(prefill={"resources": {"memory": "-1Gi"}}), "spec.prefill.resources.memory"),
    Case("kv usage over 100", spec(decode={"autoscaling": {"targetKVCacheUsagePercent": 150}}), "spec.decode.autoscaling.targetKVCacheUsagePercent"),
    Case("engine port", spec(engine={"port": 70000}), "spec.engine.port"),
    Case("scrape port 0", spec(autoscaling={"source": {"scrape": {"port": 0}}}), "spec.autoscaling.source.scrape.port"),
    Case("service type", spec(router={"serviceType": "ExternalName"}), "spec.router.serviceType"),
    Case("startup budget", spec(engine={"startupTimeoutSeconds": 5}), "spec.engine.startupTimeoutSeconds"),
    Case("env name", spec(engine={"env": env("1X")}), "spec.engine.env[0].name"),
    Case("arg too long", spec(engine={"args": ["--x=" + "y" * 2048]}), "spec.engine.args[0]"),
    Case("empty draft model", spec(engine={"speculativeDecoding": {"method": "draft", "draftModel": ""}}), "spec.engine.speculativeDecoding.draftModel"),
    Case("toleration operator", spec(prefill={"tolerations": [{"key": "a", "operator": "In"}]}), "spec.prefill.tolerations[0].operator"),
    Case("toleration key", spec(prefill={"tolerations": [{"key": "a b"}]}), "spec.prefill.tolerations[0].key"),
    Case("node selector value", spec(decode={"nodeSelector": {"zone": "a b"}}), "spec.decode.nodeSelector.zone"),
    # ------------------------------------------------------------ spec.model
    Case("token secret for pvc", spec(model={"uri": "pvc://weights/llama", "tokenSecretRef": {"name": "hf"}}), "spec.model.tokenSecretRef", "tokenSecretRef is only used for hf:// models"),
    Case("revision for s3", spec(model={"uri": "s3://bucket/llama", "revision": "main"}), "spec.model.revision", "revision is only used for hf:// models"),
    # ------------------------------------------------------------ spec.engine
    Case("draft without model", spec(engine={"speculativeDecoding": {"method": "draft"}}), "spec.engine.speculativeDecoding.draftModel", "draftModel is required when method is draft"),
    Case("ngram with draft model", spec(engine={"speculativeDecoding": {"method": "ngram", "draftModel": "o/m"}}), "spec.engine.speculativeDecoding.draftModel", "draftModel must not be set when method is ngram"),
    Case("prompt lookup min > max", spec(engine={"speculativeDecoding": {"method": "ngram", "promptLookupMin": 5, "promptLookupMax": 2}}), "spec.engine.speculativeDecoding.promptLookupMin", "promptLookupMin must be less than or equal to promptLookupMax"),
    # ------------------------------------------------------------ args and env Tandem derives
    Case("--port=", spec(engine={"args": ["--port=9000"]}), "spec.engine.args", OWNED_FLAG),
    Case("--model", spec(decode={"args": ["--model", "x/y"]}), "spec.decode.args", OWNED_FLAG),
    Case("--served-model-name", spec(engine={"args": ["--served-model-name", "m"]}), "spec.engine.args", OWNED_FLAG),
    Case("--host", spec(prefill={"args": ["--host=0.0.0.0"]}), "spec.prefill.args", OWNED_FLAG),
    Case("--tensor_parallel_size", spec(prefill={"args": ["--tensor_parallel_size=2"]}), "spec.prefill.args", OWNED_FLAG),
    Case("-tp", spec(decode={"args": ["--max-num-seqs", "8", "-tp", "2"]}), "spec.decode.args", OWNED_FLAG),
    Case("--pipeline-parallel-size", spec(engine={"args": ["--pipeline-parallel-size", "2"]}), "spec.engine.args", OWNED_FLAG),
    Case("-pp=", spec(prefill={"args": ["-pp=2"]}), "spec.prefill.args", OWNED_FLAG),
    Case("--kv-transfer-config", spec(engine={"args": ['--kv-transfer-config={"kv_role":"kv_both"}']}), "spec.engine.args", OWNED_FLAG),
    Case("--kv_transfer_config.x", spec(decode={"args": ["--kv_transfer_config.kv_role=kv_both"]}), "spec.decode.args", OWNED_FLAG),
    Case("env POD_IP", spec(engine={"env": env("POD_IP")}), "spec.engine.env", OWNED_ENV),
    Case("env HF_TOKEN", spec(prefill={"env": env("HF_TOKEN")}), "spec.prefill.env", OWNED_ENV),
    Case("env PYTHONHASHSEED", spec(decode={"env": env("PYTHONHASHSEED")}), "spec.decode.env", OWNED_ENV),
    Case("env LMCACHE_CONFIG_FILE", spec(decode={"env": env("LMCACHE_CONFIG_FILE")}), "spec.decode.env", OWNED_ENV),
    Case("env NIXL port", spec(engine={"env": env("VLLM_NIXL_SIDE_CHANNEL_PORT")}), "spec.engine.env", OWNED_ENV),
    Case("duplicate env", spec(engine={"env": env("A", "A")}), "spec.engine.env", "env names must be unique", server_says="duplicate entries for key"),
    # ------------------------------------------------------------ pools
    Case("prefill min > max", spec(prefill={"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}), "spec.prefill.autoscaling.minReplicas", MIN_MAX),
    Case("decode min > max", spec(decode={"autoscaling": {"minReplicas": 3, "maxReplicas": 1}}), "spec.decode.autoscaling.minReplicas", MIN_MAX),
    Case("prefill replicas outside bounds", spec(autoscaling={"enabled": True}, prefill={"replicas": 9}), "spec.prefill.replicas", "prefill.replicas must lie within prefill.autoscaling minReplicas..maxReplicas"),
    Case("decode replicas outside bounds", spec(autoscaling={"enabled": True}, decode={"replicas": 0}), "spec.decode.replicas", "decode.replicas must lie within decode.autoscaling minReplicas..maxReplicas"),
    Case("maxGPUs below minimum", spec(autoscaling={"maxGPUs": 3}, **pools(tensor=2)), "spec.autoscaling.maxGPUs", "autoscaling.maxGPUs is below the GPUs the pools' minReplicas need"),
    Case("different gpu resources", spec(decode={"resources": {"gpuResourceName": "amd.com/gpu"}}), "spec.decode.resources.gpuResourceName", "prefill and decode must use the same resources.gpuResourceName"),
    Case("exists with value", spec(prefill={"tolerations": [{"key": "a", "operator": "Exists", "value": "b"}]}), "spec.prefill.tolerations[0].value", "value must be empty when operator is Exists"),
    Case("empty key with equal", spec(decode={"tolerations": [{"operator": "Equal", "value": "b"}]}), "spec.decode.tolerations[0].operator", "operator must be Exists when key is empty"),
    Case("toleration seconds without NoExecute", spec(prefill={"tolerations": [{"key": "a", "effect": "NoSchedule", "tolerationSeconds": 5}]}), "spec.prefill.tolerations[0].tolerationSeconds", "tolerationSeconds is only used with effect NoExecute"),
    # ------------------------------------------------------------ kvTransfer and ports
    Case("lmcache block with nixl", spec(kvTransfer={"connector": "nixl", "lmcache": {"chunkSize": 256}}), "spec.kvTransfer.lmcache", "kvTransfer.lmcache may only be set when connector is lmcache"),
    Case("nixl block with lmcache", spec(kvTransfer={"connector": "lmcache", "nixl": {}}), "spec.kvTransfer.nixl", "kvTransfer.nixl may only be set when connector is nixl"),
    # ------------------------------------------------------------ P/D shapes a connector cannot serve
    Case("lmcache different tensor", spec(decode={"parallelism": {"tensor": 2}}), "spec.decode.parallelism", "the lmcache connector needs the same tensor and pipeline sizes"),
    Case("lmcache different pipeline", spec(prefill={"parallelism": {"pipeline": 2}}), "spec.decode.parallelism", "the lmcache connector needs the same tensor and pipeline sizes"),
    Case("lmcache with prefix caching", spec(engine={"prefixCaching": True}), "spec.engine.prefixCaching", "prefix caching cannot be on with the lmcache connector"),
    Case("nixl decode pipeline 2", spec(kvTransfer=NIXL, decode={"parallelism": {"pipeline": 2}}), "spec.decode.parallelism.pipeline", "the nixl connector cannot serve a decode pool with pipeline > 1"),
    Case("nixl tensor sizes 3 and 2", spec(kvTransfer=NIXL, prefill={"parallelism": {"tensor": 3}}, decode={"parallelism": {"tensor": 2}}), "spec.decode.parallelism.tensor", "the nixl connector needs one of prefill.parallelism.tensor and decode.parallelism.tensor to divide the other"),
    Case("draft speculation on decode only", spec(engine={"speculativeDecoding": {"method": "draft", "draftModel": "org/small"}}), "spec.engine.speculativeDecoding.method", "only ngram speculative decoding can run on the decode pool alone"),
    Case("nixl side channel on engine port", spec(kvTransfer={"connector": "nixl", "nixl": {"sideChannelPort": 8000}}), "spec.kvTransfer.nixl.sideChannelPort", "kvTransfer.nixl.sideChannelPort must differ from engine.port"),
    Case("engine port on default side channel", spec(kvTransfer=NIXL, engine={"port": 5600}), "spec.kvTransfer.nixl.sideChannelPort", "kvTransfer.nixl.sideChannelPort must differ from engine.port"),
    Case("engine port in init range", spec(engine={"port": 7301}, **pools(tensor=2)), "spec.engine.port", IN_LMCACHE_RANGE),
    Case("engine port on default alloc port", spec(engine={"port": 7400}), "spec.engine.port", IN_LMCACHE_RANGE),
    Case("engine port in pipeline ranks", spec(engine={"port": 9003}, kvTransfer={"lmcache": {"allocPort": 9000}}, **pools(pipeline=4)), "spec.engine.port", IN_LMCACHE_RANGE),
    Case("init and alloc overlap", spec(kvTransfer={"lmcache": {"initPort": 7300, "allocPort": 7302}}, **pools(tensor=4)), "spec.kvTransfer.lmcache.allocPort", LMCACHE_OVERLAP),
    Case("default ranges overlap", spec(prefill={"parallelism": {"tensor": 8, "pipeline": 16}, "gpusPerNode": 64}, decode={"parallelism": {"tensor": 8, "pipeline": 16}, "gpusPerNode": 64}), "spec.kvTransfer.lmcache.allocPort", LMCACHE_OVERLAP),
    Case("init ports past 65535", spec(kvTransfer={"lmcache": {"initPort": 65535}}, **pools(tensor=2)), "spec.kvTransfer.lmcache.initPort", "kvTransfer.lmcache.initPort + one port per decode rank"),
    Case("alloc ports past 65535", spec(kvTransfer={"lmcache": {"allocPort": 65534}}, **pools(tensor=4)), "spec.kvTransfer.lmcache.allocPort", "kvTransfer.lmcache.allocPort + one port per decode rank"),
    Case("kv-ready timeout not above allocation timeout", spec(kvTransfer={"lmcache": {"allocationTimeoutSeconds": 30, "kvReadyTimeoutSeconds": 30}}), "spec.kvTransfer.lmcache.kvReadyTimeoutSeconds", "kvReadyTimeoutSeconds must be greater than allocationTimeoutSeconds"),
    Case("proxy port 8000", spec(kvTransfer={"lmcache": {"proxyPort": 8000}}), "spec.kvTransfer.lmcache.proxyPort", "proxyPort must not be 8000, the router container's HTTP port"),
    # ------------------------------------------------------------ spec.autoscaling
    Case("ratio min > max", spec(autoscaling={"prefillToDecodeRatio": {"min": 4, "max": 1}}), "spec.autoscaling.prefillToDecodeRatio.min", "min must be less than or equal to max"),
    Case("prometheus without settings", spec(autoscaling={"source": {"type": "prometheus"}}), "spec.autoscaling.source.prometheus", "prometheus settings are required when type is prometheus"),
    Case("prometheus settings with scrape", spec(autoscaling={"source": {"type": "scrape", "prometheus": {"url": "http://p:9090"}}}), "spec.autoscaling.source.prometheus", "prometheus settings are only used when type is prometheus"),
    # ------------------------------------------------------------ metadata.name
    Case("name too long", name("a" * 41), "metadata.name", "metadata.name must be at most 40 characters"),
    Case("name starts with a digit", name("1bad"), "metadata.name", "metadata.name must be a DNS-1035 label"),
    Case("name with a dot", name("a.b"), "metadata.name", "metadata.name must be a DNS-1035 label"),
]
# fmt: on

# One case per line: the tables read as tables.
# fmt: off
ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("minimal", {}),
    ("longest name", name("a" * 40)),
    ("name with digits and dashes", name("a-1-b2")),
    ("flags that only look owned", spec(engine={"args": ["--model-impl", "transformers", "--portal=1", "--max-num-seqs=64", "--hosts", "-tpx"]})),
    ("variables Tandem only defaults", spec(engine={"env": env("HF_HOME", "UCX_CUDA_IPC_ENABLE_GET_ZCOPY")}, decode={"env": env("HF_HOME")})),
    ("engine port just below the init range", spec(engine={"port": 7299})),
    ("engine port just past the alloc range", spec(engine={"port": 7402}, **pools(tensor=2))),
    ("lmcache leaves the nixl side channel port free", spec(engine={"port": 5600})),
    ("nixl leaves the lmcache ranges free", spec(kvTransfer=NIXL, engine={"port": 7300})),
    ("router Service on the proxy port (the KV-ready port has its own Service)", spec(router={"port": 7500})),
    ("adjacent init and alloc ranges", spec(kvTransfer={"lmcache": {"initPort": 7300, "allocPort": 7304}}, **pools(tensor=4))),
    ("last ports", spec(kvTransfer={"lmcache": {"initPort": 65530, "allocPort": 65534}}, **pools(tensor=2))),
    ("match-all toleration", spec(prefill={"tolerations": [{"operator": "Exists"}]})),
    ("NoExecute toleration with seconds", spec(decode={"tolerations": [{"key": "a", "effect": "NoExecute", "tolerationSeconds": 30}]})),
    ("scrape port set", spec(autoscaling={"source": {"scrape": {"port": 9090}}})),
    ("autoscaling within bounds", spec(autoscaling={"enabled": True, "maxGPUs": 2}, prefill={"replicas": 1}, decode={"replicas": 1})),
    ("nixl prefill tensor 4, decode tensor 2", spec(kvTransfer=NIXL, prefill={"parallelism": {"tensor": 4}}, decode={"parallelism": {"tensor": 2}})),
    ("nixl prefill pipeline 2", spec(kvTransfer=NIXL, prefill={"parallelism": {"pipeline": 2}})),
    ("lmcache tensor 2 and pipeline 2 on both pools", spec(**pools(tensor=2, pipeline=2))),
    ("lmcache with prefix caching off", spec(engine={"prefixCaching": False})),
    ("nixl with prefix caching", spec(kvTransfer=NIXL, engine={"prefixCaching": True})),
    ("ngram with lookup bounds", spec(engine={"speculativeDecoding": {"method": "ngram", "promptLookupMin": 2, "promptLookupMax": 2}})),
]
# fmt: on

_ids = [c.id for c in REJECTED] + [a[0] for a in ACCEPTED]
assert len(_ids) == len(set(_ids)), "case ids must be unique"
