"""The spec adapter: wire names and units of the API become the policy's settings."""

from __future__ import annotations

from pathlib import Path

import yaml

from tandem.api.v1alpha1 import InferenceService, InferenceServiceSpec
from tandem.autoscale.config import PrometheusSettings, ScrapeSettings, from_spec

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "llama-autoscaled.yaml"


def test_example_manifest_maps_field_by_field() -> None:
    isvc = InferenceService.model_validate(yaml.safe_load(EXAMPLE.read_text()))
    cfg = from_spec(isvc.spec)
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
    cfg = from_spec(spec)
    p, d = cfg.policy.prefill, cfg.policy.decode
    assert p.gpus_per_replica == 4
    assert (p.scale_up_stabilization_s, p.scale_down_stabilization_s) == (0, 300)
    assert (p.max_scale_up_step, p.max_scale_down_step) == (4, 1)
    assert d.target_kv_cache_usage == 0.8  # decode's default 80 %
    assert (cfg.interval_s, cfg.policy.stale_after_s, cfg.policy.max_gpus) == (60, 90, None)
    assert (cfg.policy.ratio_min, cfg.policy.ratio_max) == (0.25, 4.0)
    assert cfg.router_metrics_port == 9000
    assert cfg.source == PrometheusSettings(
        url="http://prom:9090", query_running='sum(x{pod=~"{pool}"})', timeout_s=5
    )
