"""The API models reject bad manifests with a message that names the field.

The cases are shared with e2e/test_admission.py (tests/admission_cases.py), which sends the same
manifests to a real API server: pydantic and the CRD's schema and CEL must agree on each.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from tandem.api.owned import (
    OWNED_ENV,
    OWNED_FLAG_PATTERN,
    OWNED_FLAGS,
    owned_env_conflicts,
    owned_flag,
    owned_flag_conflicts,
)
from tandem.api.v1alpha1 import (
    RULES,
    EnvVar,
    InferenceService,
    InferenceServiceSpec,
    name_problem,
    parse_duration,
)
from tandem.reconcile.reconciler import format_validation_error
from tests.admission_cases import ACCEPTED, BASE, REJECTED, Case
from tests.conftest import EXAMPLES, load_example, make_spec
from tests.merge_patch import merge_patch


def _loc(loc: tuple[int | str, ...]) -> str:
    """A pydantic location as the API server writes a field path: ``spec.env[0].name``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out.lstrip(".")


def rejection(doc: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as exc:
        InferenceService.model_validate(doc)
    return "; ".join(
        f"{_loc(e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in exc.value.errors()
    )


@pytest.mark.parametrize("case", REJECTED, ids=[c.id for c in REJECTED])
def test_rejected_naming_the_field(case: Case) -> None:
    text = rejection(merge_patch(BASE, case.patch))
    assert case.path in text, text
    if case.message is not None:
        assert f"{case.path}: {case.message}" in text, text


@pytest.mark.parametrize("case", REJECTED, ids=[c.id for c in REJECTED])
def test_operator_names_the_field(case: Case) -> None:
    """What the operator reports (``Accepted=False`` message) for the spec alone."""
    if not case.path.startswith("spec."):
        assert name_problem(merge_patch(BASE, case.patch)["metadata"]["name"]) is not None
        return
    with pytest.raises(ValidationError) as exc:
        InferenceServiceSpec.model_validate(merge_patch(BASE, case.patch)["spec"])
    message = format_validation_error(exc.value)
    assert re.sub(r"\[(\d+)\]", r".\1", case.path) in re.sub(r"\[(\d+)\]", r".\1", message)


@pytest.mark.parametrize(("case", "patch"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_accepted(case: str, patch: dict[str, Any]) -> None:
    doc = merge_patch(BASE, patch)
    InferenceService.model_validate(doc)
    assert name_problem(doc["metadata"]["name"]) is None


def test_every_rule_has_a_case() -> None:
    messages = [c.message for c in REJECTED if c.message]
    for rule in RULES:
        assert any(m in rule.message for m in messages), f"no case for rule {rule.name}"


def test_rules_named_once_and_worded_once() -> None:
    names = [r.name for r in RULES]
    assert len(names) == len(set(names))
    for rule in RULES:
        assert rule.message and "\n" not in rule.message
        assert rule.field.startswith("."), rule.name


def test_all_errors_reported_at_once() -> None:
    doc = merge_patch(
        BASE,
        {
            "spec": {
                "prefill": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
                "engine": {"args": ["--port=1"]},
            }
        },
    )
    text = rejection(doc)
    assert "spec.prefill.autoscaling.minReplicas" in text and "spec.engine.args" in text


@pytest.mark.parametrize(
    "arg",
    [
        *OWNED_FLAGS,
        *(f"{f}=1" for f in OWNED_FLAGS),
        "--tensor_parallel_size",
        "--served_model-name=x",
        "--kv-transfer-config.kv_role=kv_both",
        "--kv_transfer_config.kv_connector=X",
        "--model=a\nb",
    ],
)
def test_owned_flag_spellings(arg: str) -> None:
    assert owned_flag(arg) is not None
    assert re.search(OWNED_FLAG_PATTERN, arg)


@pytest.mark.parametrize(
    "arg",
    [
        "--portal",
        "--model-impl",
        "--hosts",
        "-tpx",
        "-pp3",
        "--Port",
        "64",
        "--kv-transfer-configx",
    ],
)
def test_not_owned_flags(arg: str) -> None:
    assert owned_flag(arg) is None
    assert not re.search(OWNED_FLAG_PATTERN, arg)


def test_owned_conflicts_name_where_and_what() -> None:
    """The operator's own report, for objects that reached it without admission's CEL."""
    base = InferenceServiceSpec.model_validate(make_spec())
    bad = base.model_copy(
        update={
            "engine": base.engine.model_copy(update={"args": ["--port", "9"]}),
            "prefill": base.prefill.model_copy(
                update={"args": ["--tensor_parallel_size=4"], "env": [EnvVar(name=OWNED_ENV[0])]}
            ),
        }
    )
    assert owned_flag_conflicts(base) == [] and owned_env_conflicts(base) == []
    assert owned_flag_conflicts(bad) == [
        "spec.engine.args: --port",
        "spec.prefill.args: --tensor_parallel_size",
    ]
    assert owned_env_conflicts(bad) == [f"spec.prefill.env: {OWNED_ENV[0]}"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_validate(path: Any) -> None:
    doc = load_example(path)
    assert InferenceService.model_validate(doc).spec.model.uri


def test_defaults_are_explicit() -> None:
    spec = InferenceServiceSpec.model_validate(make_spec())
    wire = spec.wire()
    assert wire["kvTransfer"] == {"connector": "lmcache", "rdma": False}
    assert wire["prefill"]["parallelism"] == {"tensor": 1, "pipeline": 1}
    assert wire["decode"]["autoscaling"]["targetKVCacheUsagePercent"] == 80
    assert "targetKVCacheUsagePercent" not in wire["prefill"]["autoscaling"]
    assert wire["router"]["policy"] == "least-loaded"
    assert wire["autoscaling"]["enabled"] is False
    assert "port" not in wire["autoscaling"]["source"]["scrape"]
    assert spec.scrape_port == spec.engine.port


def test_wire_round_trip() -> None:
    for path in EXAMPLES:
        spec = InferenceServiceSpec.model_validate(load_example(path)["spec"])
        again = InferenceServiceSpec.model_validate(spec.wire())
        assert again == spec


@pytest.mark.parametrize(("text", "seconds"), [("10s", 10), ("2m", 120), ("1h", 3600)])
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10", "0s", "-1s", "1d"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
