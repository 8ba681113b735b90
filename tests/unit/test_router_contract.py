"""The router's command line is one contract: the operator renders a RouterConfig, the router
parses the same RouterConfig back.

For every example, the args in the rendered router Deployment parse back to exactly the
config the plan holds (the golden manifests pin the args themselves, byte for byte).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest

from tandem.api.v1alpha1 import InferenceServiceSpec
from tandem.api.vocabulary import Connector
from tandem.contracts.router import KubernetesSource, RouterConfig
from tandem.plan import Owner, plan_service
from tandem.render import render_children
from tests.conftest import EXAMPLES, load_example, make_spec

#: The router container's own pod IP (downward API, expanded by the kubelet).
POD_IP: Final = "$(POD_IP)"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_rendered_args_parse_back_to_the_planned_config(path: Path) -> None:
    doc = load_example(path)
    spec = InferenceServiceSpec.model_validate(doc["spec"])
    plan = plan_service(spec, Owner(doc["metadata"]["name"], "ns", "uid"))
    (router,) = [
        c
        for c in render_children(plan)
        if c["kind"] == "Deployment" and c["metadata"]["name"] == plan.router.name
    ]
    args = router["spec"]["template"]["spec"]["containers"][0]["args"]
    assert RouterConfig.from_args(args) == plan.router.config
    assert RouterConfig.from_args(args).to_args() == args


def test_examples_cover_every_connector() -> None:
    specs = [InferenceServiceSpec.model_validate(load_example(p)["spec"]) for p in EXAMPLES]
    assert {s.kv_transfer.connector for s in specs} == set(Connector)


def test_api_defaults_are_the_routers_defaults() -> None:
    """A spec that sets nothing gives the contract's default config (lmcache, 600 s, ...),
    except what the operator always states: the sender world size the router waits for (one
    prefill GPU: one KV-ready notification) and the API's KV-ready timeout."""
    spec = InferenceServiceSpec.model_validate(make_spec())
    kube = KubernetesSource("ns", "svc-prefill", "svc-decode")
    assert plan_service(spec, Owner("svc", "ns", "uid")).router.config == RouterConfig(
        model="svc",
        kubernetes=kube,
        advertise_host=POD_IP,
        decoder_init_ports=(7300,),
        decoder_alloc_ports=(7400,),
        kv_ready_notifications=1,
        kv_ready_timeout=spec.kv_transfer.lmcache_settings.kv_ready_timeout_seconds,
    )
