"""Helpers for the end-to-end tiers: kubectl, helm, the operator as a process, waiting.

The operator runs as a local process (no image can be built here) but with the *chart's*
ServiceAccount credentials: a token requested for that ServiceAccount goes into a kubeconfig of
its own, so every API call the operator makes is authorised by exactly the RBAC the chart grants.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "tandem"
EXAMPLES = ROOT / "examples"
CACHE = Path(os.environ.get("TANDEM_CACHE", Path.home() / ".cache" / "tandem"))
RELEASE = "tandem"
OPERATOR_NS = "tandem-system"

T = TypeVar("T")


def tool(name: str) -> str:
    for candidate in (shutil.which(name), str(CACHE / "bin" / name)):
        if candidate and Path(candidate).exists():
            return candidate
    raise RuntimeError(f"{name} not found: run e2e/cluster.sh tools")


def kubectl(
    *args: str, input: str | None = None, check: bool = True, kubeconfig: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    r = subprocess.run(
        [tool("kubectl"), *args], input=input, capture_output=True, text=True, env=env, timeout=120
    )
    if check and r.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {r.stderr.strip()}")
    return r


def kget(
    kind: str, name: str | None = None, namespace: str | None = None, selector: str | None = None
) -> Any:
    args = ["get", kind, "-o", "json"]
    if name:
        args.insert(2, name)
    if namespace:
        args += ["-n", namespace]
    if selector:
        args += ["-l", selector]
    return json.loads(kubectl(*args).stdout)


def exists(kind: str, name: str, namespace: str) -> bool:
    return kubectl("get", kind, name, "-n", namespace, check=False).returncode == 0


def apply(
    doc: dict[str, Any] | str, namespace: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc)
    args = ["apply", "--server-side", "--field-manager=e2e", "--force-conflicts", "-f", "-"]
    if namespace:
        args += ["-n", namespace]
    return kubectl(*args, input=text, check=check)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([tool("helm"), *args], capture_output=True, text=True, timeout=300)
    if check and r.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)} failed: {r.stderr.strip()}")
    return r


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 60.0,
    interval: float = 0.5,
    what: str = "condition",
) -> T:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # transient API errors while waiting
            last_error = e
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout}s waiting for {what}"
        + (f" (last error: {last_error})" if last_error else "")
    )


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for c in obj.get("status", {}).get("conditions", []) or []:
        if c.get("type") == ctype:
            return dict(c)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def install_chart(extra: list[str] | None = None) -> None:
    """helm install (or upgrade) the chart: CRDs, RBAC, the operator Deployment.

    Helm installs ``crds/`` only once and never upgrades them, so on a cluster kept from an
    earlier run the CRDs are then applied as the README tells users to upgrade them."""
    helm(
        "upgrade", "--install", RELEASE, str(CHART), "--namespace", OPERATOR_NS,
        "--create-namespace", "--set", "image.pullPolicy=Never", *(extra or []),
    )  # fmt: skip
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    wait_for(
        lambda: kubectl("get", "crd", "inferenceservices.tandem.dev", check=False).returncode == 0,
        timeout=30,
        what="the InferenceService CRD",
    )
    kubectl(
        "wait", "--for=condition=Established", "crd/inferenceservices.tandem.dev", "--timeout=30s"
    )


def service_account_kubeconfig(namespace: str = OPERATOR_NS, sa: str = RELEASE) -> str:
    """A kubeconfig holding a token requested for the chart's ServiceAccount."""
    token = kubectl("create", "token", sa, "-n", namespace, "--duration=6h").stdout.strip()
    admin = yaml.safe_load(Path(os.environ["KUBECONFIG"]).read_text())
    ctx_name = admin.get("current-context")
    ctx = next(c for c in admin["contexts"] if c["name"] == ctx_name)["context"]
    cluster = next(c for c in admin["clusters"] if c["name"] == ctx["cluster"])
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": cluster["cluster"]}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "e2e", "user": sa}}],
        "current-context": "operator",
    }
    fd, path = tempfile.mkstemp(prefix="tandem-operator-", suffix=".kubeconfig")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(config, f)
    return path


class OperatorProcess:
    """``tandem run`` as a subprocess with the given kubeconfig."""

    def __init__(
        self,
        kubeconfig: str,
        log_path: Path,
        resync_seconds: int = 30,
        extra: list[str] | None = None,
        namespaces: list[str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespaces = namespaces or []
        self.log_path = log_path
        self.resync_seconds = resync_seconds
        self.extra = extra or []
        self.metrics_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        env = dict(os.environ, KUBECONFIG=self.kubeconfig)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tandem", "run", "--standalone", *self._scope(),
             "--liveness=", f"--metrics-port={self.metrics_port}", "--metrics-host=127.0.0.1",
             f"--resync-seconds={self.resync_seconds}", *self.extra],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
        return self

    def _scope(self) -> list[str]:
        if not self.namespaces:
            return ["--all-namespaces"]
        return [f"--namespace={ns}" for ns in self.namespaces]

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as r:
            return str(r.read().decode())

    def metric(self, name: str) -> float:
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@contextmanager
def operator(kubeconfig: str, log_path: Path, **kw: Any) -> Iterator[OperatorProcess]:
    op = OperatorProcess(kubeconfig, log_path, **kw).start()
    try:
        yield op
    finally:
        op.stop()


def example(filename: str, namespace: str, name: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / filename).read_text())
    doc["metadata"]["namespace"] = namespace
    if name:
        doc["metadata"]["name"] = name
    return doc


def isvc(name: str, namespace: str) -> dict[str, Any]:
    return dict(kget("inferenceservice", name, namespace))


def wait_ready(name: str, namespace: str, timeout: float = 120.0) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        obj = isvc(name, namespace)
        c = condition(obj, "Ready")
        return obj if c and c["status"] == "True" else None

    return wait_for(ready, timeout=timeout, what=f"{namespace}/{name} Ready=True")
