"""vLLM 0.32-format ``/metrics`` text for tests, shaped like a real engine's exposition.

HELP strings, label sets and families follow vllm/v1/metrics/loggers.py as shipped in 0.32
(notes/dataplane.md section 5): every engine metric carries ``model_name`` and ``engine``; a pod
running two data-parallel engines reports each; counters come with ``_created`` samples.
"""

from __future__ import annotations


def engine_text(
    engines: list[tuple[float, float, float]],
    *,
    deferred: float = 0.0,
    completed: tuple[float, float] = (40.0, 2.0),
    model: str = "llama",
) -> str:
    """Exposition for one pod; ``engines`` is [(waiting, running, kv_usage)] per DP rank."""
    lines = [
        "# HELP python_gc_objects_collected_total Objects collected during gc",
        "# TYPE python_gc_objects_collected_total counter",
        'python_gc_objects_collected_total{generation="0"} 14103.0',
        "# HELP process_resident_memory_bytes Resident memory size in bytes.",
        "# TYPE process_resident_memory_bytes gauge",
        "process_resident_memory_bytes 2.1474836e+09",
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        "# TYPE vllm:num_requests_running gauge",
    ]
    for i, (_, running, _) in enumerate(engines):
        lines.append(f'vllm:num_requests_running{{engine="{i}",model_name="{model}"}} {running}')
    lines += [
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
        "# TYPE vllm:num_requests_waiting gauge",
    ]
    for i, (waiting, _, _) in enumerate(engines):
        lines.append(f'vllm:num_requests_waiting{{engine="{i}",model_name="{model}"}} {waiting}')
    lines += [
        "# HELP vllm:num_requests_waiting_by_reason Number of requests waiting, by reason.",
        "# TYPE vllm:num_requests_waiting_by_reason gauge",
    ]
    for i, (waiting, _, _) in enumerate(engines):
        share = deferred / len(engines)
        for reason, value in (("capacity", waiting - share), ("deferred", share)):
            lines.append(
                f'vllm:num_requests_waiting_by_reason{{engine="{i}",model_name="{model}",'
                f'reason="{reason}"}} {value}'
            )
    lines += [
        "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
        "# TYPE vllm:kv_cache_usage_perc gauge",
    ]
    for i, (_, _, kv) in enumerate(engines):
        lines.append(f'vllm:kv_cache_usage_perc{{engine="{i}",model_name="{model}"}} {kv}')
    lines += [
        "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
        "# TYPE vllm:prompt_tokens_total counter",
        f'vllm:prompt_tokens_total{{engine="0",model_name="{model}"}} 123456.0',
        f'vllm:prompt_tokens_created{{engine="0",model_name="{model}"}} 1.7637e+09',
        "# HELP vllm:request_success_total Count of successfully processed requests.",
        "# TYPE vllm:request_success_total counter",
        f'vllm:request_success_total{{engine="0",finished_reason="stop",model_name="{model}"}} '
        f"{completed[0]}",
        f'vllm:request_success_total{{engine="0",finished_reason="length",model_name="{model}"}} '
        f"{completed[1]}",
        f'vllm:request_success_created{{engine="0",finished_reason="stop",model_name="{model}"}} '
        "1.7637e+09",
        "# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.",
        "# TYPE vllm:time_to_first_token_seconds histogram",
        f'vllm:time_to_first_token_seconds_bucket{{engine="0",le="0.1",model_name="{model}"}} 3.0',
        f'vllm:time_to_first_token_seconds_bucket{{engine="0",le="+Inf",model_name="{model}"}} 9.0',
        f'vllm:time_to_first_token_seconds_count{{engine="0",model_name="{model}"}} 9.0',
        f'vllm:time_to_first_token_seconds_sum{{engine="0",model_name="{model}"}} 2.5',
    ]
    return "\n".join(lines) + "\n"


def router_text(prefill: float, decode: float = 0.0) -> str:
    return (
        "# HELP tandem_router_queue_depth Requests waiting in the router for an engine.\n"
        "# TYPE tandem_router_queue_depth gauge\n"
        f'tandem_router_queue_depth{{role="prefill"}} {prefill}\n'
        f'tandem_router_queue_depth{{role="decode"}} {decode}\n'
    )
