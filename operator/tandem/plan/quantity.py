"""Kubernetes resource quantities as numbers (LMCache wants plain byte counts)."""

from __future__ import annotations

import re
from decimal import Decimal

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}
_RE = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")


def to_bytes(quantity: str) -> int:
    """``"1Gi"`` → 1073741824; ``"1G"`` → 1000000000; fractions round down."""
    m = _RE.match(quantity.strip())
    if not m:
        raise ValueError(f"not a quantity: {quantity!r}")
    number, suffix = Decimal(m.group(1)), m.group(2) or ""
    if suffix in _BINARY:
        return int(number * _BINARY[suffix])
    if suffix[:1] in ("e", "E"):
        return int(number * Decimal(10) ** int(suffix[1:]))
    return int(number * _DECIMAL[suffix])
