"""``plan_service``: one InferenceService spec → its :class:`ServicePlan`."""

from __future__ import annotations

from typing import Final

from tandem.api.v1alpha1 import InferenceServiceSpec
from tandem.api.vocabulary import ROLES, Role
from tandem.plan import engine
from tandem.plan.kv import KvStrategy, kv_strategy
from tandem.plan.model import Owner, PoolPlan, Replicas, ServicePlan
from tandem.plan.names import labels, pool_name, selector_labels
from tandem.plan.router import router_plan

ENGINE_COMPONENT: Final = "vllm"
DEPLOYMENT: Final = "Deployment"
# Deployments report failure when a rollout makes no progress for the model-loading budget
# plus this margin.
PROGRESS_MARGIN_SECONDS: Final = 600


def _replicas(spec: InferenceServiceSpec, role: Role) -> Replicas:
    pool = spec.pool(role)
    a = pool.autoscaling
    if not spec.autoscaling.enabled:
        return Replicas(fixed=pool.replicas, start=pool.replicas, lo=0, hi=pool.replicas)
    if spec.autoscaling.mode == "Shadow":
        return Replicas(fixed=None, start=pool.replicas, lo=0, hi=pool.replicas, shadow=True)
    start = min(max(pool.replicas, a.min_replicas), a.max_replicas)
    return Replicas(fixed=None, start=start, lo=a.min_replicas, hi=a.max_replicas)


def pool_plan(spec: InferenceServiceSpec, owner: Owner, role: Role, kv: KvStrategy) -> PoolPlan:
    pool = spec.pool(role)
    volumes, mounts = engine.engine_volumes(spec, role, kv)
    annotations = {**pool.pod_annotations, **{f.hash_annotation: f.hash for f in kv.config_files()}}
    return PoolPlan(
        role=role,
        name=pool_name(owner.name, role),
        labels=labels(owner.name, role, ENGINE_COMPONENT),
        selector=selector_labels(owner.name, role),
        workload_kind=DEPLOYMENT,
        replicas=_replicas(spec, role),
        tensor=pool.parallelism.tensor,
        pipeline=pool.parallelism.pipeline,
        gpu_resource=pool.resources.gpu_resource_name,
        image=spec.engine.image,
        image_pull_policy=str(spec.engine.image_pull_policy),
        command=engine.ENGINE_COMMAND,
        args=tuple(engine.engine_args(spec, owner.name, role, kv)),
        env=tuple(engine.engine_env(spec, role, kv)),
        ports=tuple(engine.engine_ports(spec, role, kv)),
        service_port=spec.engine.port,
        metrics_port=spec.engine.port,
        resources=engine.engine_resources(spec, role),
        volumes=tuple(volumes),
        mounts=tuple(mounts),
        probes=engine.engine_probes(spec),
        pod_annotations=annotations,
        node_selector=dict(pool.node_selector),
        tolerations=tuple(t.wire() for t in pool.tolerations),
        progress_deadline_seconds=spec.engine.startup_timeout_seconds + PROGRESS_MARGIN_SECONDS,
        capabilities=engine.engine_capabilities(spec),
        runtime_class_name=pool.runtime_class_name,
        affinity=pool.affinity,
        image_pull_secrets=tuple(spec.engine.image_pull_secrets),
        gpu_buffer_bytes=kv.gpu_buffer_bytes(role),
        gpu_memory_utilization=(
            None if (u := spec.engine.gpu_memory_utilization_percent) is None else u / 100
        ),
    )


def plan_service(spec: InferenceServiceSpec, owner: Owner) -> ServicePlan:
    """Everything the operator runs for one InferenceService, derived once."""
    kv = kv_strategy(spec, owner)
    return ServicePlan(
        owner=owner,
        connector=spec.kv_transfer.connector,
        pools={role: pool_plan(spec, owner, role, kv) for role in ROLES},
        router=router_plan(spec, owner, kv),
        config_files=tuple(kv.config_files()),
    )
