"""Contracts between processes: typed values that both sides of a boundary share.

A contract is a frozen dataclass with its defaults written once, a renderer to the wire form
and a parser back from it, so the two sides cannot drift apart. Modules here import only the
standard library and :mod:`tandem.api.vocabulary` (no pydantic, click, aiohttp or Kubernetes),
so both the operator and the router can depend on them.
"""
