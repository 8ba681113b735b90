"""Reading vLLM's and the router's Prometheus text exposition into autoscaler numbers. Pure.

Kept apart from the HTTP code so the parsing can be tested on text alone. vLLM 0.32 labels every
engine metric with ``model_name`` and ``engine`` (the data-parallel rank), so a pod running
several engines reports one sample per engine: queue gauges are summed over engines, KV-cache
usage (a 0-1 fraction per engine) is averaged. Names are from vllm/v1/metrics/loggers.py
(see notes/dataplane.md section 5); the removed ``vllm:gpu_cache_usage_perc`` is not read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from prometheus_client.parser import text_string_to_metric_families

WAITING: Final = "vllm:num_requests_waiting"
WAITING_BY_REASON: Final = "vllm:num_requests_waiting_by_reason"
RUNNING: Final = "vllm:num_requests_running"
KV_USAGE: Final = "vllm:kv_cache_usage_perc"
COMPLETED: Final = "vllm:request_success_total"
ROUTER_QUEUE: Final = "tandem_router_queue_depth"


class MetricsFormatError(ValueError):
    """The text is not Prometheus exposition, or lacks the vLLM queue gauges."""


@dataclass(frozen=True)
class EngineGauges:
    waiting: float
    running: float
    kv_usage: float | None
    deferred: float
    completed: float | None


def _samples(text: str, wanted: Iterable[str]) -> dict[str, list[tuple[dict[str, str], float]]]:
    names = set(wanted)
    out: dict[str, list[tuple[dict[str, str], float]]] = {n: [] for n in names}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in names:
                    out[sample.name].append((dict(sample.labels), float(sample.value)))
    except (ValueError, TypeError, IndexError) as exc:
        raise MetricsFormatError(f"unparseable metrics text: {exc}") from exc
    return out


def engine_gauges(text: str) -> EngineGauges:
    """The queue gauges of one vLLM pod's ``/metrics`` text."""
    found = _samples(text, (WAITING, WAITING_BY_REASON, RUNNING, KV_USAGE, COMPLETED))
    if not found[WAITING] or not found[RUNNING]:
        raise MetricsFormatError(f"no {WAITING} / {RUNNING} samples: not a vLLM engine?")
    kv = [v for _, v in found[KV_USAGE]]
    deferred = sum(
        v for labels, v in found[WAITING_BY_REASON] if labels.get("reason") == "deferred"
    )
    return EngineGauges(
        waiting=sum(v for _, v in found[WAITING]),
        running=sum(v for _, v in found[RUNNING]),
        kv_usage=sum(kv) / len(kv) if kv else None,
        deferred=deferred,
        # Summed over finished_reason and engines; absent before a pod's first request.
        completed=sum(v for _, v in found[COMPLETED]) if found[COMPLETED] else None,
    )


def router_pending(text: str, role: str = "prefill") -> float:
    """Requests one router pod holds for ``role`` engines (``tandem_router_queue_depth``)."""
    found = _samples(text, (ROUTER_QUEUE,))
    if not found[ROUTER_QUEUE]:
        raise MetricsFormatError(f"no {ROUTER_QUEUE} samples: not a Tandem router?")
    return sum(v for labels, v in found[ROUTER_QUEUE] if labels.get("role") == role)
