"""Apply decisions (zero idle writes) and the operator-only semantic checks."""

from __future__ import annotations

import copy
from typing import Any

from tandem.api.v1alpha1 import InferenceServiceSpec
from tandem.plan.admission import Rejection, check_spec
from tandem.reconcile.diff import is_subset, up_to_date
from tandem.reconcile.reconciler import parse_spec
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
    tp4 = {"parallelism": {"tensor": 4}}
    spec = InferenceServiceSpec.model_validate(make_spec(prefill=tp4, decode=tp4))
    assert check_spec(spec, [node(8)]) is None
    assert check_spec(spec, None) is None


def test_replica_exceeding_node() -> None:
    spec = InferenceServiceSpec.model_validate(
        make_spec(kvTransfer={"connector": "nixl"}, decode={"parallelism": {"tensor": 16}})
    )
    r = check_spec(spec, None)
    assert r is not None and r.reason == "ReplicaExceedsNode" and "spec.decode" in r.message


def test_no_node_fits() -> None:
    tp8 = {"parallelism": {"tensor": 8}}
    spec = InferenceServiceSpec.model_validate(make_spec(prefill=tp8, decode=tp8))
    r = check_spec(spec, [node(4), node(2)])
    assert r is not None and r.reason == "NoNodeFitsReplica" and "offers 4" in r.message
    # Nodes with no GPUs at all: maybe GPU nodes come on demand; let the scheduler decide.
    assert check_spec(spec, [node(0)]) is None


def test_node_selector_considered() -> None:
    spec = InferenceServiceSpec.model_validate(
        make_spec(
            prefill={"parallelism": {"tensor": 8}, "nodeSelector": {"gpu": "h100"}},
            decode={"parallelism": {"tensor": 8}},
        )
    )
    r = check_spec(spec, [node(8, gpu="a10"), node(4, gpu="h100")])
    assert r is not None and "nodeSelector" in r.message


def admission(raw: dict[str, Any]) -> Rejection | None:
    """The operator's verdict without nodes: the models first, then the semantic checks."""
    spec, rejection = parse_spec(raw)
    return rejection if spec is None else check_spec(spec, None)


# Args or env that override what Tandem derives are refused (by the models since they are
# judgeable from the manifest alone), with a message that names the field.
def test_conflicting_args() -> None:
    r = admission(make_spec(engine={"args": ["--kv-transfer-config", "{}"]}))
    assert r is not None and r.reason in ("InvalidSpec", "ConflictingEngineArgs")
    assert "spec.engine.args" in r.message and "--kv-transfer-config" in r.message


def test_env_overriding_a_derived_variable_is_rejected() -> None:
    r = admission(
        make_spec(
            kvTransfer={"connector": "nixl"},
            decode={"env": [{"name": "VLLM_NIXL_SIDE_CHANNEL_HOST", "value": "0.0.0.0"}]},
        )
    )
    assert r is not None and r.reason in ("InvalidSpec", "ConflictingEngineArgs")
    assert "spec.decode.env" in r.message and "VLLM_NIXL_SIDE_CHANNEL_HOST" in r.message


def test_env_setting_a_default_is_accepted() -> None:
    spec = InferenceServiceSpec.model_validate(
        make_spec(engine={"env": [{"name": "HF_HOME", "value": "/models/hf"}]})
    )
    assert check_spec(spec, None) is None
