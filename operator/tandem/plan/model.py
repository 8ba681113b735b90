"""The plan's data: every fact about a service, derived once, as frozen values.

A :class:`ServicePlan` is what the operator means to run for one InferenceService. The
renderers only copy its facts into manifests, status only reads its display facts, and the
autoscaler takes its configuration from it, so no fact (a pool's GPUs, a port, a flag, a name)
is derived in two places. Manifests fragments that Kubernetes defines (env entries, volumes,
probes) are kept as the plain dicts they will be rendered to; everything Tandem decides is a
typed field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tandem.api.v1alpha1 import GROUP, KIND, VERSION
from tandem.api.vocabulary import Connector, Role
from tandem.contracts.router import RouterConfig

Json = dict[str, Any]


@dataclass(frozen=True)
class Owner:
    """The InferenceService that owns the children (garbage collection follows it)."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> Json:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class ContainerPort:
    name: str
    port: int


@dataclass(frozen=True)
class ConfigFile:
    """A ConfigMap a connector needs (its data is mounted into the engine pods)."""

    name: str
    component: str  # app.kubernetes.io/name of the ConfigMap
    role_label: str  # tandem.dev/role of the ConfigMap (it serves both pools)
    data: dict[str, str]
    hash: str  # short content hash; pods that mount it carry it, so a change rolls them
    hash_annotation: str  # the pod annotation that carries the hash


@dataclass(frozen=True)
class Replicas:
    """Who owns a pool's ``spec.replicas``.

    ``fixed`` is set when the reconcile sends replicas; otherwise the autoscaler owns the field
    and the reconcile only hands a starting count over (``start``, clamped to ``[lo, hi]``). In
    Shadow mode (``shadow``) the autoscaler owns the field but never writes it, and the hand-over
    keeps what runs unclamped: Shadow changes nothing.
    """

    fixed: int | None
    start: int
    lo: int
    hi: int
    shadow: bool = False

    @property
    def autoscaled(self) -> bool:
        return self.fixed is None

    def clamp(self, replicas: int) -> int:
        return replicas if self.shadow else min(max(replicas, self.lo), self.hi)


@dataclass(frozen=True)
class PoolPlan:
    """One engine pool: everything its Deployment and headless Service are made of."""

    role: Role
    name: str  # Deployment and headless Service
    labels: dict[str, str]
    selector: dict[str, str]
    workload_kind: str
    replicas: Replicas
    tensor: int
    pipeline: int
    gpu_resource: str
    image: str
    image_pull_policy: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[Json, ...]
    ports: tuple[ContainerPort, ...]
    service_port: int  # the engine's HTTP port, published by the headless Service
    metrics_port: int  # where /metrics is scraped (the engine port)
    resources: Json
    volumes: tuple[Json, ...]
    mounts: tuple[Json, ...]
    probes: dict[str, Json]  # startupProbe / readinessProbe / livenessProbe
    pod_annotations: dict[str, str]
    node_selector: dict[str, str]
    tolerations: tuple[Json, ...]
    progress_deadline_seconds: int
    capabilities: tuple[str, ...] = ()  # kept; every other capability is dropped
    runtime_class_name: str | None = None
    affinity: Json | None = None
    image_pull_secrets: tuple[str, ...] = ()
    # GPU memory per worker outside vLLM's budget (the connector's buffer), and vLLM's budget
    # (None: vLLM's default), for the headroom check at admission.
    gpu_buffer_bytes: int = 0
    gpu_memory_utilization: float | None = None

    @property
    def gpus(self) -> int:
        """GPUs one replica needs."""
        return self.tensor * self.pipeline

    @property
    def parallelism(self) -> str:
        """``TPxPP`` as status and ``kubectl get`` show it."""
        return f"{self.tensor}x{self.pipeline}"


@dataclass(frozen=True)
class RouterPlan:
    """The P/D router: its command line (the contract with ``tandem router``) and its pod."""

    name: str
    labels: dict[str, str]
    selector: dict[str, str]
    config: RouterConfig  # rendered to argv with ``config.to_args()``
    replicas: int
    image: str
    service_type: str
    service_port: int
    ports: tuple[ContainerPort, ...]  # first: HTTP; then connector ports (KV-ready)
    internal_service: str | None  # ClusterIP Service of the connector ports, if any
    resources: Json


@dataclass(frozen=True)
class ServicePlan:
    """Everything one InferenceService becomes."""

    owner: Owner
    connector: Connector
    pools: dict[Role, PoolPlan]
    router: RouterPlan
    config_files: tuple[ConfigFile, ...] = field(default=())

    def pool(self, role: Role) -> PoolPlan:
        return self.pools[role]

    @property
    def endpoint(self) -> str:
        """The OpenAI base URL clients use: the router Service inside the cluster."""
        o = self.owner
        return f"http://{self.router.name}.{o.namespace}.svc:{self.router.service_port}/v1"

    @property
    def parallelism(self) -> str:
        return f"P:{self.pools[Role.PREFILL].parallelism} D:{self.pools[Role.DECODE].parallelism}"
