"""The plan layer: every fact derived once, connector facts only in their strategy."""

from __future__ import annotations

import pytest

from tandem.api.owned import OWNED_ENV
from tandem.api.v1alpha1 import InferenceServiceSpec
from tandem.api.vocabulary import ROLES, Connector, Role
from tandem.plan import Owner, plan_service
from tandem.plan.kv import STRATEGIES, kv_strategy
from tandem.plan.names import ENGINE_PORT_NAME
from tests.conftest import EXAMPLES, load_example, make_spec

OWNER = Owner(name="svc", namespace="ml", uid="uid-1")


def plan(**overrides: object):  # type: ignore[no-untyped-def]
    return plan_service(InferenceServiceSpec.model_validate(make_spec(**overrides)), OWNER)


def test_every_connector_has_one_strategy() -> None:
    assert set(STRATEGIES) == set(Connector)


def test_display_facts_come_from_the_plan() -> None:
    p = plan(
        kvTransfer={"connector": "nixl"},
        prefill={"parallelism": {"tensor": 2, "pipeline": 2}},
        decode={"parallelism": {"tensor": 4}},
        router={"port": 9000},
    )
    assert p.pool(Role.PREFILL).gpus == 4 and p.pool(Role.DECODE).gpus == 4
    assert p.parallelism == "P:2x2 D:4x1"
    assert p.endpoint == "http://svc-router.ml.svc:9000/v1"


def test_metrics_port_follows_the_engine_port() -> None:
    p = plan(engine={"port": 9100})
    for role in ROLES:
        pool = p.pool(role)
        assert pool.metrics_port == 9100 == pool.service_port
        assert pool.ports[0].name == ENGINE_PORT_NAME and pool.ports[0].port == 9100


def test_replicas_owned_by_spec_or_autoscaler() -> None:
    fixed = plan(prefill={"replicas": 3})
    assert fixed.pool(Role.PREFILL).replicas.fixed == 3
    auto = plan(
        autoscaling={"enabled": True},
        prefill={"replicas": 2, "autoscaling": {"minReplicas": 1, "maxReplicas": 5}},
    )
    r = auto.pool(Role.PREFILL).replicas
    assert r.autoscaled and r.fixed is None and r.start == 2
    assert (r.clamp(0), r.clamp(9)) == (1, 5)


@pytest.mark.parametrize("connector", list(Connector))
def test_strategy_derived_env_is_owned(connector: Connector) -> None:
    spec = InferenceServiceSpec.model_validate(make_spec(kvTransfer={"connector": connector}))
    kv = kv_strategy(spec, OWNER)
    for role in ROLES:
        names = {e["name"] for e in kv.engine_env(role)}
        assert names <= set(OWNED_ENV), names - set(OWNED_ENV)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_pool_env_has_one_entry_per_name_and_owned_first(path) -> None:  # type: ignore[no-untyped-def]
    doc = load_example(path)
    p = plan_service(InferenceServiceSpec.model_validate(doc["spec"]), OWNER)
    for role in ROLES:
        names = [e["name"] for e in p.pool(role).env]
        assert len(names) == len(set(names))
        assert names[:2] == ["POD_IP", "PYTHONHASHSEED"]


def test_lmcache_facts_live_in_its_strategy() -> None:
    p = plan(
        prefill={"parallelism": {"tensor": 2, "pipeline": 2}},
        decode={"parallelism": {"tensor": 2, "pipeline": 2}},
    )
    assert [f.name for f in p.config_files] == ["svc-lmcache"]
    decode = p.pool(Role.DECODE)
    # One init and one alloc port per decode worker: LMCache indexes them by global rank.
    assert [x.port for x in decode.ports] == [8000, 7300, 7400, 7301, 7401, 7302, 7402, 7303, 7403]
    cfg = p.router.config
    assert cfg.decoder_init_ports == (7300, 7301, 7302, 7303)
    assert cfg.kv_ready_notifications == 4  # one per prefill worker
    assert decode.pod_annotations == {"tandem.dev/lmcache-config-hash": p.config_files[0].hash}
    assert "--decoder-init-ports" in p.router.config.to_args()
    assert [x.name for x in p.router.ports] == ["http", "kv-ready"]
    nixl = plan(kvTransfer={"connector": "nixl"})
    assert nixl.config_files == ()
    assert [x.name for x in nixl.router.ports] == ["http"]
    assert [x.name for x in nixl.pool(Role.PREFILL).ports] == ["http", "nixl"]
