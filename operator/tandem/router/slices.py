"""EndpointSlice → engine URLs, as pure functions over the API's JSON (camelCase) form.

Rules (discovery.k8s.io/v1 API reference):
- an endpoint is used only when `conditions.ready` is not false; a missing `ready` means
  "unknown" and the API docs tell consumers to treat it as ready. Terminating pods report
  `ready: false`, so they stop taking new requests as soon as their slice is updated;
- the addresses of one endpoint are fungible and consumers may use the first one only;
- `addressType` IPv6 needs brackets in a URL; FQDN is used as it is.
The port is the engine port from the router's flags (the Service may expose several ports).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def endpoint_url(address: str, port: int, address_type: str = "IPv4") -> str:
    """`http://host:port` for one endpoint address."""
    host = f"[{address}]" if address_type == "IPv6" or ":" in address else address
    return f"http://{host}:{port}"


def ready_urls(endpoint_slice: Mapping[str, Any], port: int) -> list[str]:
    """URLs of the ready endpoints in one EndpointSlice."""
    address_type = str(endpoint_slice.get("addressType") or "IPv4")
    urls: list[str] = []
    for endpoint in endpoint_slice.get("endpoints") or []:
        conditions = endpoint.get("conditions") or {}
        if conditions.get("ready") is False:
            continue
        addresses = endpoint.get("addresses") or []
        if addresses:
            urls.append(endpoint_url(str(addresses[0]), port, address_type))
    return urls


def urls_from_slices(slices: Iterable[Mapping[str, Any]], port: int) -> list[str]:
    """Sorted, de-duplicated ready URLs over all slices of a Service."""
    return sorted({url for s in slices for url in ready_urls(s, port)})
