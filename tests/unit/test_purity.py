"""Pure layers import neither kopf, the Kubernetes client nor aiohttp (import-linter)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold() -> None:
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run(
        [lint, "--config", str(ROOT / ".importlinter")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken" in result.stdout, result.stdout


def test_builders_import_without_kopf_or_client() -> None:
    code = (
        "import sys; import tandem.render, tandem.plan, tandem.kvtruth, tandem.api.crd, "
        "tandem.reconcile.status, tandem.reconcile.events; "
        "bad=[m for m in ('kopf','kubernetes','aiohttp') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)
