"""What a cross-field rule is, and how its Python side is run.

A :class:`Rule` says where it attaches (``scopes``: wire paths from the object's root, ``[]``
meaning every item of a list, ``""`` the object itself), the CEL the API server runs there
(``self`` is the object at the scope), ONE message, the field it is about (its CEL
``fieldPath``) and the same test in Python (``check``, given the model at the scope).
:func:`broken` runs a table's checks over a validated model and reports each failure as
``<scope path><field>: <message>``, the path the API server prints for the same rule's CEL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


@dataclass(frozen=True)
class Rule(Generic[T]):
    """One cross-field rule; ``T`` is the model at its scopes (``Rule[Ratio](...)``)."""

    name: str
    scopes: tuple[str, ...]
    field: str
    cel: str
    message: str
    check: Callable[[T], bool]


class Named(Protocol):
    """The object at the root scope as its rules see it: its name (an InferenceService)."""

    @property
    def name(self) -> str: ...


def _attr(model: BaseModel, wire: str) -> str:
    for name, info in type(model).model_fields.items():
        if (info.alias or name) == wire:
            return name
    raise KeyError(f"{type(model).__name__} has no field {wire!r}")


def _objects(node: Any, path: str, segments: list[str]) -> Iterator[tuple[str, Any]]:
    """The objects at ``segments`` below ``node`` (which sits at ``path``), with their paths."""
    if not segments:
        yield path, node
        return
    seg, rest = segments[0], segments[1:]
    wire, each = seg.removesuffix("[]"), seg.endswith("[]")
    value = getattr(node, _attr(node, wire))
    if value is None:
        return
    here = f"{path}.{wire}" if path else wire
    if each:
        for i, item in enumerate(value):
            yield from _objects(item, f"{here}[{i}]", rest)
    else:
        yield from _objects(value, here, rest)


def broken(rules: Iterable[Rule[Any]], model: object, at: str) -> list[str]:
    """``<path><field>: <message>`` for every rule ``model`` breaks, ``model`` being the object
    at wire path ``at``: ``"spec"`` for the spec (its rules and those of everything in it), ``""``
    for the whole object (the rules on the object itself; the spec checks its own)."""
    found = []
    for rule in rules:
        for scope in rule.scopes:
            if not (scope == at or (at and scope.startswith(f"{at}."))):
                continue
            segments = [s for s in scope[len(at) :].split(".") if s]
            for path, obj in _objects(model, at, segments):
                if not rule.check(obj):
                    found.append(f"{(path + rule.field).lstrip('.')}: {rule.message}")
    return found
