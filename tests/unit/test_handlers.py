"""The kopf wiring: an explicit registry with the resync period as a value, and one reconcile
for every trigger (no status-only shortcut for child events)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kopf
import pytest

from tandem.autoscale.report import Reports
from tandem.reconcile import handlers
from tandem.reconcile.driver import run_reconcile
from tandem.reconcile.metrics import OperatorMetrics
from tests.conftest import make_spec
from tests.memory_kube import MemoryKube
from tests.unit.test_reconcile_apply import UNPROCESSABLE

ROOT = Path(__file__).resolve().parents[2]
NS, NAME = "ml", "svc"


def test_the_resync_period_is_a_value_of_the_registry() -> None:
    registry = handlers.build_registry(7.5)
    timers = {h.id: h for h in registry._spawning.get_all_handlers()}
    assert (timers["on_resync"].interval, timers["on_resync"].initial_delay) == (7.5, 7.5)
    assert "autoscaler" in timers
    assert handlers.build_registry(30)._spawning is not registry._spawning


def test_nothing_is_registered_on_import() -> None:
    code = (
        "import kopf, tandem.reconcile.handlers, tandem.reconcile.autoscaling; "
        "r = kopf.get_default_registry(); "
        "assert not r._changing.get_all_handlers() and not r._spawning.get_all_handlers()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


def test_the_cli_takes_the_resync_period_as_an_option() -> None:
    from click.testing import CliRunner

    from tandem.cli import main

    out = CliRunner().invoke(main, ["run", "--help"]).output
    assert "--resync-seconds" in out and "TANDEM_RESYNC_SECONDS" not in out


class Emitted:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, str]] = []
        monkeypatch.setattr(kopf, "event", self._event)
        monkeypatch.setattr(kopf, "info", self._info)

    def _event(self, body: Any, *, type: str, reason: str, message: str = "") -> None:
        self.events.append((type, reason))

    def _info(self, body: Any, *, reason: str, message: str = "") -> None:
        self.events.append(("Normal", reason))


def memo_for(kube: MemoryKube) -> Any:
    return SimpleNamespace(kube=kube, metrics=OperatorMetrics(), autoscaler_reports=Reports())


def put_isvc(kube: MemoryKube) -> None:
    kube.put(
        {
            "apiVersion": "tandem.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": NAME, "namespace": NS, "uid": "uid-isvc", "generation": 1},
            "spec": make_spec(),
        }
    )


def test_a_refused_child_is_a_result_not_a_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    emitted = Emitted(monkeypatch)
    kube = MemoryKube(NS)
    put_isvc(kube)
    kube.refuse["Deployment/svc-decode"] = UNPROCESSABLE  # type: ignore[assignment]
    memo = memo_for(kube)
    run_reconcile(memo, kube.get("InferenceService", NS, NAME), "change")  # no TemporaryError
    assert emitted.events == [("Warning", "ApplyFailed")]
    run_reconcile(memo, kube.get("InferenceService", NS, NAME), "resync")
    assert emitted.events == [("Warning", "ApplyFailed")]  # not again
    rejected = memo.metrics.reconciles.labels("resync", "rejected")._value.get()
    assert rejected == 1
    assert memo.metrics.rejections.labels("ApplyFailed")._value.get() == 1


def test_a_child_event_runs_the_full_reconcile(monkeypatch: pytest.MonkeyPatch) -> None:
    emitted = Emitted(monkeypatch)
    kube = MemoryKube(NS)
    put_isvc(kube)
    memo = memo_for(kube)
    run_reconcile(memo, kube.get("InferenceService", NS, NAME), "change")
    router = kube.objects.pop(("Deployment", "svc-router"))
    emitted.events.clear()
    handlers.on_child_event(body=router, memo=memo)  # type: ignore[arg-type]
    assert ("Deployment", "svc-router") in kube.objects
    assert ("Normal", "Applied") in emitted.events
