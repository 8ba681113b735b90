"""Read an engine's load from vLLM's Prometheus text (`/metrics`), without a full parser.

Only two gauges matter to the picker: `vllm:num_requests_waiting` and
`vllm:num_requests_running` (dataplane.md §5). A data-parallel engine reports one series per
`engine` label, so series are summed. Names are matched exactly, so
`vllm:num_requests_waiting_by_reason` is not mistaken for the total.

The canary (`canary.py`) reads one counter: the prompt tokens a decoder took from a KV transfer,
`vllm:prompt_tokens_by_source_total{source="external_kv_transfer"}` (vLLM 0.32
`v1/metrics/loggers.py`; both NIXL and LMCache report loaded tokens through it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

WAITING: Final = "vllm:num_requests_waiting"
RUNNING: Final = "vllm:num_requests_running"
PROMPT_TOKENS_BY_SOURCE: Final = "vllm:prompt_tokens_by_source_total"
EXTERNAL_KV_LABEL: Final = 'source="external_kv_transfer"'


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """Summed waiting and running requests; None when the metric was absent."""

    waiting: float | None
    running: float | None


def _series_name(line: str) -> str:
    for i, ch in enumerate(line):
        if ch in "{ \t":
            return line[:i]
    return line


def _sample_value(line: str) -> float | None:
    # `name{labels} value [timestamp]`: the value follows the label set (labels may hold spaces).
    rest = line[line.rfind("}") + 1 :] if "}" in line else line[len(_series_name(line)) :]
    fields = rest.split()
    if not fields:
        return None
    try:
        value = float(fields[0])
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_engine_load(text: str) -> EngineLoad:
    """Sum the waiting and running gauges over all series in `text`."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#" or not line.startswith("vllm:num_requests_"):
            continue
        name = _series_name(line)
        if name not in (WAITING, RUNNING):
            continue
        value = _sample_value(line)
        if value is not None:
            totals[name] = totals.get(name, 0.0) + value
    return EngineLoad(waiting=totals.get(WAITING), running=totals.get(RUNNING))


def parse_external_kv_tokens(text: str) -> float | None:
    """Prompt tokens loaded from a KV transfer, summed over engines; None when not exported."""
    total: float | None = None
    for line in text.splitlines():
        if not line.startswith(PROMPT_TOKENS_BY_SOURCE) or EXTERNAL_KV_LABEL not in line:
            continue
        if _series_name(line) != PROMPT_TOKENS_BY_SOURCE:
            continue
        value = _sample_value(line)
        if value is not None:
            total = (total or 0.0) + value
    return total
