"""The local demo: chart installed, operator running, an example reconciled and shown.

Run through ``scripts/demo.sh`` (which brings the local control plane up first).
"""

from __future__ import annotations

import sys
import time

from e2e import harness as h

NAMESPACE = "demo"
EXAMPLE = "llama-1p1d-lmcache.yaml"


def main() -> int:
    t0 = time.monotonic()
    print("==> helm upgrade --install tandem charts/tandem -n tandem-system")
    h.install_chart()
    print(h.helm("list", "-n", h.OPERATOR_NS).stdout)
    kubeconfig = h.service_account_kubeconfig()
    log = h.CACHE / "run" / "demo-operator.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"==> tandem run (as ServiceAccount {h.OPERATOR_NS}/{h.RELEASE}; log: {log})")
    with h.operator(kubeconfig, log, resync_seconds=10) as op:
        h.kubectl("create", "namespace", NAMESPACE, check=False)
        doc = h.example(EXAMPLE, NAMESPACE)
        name = doc["metadata"]["name"]
        print(f"==> kubectl apply -f examples/{EXAMPLE} -n {NAMESPACE}")
        h.apply(doc)
        try:
            h.wait_ready(name, NAMESPACE, timeout=180)
        except TimeoutError:
            print(op.log_tail(), file=sys.stderr)
            raise
        print(f"\n==> kubectl get inferenceservices -n {NAMESPACE}")
        print(h.kubectl("get", "inferenceservices", "-n", NAMESPACE).stdout)
        print(
            f"==> kubectl get deploy,svc,pods -l tandem.dev/instance={name} -n {NAMESPACE} -o wide"
        )
        print(
            h.kubectl(
                "get",
                "deploy,svc,pods",
                "-l",
                f"tandem.dev/instance={name}",
                "-n",
                NAMESPACE,
                "-o",
                "wide",
            ).stdout
        )
        obj = h.isvc(name, NAMESPACE)
        print("==> status.conditions")
        for c in obj["status"]["conditions"]:
            print(f"  {c['type']:<13} {c['status']:<6} {c['reason']:<16} {c['message']}")
        print(f"  endpoint: {obj['status']['endpoint']}")
        print(f"\n==> prefill engine command line (kubectl get deploy {name}-prefill)")
        dep = h.kget("deployment", f"{name}-prefill", NAMESPACE)
        c = dep["spec"]["template"]["spec"]["containers"][0]
        print("  " + " ".join(c["command"] + c["args"]))
    print(
        f"\nDemo done in {time.monotonic() - t0:.1f}s. The cluster stays up: e2e/cluster.sh down removes it."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
