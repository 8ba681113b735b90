"""Reconcile benchmark on the local control plane: Tandem against named baselines, same run.

1. Latency: ``kubectl apply`` of one InferenceService until its last child exists, p50/p99,
   against ``kubectl apply --server-side`` of the same children (``tandem render``) until the
   same child exists. The ratio is the cost of going through the operator.
2. Burst: 100 InferenceServices applied at once until all 900 children exist, against one
   ``kubectl apply`` of the 900 rendered children.
3. Memory: operator RSS with N InferenceServices (default 1,000) against a do-nothing kopf
   operator that watches the same objects (InferenceServices and Deployments).

    e2e/cluster.sh up && export KUBECONFIG=$(e2e/cluster.sh kubeconfig)
    python bench/reconcile_bench.py [--quick] [--samples 20] [--memory-crs 1000]

Pools are scaled to zero (``replicas: 0``) so the fake nodes run no pods: the measure is the
operator and the API server, not KWOK's pod lifecycle.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from e2e import harness as h  # noqa: E402

NOOP_OPERATOR = """
import kopf

@kopf.on.startup()
def configure(settings, **_):
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="bench.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="bench.dev")

@kopf.on.event("tandem.dev", "v1alpha1", "inferenceservices")
def isvc(**_):
    pass

@kopf.on.event("apps", "v1", "deployments")
def deployments(**_):
    pass
