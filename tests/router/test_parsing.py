"""Unit tests of the small parsers: SSE, engine metrics, KV-ready ids, EndpointSlices, config."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.router import kvready
from tandem.router.config import ConfigError, Connector, RouterConfig, parse_ports
from tandem.router.enginemetrics import parse_engine_load
from tandem.router.main import build_config
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


# --- configuration ------------------------------------------------------------------------


def flags(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "model": "m",
        "connector": "nixl",
        "host": "0.0.0.0",
        "port": 8000,
        "policy": "least-loaded",
        "min_prompt_tokens": 0,
        "on_prefill_failure": "fail",
        "request_timeout": 600.0,
        "prefill_timeout": None,
        "max_inflight_per_engine": 256,
        "metrics_refresh_seconds": 0.0,
        "health_interval": 5.0,
        "namespace": None,
        "prefill_service": None,
        "decode_service": None,
        "engine_port": 8000,
        "prefill": ("http://p:8000",),
        "decode": ("http://d:8000",),
        "kv_ready_port": 7500,
        "advertise_host": "127.0.0.1",
        "decoder_init_ports": None,
        "decoder_alloc_ports": None,
        "kv_ready_timeout": 10.0,
    }
    base.update(kw)
    return base


def test_static_config() -> None:
    cfg = build_config(**flags())
    assert cfg.prefill_urls == ("http://p:8000",) and cfg.kubernetes is None
    assert cfg.effective_prefill_timeout == 300.0


def test_kubernetes_config() -> None:
    cfg = build_config(
        **flags(prefill=(), decode=(), namespace="ns", prefill_service="p", decode_service="d")
    )
    assert cfg.kubernetes is not None and cfg.kubernetes.decode_service == "d"


@pytest.mark.parametrize(
    "bad",
    [
        {"prefill": (), "decode": ()},
        {"decode": ()},
        {"namespace": "ns"},
        {"namespace": "ns", "prefill_service": "p", "decode_service": "d"},
        {"prefill": ("p:8000",)},
        {"connector": "lmcache"},
        {"connector": "lmcache", "decoder_init_ports": "7300,7301", "decoder_alloc_ports": "7400"},
        {"request_timeout": 0.0},
        {"decoder_init_ports": "73x"},
    ],
)
def test_inconsistent_flags_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        build_config(**flags(**bad))


def test_lmcache_config_parses_port_lists() -> None:
    cfg = build_config(
        **flags(
            connector="lmcache", decoder_init_ports="7300,7301", decoder_alloc_ports="7400,7401"
        )
    )
    assert cfg.connector is Connector.LMCACHE
    assert cfg.decoder_init_ports == (7300, 7301) and cfg.decoder_alloc_ports == (7400, 7401)
    assert parse_ports("") == ()
    with pytest.raises(ConfigError):
        parse_ports("70000")


def test_router_config_defaults_match_the_cli_contract() -> None:
    cfg = RouterConfig(model="m", prefill_urls=("http://p",), decode_urls=("http://d",))
    assert (cfg.host, cfg.port, cfg.policy.value, cfg.min_prompt_tokens) == (
        "0.0.0.0",
        8000,
        "least-loaded",
        0,
    )
    assert (cfg.request_timeout, cfg.max_inflight_per_engine, cfg.health_interval) == (
        600.0,
        256,
        5.0,
    )
    assert (cfg.kv_ready_port, cfg.advertise_host, cfg.on_prefill_failure.value) == (
        7500,
        "127.0.0.1",
        "fail",
    )
