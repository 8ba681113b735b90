"""The spec adapter: wire names and units of the API become the policy's settings."""

from __future__ import annotations

from pathlib import Path

import yaml

from tandem.api.v1alpha1 import InferenceService, InferenceServiceSpec
from tandem.autoscale.config import AutoscalerConfig, PrometheusSettings, ScrapeSettings, from_spec
from tandem.plan import Owner, plan_service

OWNER = Owner(name="svc", namespace="ml", uid="uid-1")


def config_of(spec: InferenceServiceSpec) -> AutoscalerConfig:
    return from_spec(spec, plan_service(spec, OWNER))


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "llama-autoscaled.yaml"


def test_example_manifest_maps_field_by_field() -> None:
    isvc = InferenceService.model_validate(yaml.safe_load(EXAMPLE.read_text()))
    cfg = config_of(isvc.spec)
    p, d = cfg.policy.prefill, cfg.policy.decode
    assert (p.min_replicas, p.max_replicas, p.target_waiting_per_replica) == (1, 6, 4)
    assert (d.target_waiting_per_replica, d.target_kv_cache_usage) == (8, 0.8)
    assert p.target_kv_cache_usage is None  # prefill has no KV target by default
    assert (p.gpus_per_replica, d.gpus_per_replica) == (2, 2)  # tensor 2 x pipeline 1
    assert (cfg.policy.ratio_min, cfg.policy.ratio_max, cfg.policy.max_gpus) == (0.5, 3, 24)
    assert cfg.interval_s == 10 and cfg.policy.stale_after_s == 30
    assert cfg.source == ScrapeSettings(port=8000, path="/metrics", timeout_s=2)


def test_defaults_and_prometheus_source() -> None:
    spec = InferenceServiceSpec.model_validate(
        {
            "model": {"uri": "hf://org/model"},
            "prefill": {"parallelism": {"tensor": 2, "pipeline": 2}},
            "decode": {"parallelism": {"tensor": 2, "pipeline": 2}},
            "router": {"port": 9000},
            "autoscaling": {
                "enabled": True,
                "interval": "1m",
                "staleAfterSeconds": 90,
                "source": {
                    "type": "prometheus",
                    "prometheus": {
                        "url": "http://prom:9090",
                        "queryRunning": 'sum(x{pod=~"{pool}"})',
                    },
                },
            },
        }
    )
    cfg = config_of(spec)
    p, d = cfg.policy.prefill, cfg.policy.decode
    assert p.gpus_per_replica == 4
    assert (p.scale_up_stabilization_s, p.scale_down_stabilization_s) == (0, 300)
    assert (p.max_scale_up_step, p.max_scale_down_step) == (4, 1)
    assert d.target_kv_cache_usage == 0.8  # decode's default 80 %
    assert (cfg.interval_s, cfg.policy.stale_after_s, cfg.policy.max_gpus) == (60, 90, None)
    assert (cfg.policy.ratio_min, cfg.policy.ratio_max) == (0.25, 4.0)
    assert cfg.source == PrometheusSettings(
        url="http://prom:9090", query_running='sum(x{pod=~"{pool}"})', timeout_s=5
    )


def test_from_spec_of_default_spec_equals_dataclass_defaults() -> None:
    """The dataclass defaults restate the API's: they must not drift apart."""
    spec = InferenceServiceSpec.model_validate(
        {"model": {"uri": "hf://org/model"}, "autoscaling": {"enabled": True}}
    )
    assert config_of(spec) == AutoscalerConfig()


def test_the_scrape_port_follows_the_engine_port() -> None:
    spec = InferenceServiceSpec.model_validate(
        {"model": {"uri": "hf://org/model"}, "engine": {"port": 9000}}
    )
    source = config_of(spec).source
    assert isinstance(source, ScrapeSettings) and source.port == 9000


def test_an_explicit_scrape_port_wins() -> None:
    spec = InferenceServiceSpec.model_validate(
        {
            "model": {"uri": "hf://org/model"},
            "engine": {"port": 9000},
            "autoscaling": {"source": {"scrape": {"port": 9100}}},
        }
    )
    source = config_of(spec).source
    assert isinstance(source, ScrapeSettings) and source.port == 9100