"""


def manifest(name: str, ns: str) -> dict[str, Any]:
    doc = h.example("qwen-nixl.yaml", ns, name=name)
    doc["spec"]["prefill"] = {"replicas": 0}
    doc["spec"]["decode"] = {"replicas": 0}
    doc["spec"]["router"]["replicas"] = 0
    return doc


def rendered(doc: dict[str, Any]) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "tandem", "render", "-f", "-"],
        input=yaml.safe_dump(doc), capture_output=True, text=True, check=True,
    )  # fmt: skip
    children = [c for c in yaml.safe_load_all(r.stdout) if c]
    for c in children:
        c["metadata"].pop("ownerReferences", None)  # no owner object exists for the baseline
    return yaml.safe_dump_all(children)


class DeploymentWatch:
    """Records when each Deployment in a namespace is first seen (one watch, no polling)."""

    def __init__(self, ns: str) -> None:
        self.seen: dict[str, float] = {}
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(
            [h.tool("kubectl"), "get", "deployments", "-n", ns, "--watch", "-o",
             "jsonpath={.metadata.name}{\"\\n\"}"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            name = line.strip()
            if name:
                with self.cond:
                    self.seen.setdefault(name, time.monotonic())
                    self.cond.notify_all()

    def wait(self, names: list[str], timeout: float = 600) -> float:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not all(n in self.seen for n in names):
                if not self.cond.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"missing: {[n for n in names if n not in self.seen][:5]}")
            return max(self.seen[n] for n in names)

    def stop(self) -> None:
        self.proc.terminate()


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def rss_mib(pid: int) -> float:
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total = int(line.split()[1])
    return total / 1024


def latency(ns: str, samples: int) -> tuple[list[float], list[float]]:
    watch = DeploymentWatch(ns)
    time.sleep(1)
    tandem, kubectl = [], []
    try:
        for i in range(samples):
            name = f"lat-{i:03d}"
            start = time.monotonic()
            h.apply(manifest(name, ns))
            tandem.append(watch.wait([f"{name}-router"]) - start)
            base = f"base-{i:03d}"
            text = rendered(manifest(base, ns))
            start = time.monotonic()
            h.kubectl(
                "apply", "--server-side", "--field-manager=bench", "-n", ns, "-f", "-", input=text
            )
            kubectl.append(watch.wait([f"{base}-router"]) - start)
    finally:
        watch.stop()
    return tandem, kubectl


def burst(ns: str, n: int) -> tuple[float, float]:
    watch = DeploymentWatch(ns)
    time.sleep(1)
    try:
        docs = [manifest(f"burst-{i:03d}", ns) for i in range(n)]
        start = time.monotonic()
        h.kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=yaml.safe_dump_all(docs))
        t_tandem = (
            watch.wait(
                [f"burst-{i:03d}-{r}" for i in range(n) for r in ("prefill", "decode", "router")]
            )
            - start
        )
        texts = "---\n".join(rendered(manifest(f"bb-{i:03d}", ns)) for i in range(n))
        start = time.monotonic()
        h.kubectl(
            "apply", "--server-side", "--field-manager=bench", "-n", ns, "-f", "-", input=texts
        )
        t_kubectl = (
            watch.wait(
                [f"bb-{i:03d}-{r}" for i in range(n) for r in ("prefill", "decode", "router")]
            )
            - start
        )
    finally:
        watch.stop()
    return t_tandem, t_kubectl


def memory(ns: str, crs: int, kubeconfig: str, logs: Path) -> tuple[float, float]:
    docs = [manifest(f"mem-{i:04d}", ns) for i in range(crs)]
    for start in range(0, crs, 200):
        h.kubectl(
            "apply",
            "--server-side",
            "-n",
            ns,
            "-f",
            "-",
            input=yaml.safe_dump_all(docs[start : start + 200]),
        )
    op = h.OperatorProcess(
        kubeconfig, logs / "mem-tandem.log", resync_seconds=300, namespaces=[ns]
    ).start()
    try:
        watch = DeploymentWatch(ns)
        watch.wait([f"mem-{i:04d}-router" for i in range(crs)], timeout=3600)
        watch.stop()
        time.sleep(20)
        assert op.proc is not None
        tandem = rss_mib(op.proc.pid)
        print(json.dumps({"memory": {"crs": crs, "tandem_mib": tandem}}), flush=True)
    finally:
        op.stop()
    script = logs / "noop_operator.py"
    script.write_text(NOOP_OPERATOR)
    env = dict(os.environ, KUBECONFIG=kubeconfig)
    noop = subprocess.Popen(
        [sys.executable, "-m", "kopf", "run", "--standalone", f"--namespace={ns}", str(script)],
        env=env, stdout=open(logs / "noop.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )  # fmt: skip
    try:
        time.sleep(60)
        baseline = rss_mib(noop.pid)
        print(json.dumps({"memory": {"crs": crs, "noop_kopf_mib": baseline}}), flush=True)
    finally:
        noop.send_signal(signal.SIGTERM)
        noop.wait(timeout=30)
    # Delete the CRs while Tandem runs (kopf's finalizer needs it), else the namespace would
    # stay Terminating.
    cleanup = h.OperatorProcess(
        kubeconfig, logs / "mem-cleanup.log", resync_seconds=300, namespaces=[ns]
    ).start()
    try:
        h.kubectl("delete", "inferenceservices", "--all", "-n", ns, "--wait=false", check=False)
        h.wait_for(
            lambda: not h.kget("inferenceservices", namespace=ns)["items"],
            timeout=1800,
            interval=5,
            what=f"the {crs} InferenceServices to be deleted",
        )
    finally:
        cleanup.stop()
    return tandem, baseline


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="10 samples, 50-CR burst, 200 CRs for memory"
    )
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--burst", type=int, default=100)
    ap.add_argument("--memory-crs", type=int, default=1000)
    args = ap.parse_args()
    if args.quick:
        args.samples, args.burst, args.memory_crs = 10, 50, 200
    if not os.environ.get("KUBECONFIG"):
        sys.exit(
            "KUBECONFIG is not set: e2e/cluster.sh up, then export KUBECONFIG=$(e2e/cluster.sh kubeconfig)"
        )
    h.install_chart()
    kubeconfig = h.service_account_kubeconfig()
    logs = Path(tempfile.mkdtemp(prefix="tandem-bench-"))
    results: dict[str, Any] = {}
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    h.kubectl("create", "namespace", ns)
    op = h.OperatorProcess(
        kubeconfig, logs / "operator.log", resync_seconds=300, namespaces=[ns]
    ).start()
    try:
        # Warm-up: the operator has started and handles objects before anything is timed.
        h.apply(manifest("warmup", ns))
        h.wait_for(lambda: h.exists("deployment", "warmup-router", ns), timeout=120, what="warm-up")
        tandem, kubectl = latency(ns, args.samples)
        results["latency"] = {
            "tandem_p50_s": statistics.median(tandem), "tandem_p99_s": pct(tandem, 99),
            "kubectl_p50_s": statistics.median(kubectl), "kubectl_p99_s": pct(kubectl, 99),
        }  # fmt: skip
        print(json.dumps({"latency": results["latency"]}), flush=True)
        t_burst, k_burst = burst(ns, args.burst)
        results["burst"] = {"n": args.burst, "tandem_s": t_burst, "kubectl_s": k_burst}
        print(json.dumps({"burst": results["burst"]}), flush=True)
    finally:
        # Delete the CRs while the operator runs: kopf's finalizer needs it.
        h.kubectl("delete", "inferenceservices", "--all", "-n", ns, "--timeout=120s", check=False)
        op.stop()
        h.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    ns2 = f"bench-{uuid.uuid4().hex[:6]}"
    h.kubectl("create", "namespace", ns2)
    try:
        m_tandem, m_noop = memory(ns2, args.memory_crs, kubeconfig, logs)
        results["memory"] = {
            "crs": args.memory_crs,
            "tandem_mib": m_tandem,
            "noop_kopf_mib": m_noop,
        }
    finally:
        h.kubectl("delete", "namespace", ns2, "--wait=false", check=False)

    lat, b, m = results["latency"], results["burst"], results["memory"]
    print()
    print(f"{'measure':<44}{'tandem':>10}{'baseline':>10}{'ratio':>8}   baseline")
    rows = [
        (
            "apply -> all children, p50 (s)",
            lat["tandem_p50_s"],
            lat["kubectl_p50_s"],
            "kubectl apply of the rendered children",
        ),
        (
            "apply -> all children, p99 (s)",
            lat["tandem_p99_s"],
            lat["kubectl_p99_s"],
            "kubectl apply of the rendered children",
        ),
        (
            f"{b['n']}-CR burst -> all children (s)",
            b["tandem_s"],
            b["kubectl_s"],
            f"one kubectl apply of {b['n'] * 9} children",
        ),
        (
            f"operator RSS at {m['crs']} CRs (MiB)",
            m["tandem_mib"],
            m["noop_kopf_mib"],
            "do-nothing kopf operator, same watches",
        ),
    ]
    for label, t, base, what in rows:
        print(f"{label:<44}{t:>10.2f}{base:>10.2f}{t / base:>7.2f}x   {what}")
    print(json.dumps(results))
    print(f"logs: {logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
