"""Invalid manifests are rejected by the API server itself (schema + CEL), naming the field.

The cases are tests/admission_cases.py, shared with tests/unit/test_api_validation.py (which
runs them through pydantic): the CRD generated from the models and the models must agree.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from tests.admission_cases import ACCEPTED, BASE, REJECTED, Case, name
from tests.merge_patch import merge_patch

from e2e import harness as h


def test_at_least_thirty_cases() -> None:
    assert len(REJECTED) >= 30


@pytest.mark.parametrize("case", REJECTED, ids=[c.id for c in REJECTED])
def test_rejected_by_api_server(cluster: str, chart: str, namespace: str, case: Case) -> None:
    r = h.apply(merge_patch(BASE, case.patch), namespace=namespace, check=False)
    assert r.returncode != 0, f"{case.id}: the API server accepted an invalid manifest"
    # Rules on the object itself have no fieldPath (metadata is not in the schema); their
    # message names the field.
    assert case.path in r.stderr, r.stderr
    expected = case.server_says or case.message
    if expected is not None:
        assert expected in r.stderr, r.stderr
    assert not h.kget("inferenceservices", namespace=namespace)["items"]


@pytest.mark.parametrize(("case", "patch"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_accepted_by_api_server(
    cluster: str, chart: str, namespace: str, case: str, patch: dict[str, Any]
) -> None:
    doc = merge_patch(BASE, patch)
    r = h.kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", "-", "-n", namespace,
        input=yaml.safe_dump(doc), check=False,
    )  # fmt: skip
    assert r.returncode == 0, f"{case}: {r.stderr}"


def test_defaults_filled_by_api_server(cluster: str, chart: str, namespace: str) -> None:
    h.apply(merge_patch(BASE, name("defaults")), namespace=namespace)
    obj = h.isvc("defaults", namespace)
    spec = obj["spec"]
    assert spec["kvTransfer"]["connector"] == "lmcache"
    assert spec["prefill"]["parallelism"] == {"tensor": 1, "pipeline": 1}
    assert spec["decode"]["autoscaling"]["targetKVCacheUsagePercent"] == 80
    assert spec["router"]["policy"] == "least-loaded"
    assert spec["autoscaling"]["interval"] == "10s"
    assert "port" not in spec["autoscaling"]["source"]["scrape"]


def test_short_name(cluster: str, chart: str, namespace: str) -> None:
    assert h.kubectl("get", "tisvc", "-n", namespace).returncode == 0
