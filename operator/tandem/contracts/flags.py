"""A typed command line: dataclass fields that carry their own flag, help, wire form and bounds.

A contract dataclass declares each field with ``field(default=..., metadata=flag(...))``; this
module turns such a class into a flag table (:func:`table`) and provides the three generic
steps built on it: argv → texts per flag (:func:`tokenize`), texts → constructor arguments
(:func:`arguments`), and value → argv (:meth:`Flag.render`). A field whose metadata is
:func:`group` holds a nested dataclass whose own fields are flags (Kubernetes discovery's four).

Only the standard library and :mod:`tandem.api.vocabulary`, so the operator and the router can
both import it; click options are generated from the table in the router.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, fields
from enum import Enum, StrEnum
from typing import Any, Final

from tandem.api.vocabulary import Connector

__all__ = [
    "BOOL",
    "INT",
    "PORTS",
    "SECONDS",
    "TEXT",
    "URLS",
    "Bound",
    "Codec",
    "ConfigError",
    "Emit",
    "Flag",
    "arguments",
    "by_connector",
    "check_bounds",
    "choice",
    "flag",
    "group",
    "parse_ports",
    "render_number",
    "table",
    "tokenize",
]


class ConfigError(ValueError):
    """The flags do not parse, or contradict each other."""


# ------------------------------------------------------------------------------ wire forms


def render_number(value: float) -> str:
    """Seconds as text: whole numbers without ``.0`` (``600``), others as Python writes them."""
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def parse_ports(csv: str | None) -> tuple[int, ...]:
    """`7300,7301` → (7300, 7301); empty or None → ()."""
    if not csv:
        return ()
    try:
        ports = tuple(int(p) for p in csv.split(",") if p.strip())
    except ValueError as exc:
        raise ConfigError(f"not a comma-separated list of ports: {csv!r}") from exc
    if any(not 0 < p < 65536 for p in ports):
        raise ConfigError(f"port out of range in {csv!r}")
    return ports


def _render_ports(ports: Sequence[int]) -> str:
    return ",".join(map(str, ports))


_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})


def parse_bool(text: str) -> bool:
    """``true``/``false`` (also 1/0, yes/no, on/off, any case) → bool; ValueError otherwise."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"expected true or false, not {text!r}")


def _render_bool(value: bool) -> str:
    return "true" if value else "false"


@dataclass(frozen=True, slots=True)
class Codec:
    """How one flag's value travels as text."""

    metavar: str
    parse: Callable[[str], Any]
    render: Callable[[Any], str] = str
    #: A tuple travels as one ``--flag item`` per element (``--prefill URL --prefill URL``).
    repeated: bool = False
    #: The accepted values, for enums.
    choices: tuple[str, ...] = ()


def choice(enum: type[StrEnum]) -> Codec:
    """An enum travels as its value (``--connector lmcache``)."""
    return Codec(metavar="", parse=enum, choices=tuple(e.value for e in enum))


TEXT: Final = Codec("TEXT", str)
INT: Final = Codec("INTEGER", int)
SECONDS: Final = Codec("SECONDS", float, render_number)
PORTS: Final = Codec("PORT,...", parse_ports, _render_ports)
URLS: Final = Codec("URL", str, repeated=True)
#: A switch travels as ``--flag true`` / ``--flag false`` (one value, like every other flag).
BOOL: Final = Codec("BOOLEAN", parse_bool, _render_bool)


class Emit(Enum):
    """When a flag is written to the command line."""

    #: Always: the operator sets it on every router it renders.
    ALWAYS = "always"
    #: When it differs from its default, and always with the connector that owns it.
    CHANGED = "changed"


class Bound(Enum):
    """What a number must be, besides finite."""

    ANY = "any"
    POSITIVE = "positive"
    NON_NEGATIVE = "non-negative"


@dataclass(frozen=True, slots=True)
class _Meta:
    name: str
    help: str
    codec: Codec
    emit: Emit
    bound: Bound
    connector: Connector | None


_FLAG: Final = "tandem.flag"
_GROUP: Final = "tandem.group"


def flag(
    name: str,
    help: str,
    codec: Codec,
    emit: Emit = Emit.CHANGED,
    *,
    bound: Bound = Bound.ANY,
    connector: Connector | None = None,
) -> dict[str, _Meta]:
    """Field metadata: the flag that carries this field.

    ``connector``: the hand-off protocol the flag configures; it is written whenever that
    connector is chosen, and, when its default is empty, must then be given.
    """
    return {_FLAG: _Meta(name, help, codec, emit, bound, connector)}


def group(cls: type, label: str) -> dict[str, tuple[type, str]]:
    """Field metadata: the field holds a ``cls`` (or None) whose fields are flags.

    The group's flags are written, and its fields without default required, whenever it is set;
    ``label`` names it in errors ("Kubernetes mode needs ...").
    """
    return {_GROUP: (cls, label)}


# --------------------------------------------------------------------------- the flag table


