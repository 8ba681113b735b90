"""Apply decisions (zero idle writes) and the operator-only semantic checks."""

from __future__ import annotations

import copy
from typing import Any

from tandem.api.v1alpha1 import InferenceServiceSpec
from tandem.reconcile.checks import check_spec
from tandem.reconcile.diff import is_subset, up_to_date
from tandem.render import Owner, build_children
from tests.conftest import make_spec


def node(gpus: int, **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": labels},
        "status": {"allocatable": {"nvidia.com/gpu": str(gpus)}},
    }


def test_subset_rules() -> None:
    assert is_subset({"a": 1}, {"a": 1, "b": 2})
    assert not is_subset({"a": 1}, {"a": 2})
    assert is_subset([{"name": "x"}], [{"name": "x", "protocol": "TCP"}])
    assert not is_subset([{"name": "x"}], [{"name": "x"}, {"name": "y"}])
    assert not is_subset({"a": True}, {"a": 1})
    assert is_subset({"a": 1}, {"a": 1.0})


def test_live_with_server_defaults_is_up_to_date() -> None:
    spec = InferenceServiceSpec.model_validate(make_spec())
    for child in build_children(spec, Owner("svc", "ml", "uid")):
        live = copy.deepcopy(child)
        live["metadata"]["resourceVersion"] = "42"
        live["metadata"]["managedFields"] = []
        live["status"] = {"whatever": 1}
        if child["kind"] == "Deployment":
            live["spec"]["progressDeadlineSeconds"] = live["spec"].get(
                "progressDeadlineSeconds", 600
            )
            live["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
        assert up_to_date(child, live), child["kind"]
        drifted = copy.deepcopy(live)
        drifted["metadata"]["labels"]["tandem.dev/role"] = "hacked"
        assert not up_to_date(child, drifted)
    assert not up_to_date(build_children(spec, Owner("svc", "ml", "uid"))[0], None)


def test_checks_accept_fitting_spec() -> None:
    spec = InferenceServiceSpec.model_validate(make_spec(prefill={"parallelism": {"tensor": 4}}))
    assert check_spec(spec, [node(8)]) is None
    assert check_spec(spec, None) is None


def test_replica_exceeding_node() -> None:
    spec = InferenceServiceSpec.model_validate(
        make_spec(decode={"parallelism": {"tensor": 8, "pipeline": 2}})
    )
    r = check_spec(spec, None)
    assert r is not None and r.reason == "ReplicaExceedsNode" and "spec.decode" in r.message


def test_no_node_fits() -> None:
    spec = InferenceServiceSpec.model_validate(make_spec(prefill={"parallelism": {"tensor": 8}}))
    r = check_spec(spec, [node(4), node(2)])
    assert r is not None and r.reason == "NoNodeFitsReplica" and "offers 4" in r.message
    # Nodes with no GPUs at all: maybe GPU nodes come on demand; let the scheduler decide.
    assert check_spec(spec, [node(0)]) is None


def test_node_selector_considered() -> None:
    spec = InferenceServiceSpec.model_validate(
        make_spec(prefill={"parallelism": {"tensor": 8}, "nodeSelector": {"gpu": "h100"}})
    )
    r = check_spec(spec, [node(8, gpu="a10"), node(4, gpu="h100")])
    assert r is not None and "nodeSelector" in r.message


def test_conflicting_args() -> None:
    spec = InferenceServiceSpec.model_validate(
        make_spec(engine={"args": ["--kv-transfer-config", "{}"]})
    )
    r = check_spec(spec, None)
    assert r is not None and r.reason == "ConflictingEngineArgs"


def test_env_overriding_a_derived_variable_is_rejected() -> None:
    spec = InferenceServiceSpec.model_validate(
        make_spec(
            kvTransfer={"connector": "nixl"},
            decode={"env": [{"name": "VLLM_NIXL_SIDE_CHANNEL_HOST", "value": "0.0.0.0"}]},
        )
    )
    r = check_spec(spec, None)
    assert r is not None and r.reason == "ConflictingEngineArgs"
    assert "spec.decode.env: VLLM_NIXL_SIDE_CHANNEL_HOST" in r.message


def test_env_setting_a_default_is_accepted() -> None:
    spec = InferenceServiceSpec.model_validate(
        make_spec(engine={"env": [{"name": "HF_HOME", "value": "/models/hf"}]})
    )
    assert check_spec(spec, None) is None
