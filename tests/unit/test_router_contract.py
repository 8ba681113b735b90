"""The router's command line parses exactly the flags the builders generate."""

from __future__ import annotations

from pathlib import Path

import pytest

from tandem.api.v1alpha1 import InferenceServiceSpec
from tandem.render import Owner
from tandem.render.router import router_args
from tandem.router.main import router_command
from tests.conftest import EXAMPLES, load_example


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_builder_args_parse(path: Path) -> None:
    doc = load_example(path)
    spec = InferenceServiceSpec.model_validate(doc["spec"])
    owner = Owner(doc["metadata"]["name"], "ns", "uid")
    args = [a.replace("$(POD_IP)", "10.1.2.3") for a in router_args(spec, owner)]
    ctx = router_command.make_context("router", args)
    p = ctx.params
    assert p["model"] == (spec.model.served_name or owner.name)
    assert str(p["connector"]) == spec.kv_transfer.connector
    assert str(p["policy"]) == spec.router.policy
    assert p["min_prompt_tokens"] == spec.router.disaggregation.min_prompt_tokens
    assert p["prefill_service"] == f"{owner.name}-prefill"
    assert p["decode_service"] == f"{owner.name}-decode"
    assert p["namespace"] == "ns"
    assert p["engine_port"] == spec.engine.port
    if spec.kv_transfer.connector == "lmcache":
        assert p["kv_ready_port"] == spec.kv_transfer.lmcache_settings.proxy_port
        assert p["advertise_host"] == "10.1.2.3"