@dataclass(frozen=True, slots=True)
class Flag:
    """One row of the flag table: a flag and the field it carries."""

    name: str
    #: The field's name, on the contract or on the group's class.
    attr: str
    #: The contract's field holding the group, or None.
    group: str | None
    help: str
    codec: Codec
    emit: Emit
    bound: Bound
    connector: Connector | None
    #: The field's default; ``dataclasses.MISSING`` when it has none.
    default: Any

    @property
    def param(self) -> str:
        """Click's name for the option: ``--min-prompt-tokens`` → ``min_prompt_tokens``."""
        return self.name.removeprefix("--").replace("-", "_")

    @property
    def required(self) -> bool:
        """Whether every command line carries it (group flags: only when the group is used)."""
        return self.default is MISSING and self.group is None

    @property
    def default_text(self) -> str | None:
        """The default as the flag would carry it, or None when there is nothing to show."""
        if self.default is MISSING or self.default is None or self.default == ():
            return None
        return str(self.codec.render(self.default))

    def value(self, obj: object) -> Any:
        """This flag's value in a contract object (MISSING when its group is unset)."""
        holder = obj if self.group is None else getattr(obj, self.group)
        return MISSING if holder is None else getattr(holder, self.attr)

    def parse(self, texts: Sequence[str]) -> Any:
        if self.codec.repeated:
            return tuple(self.codec.parse(text) for text in texts)
        return self.codec.parse(texts[-1])

    def render(self, value: Any) -> list[str]:
        items = value if self.codec.repeated else (value,)
        return [token for item in items for token in (self.name, self.codec.render(item))]


def _row(f: Field[Any], group: str | None) -> Flag:
    m: _Meta = f.metadata[_FLAG]
    emit = Emit.ALWAYS if group is not None else m.emit
    return Flag(m.name, f.name, group, m.help, m.codec, emit, m.bound, m.connector, f.default)


def table(cls: type) -> tuple[Flag, ...]:
    """The flags of a contract dataclass, in field order (group fields in place)."""
    rows: list[Flag] = []
    for f in fields(cls):
        if _GROUP in f.metadata:
            group_cls, _label = f.metadata[_GROUP]
            rows += [_row(g, f.name) for g in fields(group_cls)]
        else:
            rows.append(_row(f, None))
    return tuple(rows)


def by_connector(flags: Sequence[Flag]) -> dict[Connector | None, tuple[Flag, ...]]:
    """The flags each connector owns (None: the flags no connector owns)."""
    owned: dict[Connector | None, list[Flag]] = {}
    for row in flags:
        owned.setdefault(row.connector, []).append(row)
    return {connector: tuple(rows) for connector, rows in owned.items()}


# ------------------------------------------------------------------------- argv → arguments


def tokenize(argv: Sequence[str], known: Mapping[str, Flag]) -> dict[str, list[str]]:
    """``--flag value`` / ``--flag=value`` pairs → the texts given per flag name, in order."""
    given: dict[str, list[str]] = {}
    tokens = iter(argv)
    for token in tokens:
        name, eq, inline = token.partition("=")
        if name not in known:
            raise ConfigError(f"no such option: {token}")
        if eq:
            text = inline
        else:
            following = next(tokens, None)
            if following is None:
                raise ConfigError(f"{name} needs a value")
            text = following
        given.setdefault(name, []).append(text)
    return given


def arguments(
    cls: type, flags: Sequence[Flag], given: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """The constructor arguments of ``cls`` for the texts given per flag name.

    Absent flags are left out (the dataclass defaults apply); a single-valued flag given twice
    keeps its last value, as with click.
    """
    unknown = sorted(set(given) - {row.name for row in flags})
    if unknown:
        raise ConfigError(f"no such option: {unknown[0]}")
    values: dict[str | None, dict[str, Any]] = {}
    for row in flags:
        texts = given.get(row.name)
        if texts:
            try:
                values.setdefault(row.group, {})[row.attr] = row.parse(texts)
            except ValueError as exc:
                raise ConfigError(f"{row.name}: {exc}") from exc
    top = values.pop(None, {})
    for f in fields(cls):
        if _GROUP in f.metadata and f.name in values:
            group_cls, label = f.metadata[_GROUP]
            _require(label, [row for row in flags if row.group == f.name], values[f.name])
            top[f.name] = group_cls(**values[f.name])
        elif f.default is MISSING and f.name not in top:
            raise ConfigError(f"missing option {f.metadata[_FLAG].name}")
    return top


def _require(label: str, flags: list[Flag], given: Mapping[str, object]) -> None:
    required = [row for row in flags if row.default is MISSING]
    if any(row.attr not in given for row in required):
        *rest, last = [row.name for row in required]
        names = f"{', '.join(rest)} and {last}" if rest else last
        raise ConfigError(f"{label} needs {names}")


def check_bounds(obj: object, flags: Sequence[Flag]) -> None:
    """Every number finite and within its flag's bound (raises ConfigError)."""
    for row in flags:
        value = row.value(obj)
        if value is MISSING or value is None or not (row.codec is INT or row.codec is SECONDS):
            continue
        if not math.isfinite(value):
            raise ConfigError(f"{row.name} must be a finite number")
        if row.bound is Bound.POSITIVE and value <= 0:
            raise ConfigError(f"{row.name} must be positive")
        if row.bound is Bound.NON_NEGATIVE and value < 0:
            raise ConfigError(f"{row.name} must be >= 0")
