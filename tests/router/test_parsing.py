"""Unit tests of the small parsers: SSE, engine metrics, KV-ready ids, EndpointSlices, config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.api.vocabulary import PrefillFailurePolicy, RouterPolicy
from tandem.contracts.router import FLAGS
from tandem.router import kvready, main
from tandem.router.config import (
    ConfigError,
    Connector,
    KubernetesSource,
    RouterConfig,
    parse_ports,
)
from tandem.router.enginemetrics import parse_engine_load
from tandem.router.main import router_command
from tandem.router.slices import endpoint_url, ready_urls, urls_from_slices
from tandem.router.sse import SseParser, encode_event

pytestmark = pytest.mark.timeout(10)


# --- SSE ----------------------------------------------------------------------------------


def test_sse_parser_handles_events_split_anywhere() -> None:
    stream = encode_event({"a": 1}) + b"data: [DONE]\n\n"
    for cut in range(len(stream)):
        parser = SseParser()
        events = parser.feed(stream[:cut]) + parser.feed(stream[cut:])
        assert events == [b'{"a":1}', b"[DONE]"]
        assert parser.pending == b""


def test_sse_parser_accepts_crlf_and_ignores_comments() -> None:
    parser = SseParser()
    assert parser.feed(b": keepalive\r\n\r\ndata: x\r\n\r\n") == [b"x"]


# --- engine metrics -----------------------------------------------------------------------

VLLM_METRICS = """\
# HELP vllm:num_requests_waiting Number of requests waiting.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="tiny"} 3.0
vllm:num_requests_waiting{engine="1",model_name="tiny"} 2.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="tiny",reason="capacity"} 100.0
vllm:num_requests_running{engine="0",model_name="tiny"} 7.0
vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.5
"""


def test_engine_load_sums_dp_engines_and_ignores_similar_names() -> None:
    load = parse_engine_load(VLLM_METRICS)
    assert (load.waiting, load.running) == (5.0, 7.0)


def test_engine_load_absent_metrics_are_none() -> None:
    load = parse_engine_load("other_metric 1\nvllm:num_requests_running 2\n")
    assert (load.waiting, load.running) == (None, 2.0)


def test_engine_load_tolerates_label_values_with_spaces_and_nan() -> None:
    text = 'vllm:num_requests_waiting{model_name="a b"} 4 1700000000\n'
    text += 'vllm:num_requests_running{model_name="x"} NaN\n'
    load = parse_engine_load(text)
    assert (load.waiting, load.running) == (4.0, None)


# --- KV-ready request ids -----------------------------------------------------------------


@pytest.mark.parametrize("host", ["10.1.2.3", "tandem-router-0.ns.svc", "fd00::1", "h"])
def test_req_id_names_its_owner(host: str) -> None:
    req_id = kvready.make_req_id(host, 7500, "abc123")
    assert kvready.owner_of(req_id) == (host, 7500)


@settings(max_examples=50, deadline=None)
@given(
    host=st.text(alphabet="abcxyz019-.:", min_size=1, max_size=20),
    port=st.integers(1, 65535),
    unique=st.text(alphabet="0123456789abcdef", min_size=1, max_size=32),
)
def test_req_id_round_trips(host: str, port: int, unique: str) -> None:
    assert kvready.owner_of(kvready.make_req_id(host, port, unique)) == (host, port)


@pytest.mark.parametrize("req_id", ["42", "cmpl-abc", "tandem-", "tandem-host-notaport-x"])
def test_foreign_req_ids_have_no_owner(req_id: str) -> None:
    assert kvready.owner_of(req_id) is None


def test_notification_wire_format_round_trips() -> None:
    raw = kvready.encode_notification("r1")
    assert kvready.decode_notification(raw) == ("r1", False)
    assert kvready.decode_notification(kvready.encode_notification("r1", forwarded=True)) == (
        "r1",
        True,
    )
    assert kvready.decode_notification(b"\xc1garbage") is None
    assert kvready.decode_notification(msgpack.packb({"type": "Other"})) is None


def test_zmq_address_brackets_ipv6() -> None:
    assert kvready.zmq_address("fd00::1", 7500) == "tcp://[fd00::1]:7500"
    assert kvready.zmq_address("10.0.0.1", 7500) == "tcp://10.0.0.1:7500"


# --- EndpointSlices -----------------------------------------------------------------------


def slice_(*endpoints: dict[str, object], address_type: str = "IPv4") -> dict[str, object]:
    return {"addressType": address_type, "endpoints": list(endpoints), "metadata": {"name": "s"}}


def test_only_ready_endpoints_become_urls() -> None:
    s = slice_(
        {"addresses": ["10.0.0.1"], "conditions": {"ready": True}},
        {"addresses": ["10.0.0.2"], "conditions": {"ready": False, "terminating": True}},
        {"addresses": ["10.0.0.3"], "conditions": {}},  # unknown → ready (API docs)
        {"addresses": ["10.0.0.4", "10.0.0.40"]},  # fungible: first one only
        {"addresses": [], "conditions": {"ready": True}},
    )
    assert ready_urls(s, 8000) == [
        "http://10.0.0.1:8000",
        "http://10.0.0.3:8000",
        "http://10.0.0.4:8000",
    ]


def test_ipv6_and_fqdn_slices() -> None:
    v6 = slice_({"addresses": ["fd00::5"], "conditions": {"ready": True}}, address_type="IPv6")
    fqdn = slice_(
        {"addresses": ["engine-0.svc"], "conditions": {"ready": True}}, address_type="FQDN"
    )
    assert ready_urls(v6, 8000) == ["http://[fd00::5]:8000"]
    assert ready_urls(fqdn, 9000) == ["http://engine-0.svc:9000"]
    assert endpoint_url("10.0.0.1", 1) == "http://10.0.0.1:1"


def test_urls_from_many_slices_are_sorted_and_unique() -> None:
    a = slice_({"addresses": ["10.0.0.2"]}, {"addresses": ["10.0.0.1"]})
    b = slice_({"addresses": ["10.0.0.1"]})
    empty = {"addressType": "IPv4", "endpoints": None}
    assert urls_from_slices([a, b, empty], 80) == ["http://10.0.0.1:80", "http://10.0.0.2:80"]


# --- configuration (the command-line contract itself: tandem.contracts.router) -------------

STATIC = ["--model", "m", "--connector", "nixl", "--prefill", "http://p:8000"]
STATIC += ["--decode", "http://d:8000"]
K8S = ["--model", "m", "--connector", "nixl", "--namespace", "ns"]
K8S += ["--prefill-service", "p", "--decode-service", "d"]
LMCACHE = ["--connector", "lmcache", "--decoder-init-ports", "7300,7301"]
LMCACHE += ["--decoder-alloc-ports", "7400,7401"]


def test_static_config() -> None:
    cfg = RouterConfig.from_args(STATIC)
    assert cfg.prefill_urls == ("http://p:8000",) and cfg.kubernetes is None
    assert cfg.effective_prefill_timeout == 300.0


def test_kubernetes_config() -> None:
    cfg = RouterConfig.from_args([*K8S, "--engine-port=9000"])
    assert cfg.kubernetes == KubernetesSource("ns", "p", "d", 9000)
    assert RouterConfig.from_args(K8S).kubernetes == KubernetesSource("ns", "p", "d")


@pytest.mark.parametrize(
    "bad",
    [
        ["--model", "m", "--connector", "nixl"],
        ["--model", "m", "--connector", "nixl", "--prefill", "http://p"],
        [*STATIC, "--namespace", "ns"],
        [*STATIC, "--namespace", "ns", "--prefill-service", "p", "--decode-service", "d"],
        ["--model", "m", "--connector", "nixl", "--prefill", "p:8000", "--decode", "http://d"],
        [*K8S[:-2], "--engine-port", "8000"],
        [*STATIC, "--connector", "lmcache"],
        [*STATIC, *LMCACHE[:-1], "7400"],
        [*STATIC, "--request-timeout", "0"],
        [*STATIC, "--request-timeout", "nan"],
        [*STATIC, "--health-interval", "inf"],
        [*STATIC, "--decoder-init-ports", "73x"],
        [*STATIC, "--port", "80.5"],
        [*STATIC, "--policy", "random"],
        [*STATIC, "--min-prompt-tokens", "-1"],
        [*STATIC, "--max-inflight-per-engine", "0"],
        [*STATIC, "--model", ""],
        [*STATIC, "--unknown", "1"],
        [*STATIC, "--canary", "maybe"],
        [*STATIC, "--require-verified-pairs", ""],
        [*STATIC, "--kv-ready-notifications", "0"],
        [*STATIC, "--pair-retry-seconds", "0"],
        [*STATIC, "--host"],
        STATIC[2:],
    ],
)
def test_inconsistent_flags_are_rejected(bad: list[str]) -> None:
    with pytest.raises(ConfigError):
        RouterConfig.from_args(bad)


def test_lmcache_config_parses_port_lists() -> None:
    cfg = RouterConfig.from_args([*STATIC, *LMCACHE])
    assert cfg.connector is Connector.LMCACHE
    assert cfg.decoder_init_ports == (7300, 7301) and cfg.decoder_alloc_ports == (7400, 7401)
    assert parse_ports("") == ()
    with pytest.raises(ConfigError):
        parse_ports("70000")


def test_connector_defaults_to_lmcache_as_in_the_api() -> None:
    with pytest.raises(ConfigError, match="--connector lmcache needs"):
        RouterConfig.from_args(STATIC[:2] + STATIC[4:])
    cfg = RouterConfig.from_args([*STATIC[:2], *STATIC[4:], *LMCACHE[2:]])
    assert cfg.connector is Connector.LMCACHE


def test_a_config_is_validated_when_built() -> None:
    with pytest.raises(ConfigError):
        RouterConfig(model="m")
    flag_strings: dict[str, Any] = {"connector": "nixl", "policy": "round-robin"}
    cfg = RouterConfig(
        model="m", prefill_urls=("http://p",), decode_urls=("http://d",), **flag_strings
    )
    assert cfg.connector is Connector.NIXL and cfg.policy is RouterPolicy.ROUND_ROBIN


def test_defaults_are_not_rendered_unless_the_operator_always_sets_them() -> None:
    cfg = RouterConfig(
        model="m", connector=Connector.NIXL, kubernetes=KubernetesSource("n", "p", "d")
    )
    assert cfg.to_args() == [
        "--host", "0.0.0.0", "--port", "8000", "--model", "m", "--connector", "nixl",
        "--policy", "least-loaded", "--min-prompt-tokens", "0", "--on-prefill-failure", "fail",
        "--request-timeout", "600", "--max-inflight-per-engine", "256", "--namespace", "n",
        "--prefill-service", "p", "--decode-service", "d", "--engine-port", "8000",
    ]  # fmt: skip


def test_pair_flags_parse_and_default_to_verified_canaries() -> None:
    cfg = RouterConfig.from_args(STATIC)
    assert cfg.canary and cfg.require_verified_pairs and cfg.pair_retry_seconds == 30.0
    assert "--canary" not in cfg.to_args()  # defaults are not rendered
    args = [*STATIC, "--canary", "False", "--require-verified-pairs=no"]
    cfg = RouterConfig.from_args([*args, "--pair-retry-seconds", "2.5"])
    assert (cfg.canary, cfg.require_verified_pairs, cfg.pair_retry_seconds) == (False, False, 2.5)
    assert cfg.to_args()[-6:] == [
        "--canary", "false", "--require-verified-pairs", "false", "--pair-retry-seconds", "2.5",
    ]  # fmt: skip


def test_kv_ready_notifications_default_to_one_per_decoder_rank() -> None:
    cfg = RouterConfig.from_args([*STATIC, *LMCACHE])
    assert cfg.kv_ready_notifications is None and cfg.expected_kv_notifications == 2
    cfg = RouterConfig.from_args([*STATIC, *LMCACHE, "--kv-ready-notifications", "4"])
    assert cfg.expected_kv_notifications == 4


def test_later_flags_win_and_equals_form_parses() -> None:
    cfg = RouterConfig.from_args([*STATIC, "--port=1", "--port", "2", "--health-interval=0.5"])
    assert (cfg.port, cfg.health_interval) == (2, 0.5)


# --- the round trip, and click parsing exactly what from_args parses ------------------------

#: Any printable text, "--x" and "a=b" included.
words = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12)
seconds = st.floats(min_value=1e-3, max_value=1e7, allow_nan=False, allow_infinity=False)
urls = st.lists(words.map(lambda w: "http://" + w), min_size=1, max_size=3).map(tuple)
port = st.integers(0, 65535)


@st.composite
def configs(draw: st.DrawFn) -> RouterConfig:
    connector = draw(st.sampled_from(Connector))
    ranks = draw(st.integers(1, 4))
    ports = st.lists(st.integers(1, 65535), min_size=ranks, max_size=ranks).map(tuple)
    fields: dict[str, Any] = {"model": draw(words), "connector": connector}
    if connector is Connector.LMCACHE or draw(st.booleans()):
        fields |= {"decoder_init_ports": draw(ports), "decoder_alloc_ports": draw(ports)}
    if draw(st.booleans()):
        kube = st.builds(KubernetesSource, words, words, words, port)
        fields["kubernetes"] = draw(kube)
    else:
        fields |= {"prefill_urls": draw(urls), "decode_urls": draw(urls)}
    optional = {
        "host": words,
        "port": port,
        "policy": st.sampled_from(RouterPolicy),
        "min_prompt_tokens": st.integers(0, 10**7),
        "on_prefill_failure": st.sampled_from(PrefillFailurePolicy),
        "request_timeout": seconds | st.integers(1, 86_400),
        "prefill_timeout": seconds,
        "max_inflight_per_engine": st.integers(1, 10**5),
        "metrics_refresh_seconds": st.just(0.0) | seconds,
        "health_interval": seconds,
        "kv_ready_port": port,
        "advertise_host": words,
        "kv_ready_timeout": seconds,
        "kv_ready_notifications": st.integers(1, 64),
        "canary": st.booleans(),
        "require_verified_pairs": st.booleans(),
        "pair_retry_seconds": seconds,
    }
    fields |= draw(st.fixed_dictionaries({}, optional=optional))
    return RouterConfig(**fields)


@settings(max_examples=200, deadline=None)
@given(configs())
def test_every_config_round_trips_through_its_command_line(cfg: RouterConfig) -> None:
    args = cfg.to_args()
    assert RouterConfig.from_args(args) == cfg
    ctx = router_command.make_context("router", list(args))
    assert main._config(ctx.params) == cfg


def test_help_lists_every_flag_with_its_help_and_default() -> None:
    out = CliRunner().invoke(router_command, ["--help"], terminal_width=200).output
    for flag in FLAGS:
        assert flag.name in out and flag.help.split(":")[0] in out
    assert "[default: lmcache]" in out and "[default: 600]" in out
    assert "--log-level" in out


def test_click_reports_contract_errors_as_usage_errors() -> None:
    result = CliRunner().invoke(router_command, STATIC[2:])
    assert result.exit_code == 2 and "--model" in result.output
    result = CliRunner().invoke(router_command, [*STATIC, "--request-timeout", "-1"])
    assert result.exit_code == 2 and "--request-timeout must be positive" in result.output


def test_values_that_look_like_flags_round_trip() -> None:
    cfg = RouterConfig(
        model="--port",
        host="--x=y",
        connector=Connector.NIXL,
        prefill_urls=("http://--decode",),
        decode_urls=("http://d",),
    )
    args = cfg.to_args()
    assert RouterConfig.from_args(args) == cfg
    assert main._config(router_command.make_context("router", list(args)).params) == cfg


def test_the_router_imports_no_operator_layer() -> None:
    code = (
        "import sys, tandem.router.main, tandem.router.app; "
        "bad = [m for m in sys.modules if m.split('.')[:2] in "
        "(['tandem', 'plan'], ['tandem', 'render'], ['tandem', 'reconcile'], "
        "['tandem', 'autoscale'])] + [m for m in ('pydantic', 'kopf') if m in sys.modules]; "
        "assert not bad, bad"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "operator")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
