"""Fixtures for the end-to-end tier against a real control plane (e2e/cluster.sh up)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e import harness as h


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    # Real vLLM engines saturate the machine: run that tier last, after the control-plane tests.
    items.sort(key=lambda item: item.get_closest_marker("dataplane") is not None)
    for item in items:
        path = Path(str(item.fspath))
        if (
            here in path.parents
            and "dataplane" not in path.parts
            and item.get_closest_marker("dataplane") is None
        ):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cluster() -> str:
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        pytest.fail(
            "KUBECONFIG is not set: start the local cluster with `e2e/cluster.sh up` (scripts/test.sh does)"
        )
    r = h.kubectl("get", "--raw", "/readyz", check=False)
    if r.returncode != 0:
        pytest.fail(f"the cluster at {kubeconfig} is not ready: {r.stderr.strip()}")
    return kubeconfig


@pytest.fixture(scope="session")
def chart(cluster: str) -> str:
    h.install_chart()
    return h.service_account_kubeconfig()


@pytest.fixture(scope="session")
def operator_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("operator")


@pytest.fixture(scope="session")
def operator(chart: str, operator_logs: Path) -> Iterator[h.OperatorProcess]:
    """One operator for the session, authorised only by the chart's RBAC."""
    op = h.OperatorProcess(
        chart,
        operator_logs / "operator.log",
        resync_seconds=10,
        extra=["--kv-interval-seconds=2"],
    ).start()
    yield op
    op.stop()


@pytest.fixture
def namespace(cluster: str) -> Iterator[str]:
    ns = f"e2e-{uuid.uuid4().hex[:8]}"
    h.kubectl("create", "namespace", ns)
    yield ns
    # Delete the InferenceServices first, while an operator still runs: kopf's daemons and
    # timers keep a finalizer on them, which only a running operator removes.
    h.kubectl("delete", "inferenceservices", "--all", "-n", ns, "--timeout=60s", check=False)
    h.kubectl("delete", "namespace", ns, "--wait=false", check=False)
