"""The newest KV-transfer verdict of each InferenceService, shared in one operator process.

The KV monitor daemons record; the reconciles read it into status (the one status writer). A
verdict whose status and reason equal the stored one changes nothing worth a status write: the
figures in its message are those of the window in which the condition last changed.
"""

from __future__ import annotations

from tandem.kvtruth.verdict import KvVerdict


class KvVerdicts:
    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], KvVerdict] = {}

    def get(self, namespace: str, name: str) -> KvVerdict | None:
        return self._by_key.get((namespace, name))

    def record(self, namespace: str, name: str, verdict: KvVerdict) -> bool:
        """Store ``verdict`` if the condition it shows changed; True when it did."""
        key = (namespace, name)
        before = self._by_key.get(key)
        if before is not None and (before.status, before.reason) == (
            verdict.status,
            verdict.reason,
        ):
            return False
        self._by_key[key] = verdict
        return True

    def forget(self, namespace: str, name: str) -> None:
        self._by_key.pop((namespace, name), None)
