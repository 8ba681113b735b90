"""Per-pool autoscaling from queue metrics.

- :mod:`.config`: plain settings, and ``from_spec()`` from the InferenceService API.
- :mod:`.observation`: what a source saw of a pool (the type sources and policy share).
- :mod:`.parse`, :mod:`.sources`: reading vLLM / router metrics by direct scrape or PromQL.
- :mod:`.rates`, :mod:`.coupling`, :mod:`.policy`: the pure decision (no I/O, no clock).
- :mod:`.drain`: pod-deletion-cost from in-flight requests, so scale-down removes idle engines.
- :mod:`.metrics`, :mod:`.actuator`: the per-InferenceService loop the operator ticks.
"""
