"""Kubernetes access for the operator: the only module that imports the Kubernetes client.

It speaks plain JSON over the client's authenticated transport (no generated models: those
reject things the API server accepts, such as integer quantities) and turns ``ApiException``s
into a few domain errors so no HTTP status codes leak into the reconcile logic.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import kubernetes
from kubernetes.client import ApiClient

from tandem.api.v1alpha1 import GROUP, PLURAL, VERSION

Obj = dict[str, Any]

# kind -> (API path prefix, plural, namespaced). Only what the operator manages or reads.
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Service": ("/api/v1", "services", True),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Pod": ("/api/v1", "pods", True),
    "Node": ("/api/v1", "nodes", False),
    "Event": ("/api/v1", "events", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "InferenceService": (f"/apis/{GROUP}/{VERSION}", PLURAL, True),
}

# Kinds the operator creates as children, in the order they are applied.
CHILD_KINDS = ("ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Service", "Deployment")


class ApiError(Exception):
    """The API server refused a request."""

    def __init__(
        self, status: int, reason: str, message: str, fields: tuple[str, ...] = ()
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.fields = fields  # the fields the API server named (details.causes[].field)


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    """Optimistic-concurrency conflict (stale resourceVersion) or an apply conflict."""


class Forbidden(ApiError):
    pass


class Invalid(ApiError):
    """The object was rejected (schema, admission, a patch that cannot be built): retrying the
    same request cannot help, only a change of the object can."""


class Transient(ApiError):
    """Timeouts, throttling, 5xx, connection errors: retry with backoff."""


# 500s that are about the request's content, not the server's health: server-side apply cannot
# merge the object (e.g. two list items with the same key) and would fail the same way again.
_INVALID_CONTENT = ("duplicate entries for key", "failed to create typed patch object")


def _fields(data: dict[str, Any]) -> tuple[str, ...]:
    causes = (data.get("details") or {}).get("causes") or []
    return tuple(dict.fromkeys(str(c["field"]) for c in causes if c.get("field")))


def _error(status: int, body: bytes | str | None) -> ApiError:
    """Classify a refusal: NotFound, Conflict, Forbidden, Invalid (permanent) or Transient."""
    reason, message = "", ""
    fields: tuple[str, ...] = ()
    try:
        data = json.loads(body or b"{}")
        reason, message, fields = data.get("reason", ""), data.get("message", ""), _fields(data)
    except (ValueError, TypeError, AttributeError):
        message = str(body)[:500]
    kinds: dict[int, type[ApiError]] = {
        404: NotFound,
        409: Conflict,
        401: Forbidden,
        403: Forbidden,
        400: Invalid,
        422: Invalid,
    }
    kind = kinds.get(status, Transient)
    if status == 500 and any(marker in message for marker in _INVALID_CONTENT):
        kind = Invalid
    return kind(status, reason, message, fields)


def load_api_client() -> ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig."""
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    return ApiClient()


def path(kind: str, namespace: str | None = None, name: str | None = None, sub: str = "") -> str:
    prefix, plural, namespaced = RESOURCES[kind]
    p = prefix
    if namespaced and namespace:
        p += f"/namespaces/{quote(namespace)}"
    p += f"/{plural}"
    if name:
        p += f"/{quote(name)}"
    if sub:
        p += f"/{sub}"
    return p


@dataclass
class Kube:
    """Thin JSON client. ``field_manager`` names every server-side apply it sends."""

    api: ApiClient
    field_manager: str = "tandem"
    timeout: float = 30.0
    _nodes_cache: tuple[float, list[Obj]] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    on_request: Callable[[str, str], None] | None = None

    def request(
        self,
        method: str,
        url_path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Obj:
        if query:
            url_path = f"{url_path}?{urlencode(query)}"
        headers = {"Accept": "application/json", "Content-Type": content_type}
        if self.on_request is not None:
            self.on_request(method, url_path)
        try:
            ser = self.api.param_serialize(
                method=method,
                resource_path=url_path,
                header_params=headers,
                body=None,
                auth_settings=["BearerToken"],
            )
            _method, url, hdrs, _body, _post = ser
            resp = self.api.call_api(
                method, url, header_params=hdrs, body=body, _request_timeout=self.timeout
            )
            data = resp.read()  # type: ignore[no-untyped-call]
        except kubernetes.client.ApiException as e:
            raise _error(e.status or 0, e.body) from e
        except (OSError, TimeoutError) as e:
            raise Transient(0, "ConnectionError", str(e)) from e
        except Exception as e:  # urllib3 errors are not all OSErrors
            if type(e).__module__.startswith("urllib3"):
                raise Transient(0, "ConnectionError", str(e)) from e
            raise
        if not 200 <= resp.status < 300:
            raise _error(resp.status, data)
        return json.loads(data) if data else {}

    # ------------------------------------------------------------------ objects

    def get(self, kind: str, namespace: str | None, name: str) -> Obj:
        return self.request("GET", path(kind, namespace, name))

    def list_kind(self, kind: str, namespace: str | None, selector: str | None = None) -> list[Obj]:
        query = {"labelSelector": selector} if selector else None
        items: list[Obj] = self.request("GET", path(kind, namespace), query=query).get("items", [])
        api_version = "v1" if RESOURCES[kind][0] == "/api/v1" else RESOURCES[kind][0][6:]
        for item in items:  # list items come without apiVersion/kind
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", api_version)
        return items

    def apply(
        self,
        manifest: Obj,
        field_manager: str | None = None,
        force: bool = True,
        dry_run: bool = False,
    ) -> Obj:
        """Server-side apply of the full intent under one field manager.

        ``dry_run``: the API server validates, defaults and admits the object and answers what
        it would store, but stores nothing (``dryRun=All``).
        """
        meta = manifest["metadata"]
        query = {"fieldManager": field_manager or self.field_manager, "fieldValidation": "Strict"}
        if force:
            query["force"] = "true"
        if dry_run:
            query["dryRun"] = "All"
        return self.request(
            "PATCH",
            path(manifest["kind"], meta.get("namespace"), meta["name"]),
            query=query,
            body=manifest,
            content_type="application/apply-patch+yaml",
        )

    def delete(self, kind: str, namespace: str | None, name: str, uid: str | None = None) -> None:
        body: Obj = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        with contextlib.suppress(NotFound):
            self.request("DELETE", path(kind, namespace, name), body=body)

    def patch(self, kind: str, namespace: str | None, name: str, body: Obj) -> Obj:
        """JSON merge patch (used for annotations such as pod-deletion-cost)."""
        return self.request(
            "PATCH",
            path(kind, namespace, name),
            body=body,
            content_type="application/merge-patch+json",
        )

    def patch_status(self, namespace: str, name: str, status: Obj, resource_version: str) -> Obj:
        """Merge-patch the status subresource; 409 if someone wrote in between."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        return self.request(
            "PATCH",
            path("InferenceService", namespace, name, "status"),
            body=body,
            content_type="application/merge-patch+json",
        )

    def nodes(self, max_age: float = 60.0) -> list[Obj]:
        """Nodes, cached briefly: node capacity changes rarely and clusters can be large."""
        with self._lock:
            now = time.monotonic()
            if self._nodes_cache and now - self._nodes_cache[0] < max_age:
                return self._nodes_cache[1]
        items = self.list_kind("Node", None)
        with self._lock:
            self._nodes_cache = (time.monotonic(), items)
        return items
