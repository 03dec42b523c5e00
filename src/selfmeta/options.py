"""One declaration per option, checked in one place, for every kind of plug-in.

An option's name, type and default come from the constructor that takes it: the keyword arguments of a
method's, meta-learner's, encoder's, view family's or task constructor's ``__init__``, and the fields of
:class:`~selfmeta.engine.config.TrainConfig`. Its range and help come from an :class:`Option` in the class's
``options`` dict (merged along the class hierarchy, so a subclass declares only what it adds)::

    class SimCLR(Method):
        options = {"temperature": Option(gt=0, help="NT-Xent temperature; 0.1-0.5 is usual")}

        def __init__(self, backbone, views, temperature: float = 0.5): ...

:func:`check_options` turns ``key=value`` text, config files and API arguments alike into checked values:
an unknown name, a value of the wrong type (``lr=fast``, ``batch_size=64.5``, ``encoder=[1]``), a
non-finite number or one out of range is one :class:`SelfmetaError` line that says what the option takes.
``selfmeta list`` prints the same declarations, and a contract test checks that every option a
constructor takes is declared, so the two cannot drift apart.

Supported types: ``int``, ``float``, ``bool``, ``str``, ``tuple[float, float]`` and ``tuple[int, int]``
(pairs), ``tuple[int, ...]`` (lists), ``dict`` (nested option groups), each optionally ``| None``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
import typing
from dataclasses import dataclass
from typing import Any, Sequence

from selfmeta.errors import SelfmetaError


@dataclass(frozen=True)
class Option:
    """The range and help of one option (its type and default come from the constructor's signature).

    ``ge``/``gt``/``le``/``lt`` bound numbers (every number of a pair or list); ``choices`` lists the valid
    strings; ``ordered`` asks a pair to be (low, high) with low <= high.
    """

    help: str = ""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] | None = None
    ordered: bool = False

    def bounds(self) -> str:
        parts = []
        if self.gt is not None:
            parts.append(f"> {self.gt:g}")
        if self.ge is not None:
            parts.append(f">= {self.ge:g}")
        if self.lt is not None:
            parts.append(f"< {self.lt:g}")
        if self.le is not None:
            parts.append(f"<= {self.le:g}")
        return " and ".join(parts)

    def in_range(self, x: float) -> bool:
        return ((self.gt is None or x > self.gt) and (self.ge is None or x >= self.ge)
                and (self.lt is None or x < self.lt) and (self.le is None or x <= self.le))


@dataclass(frozen=True)
class Searched:
    """Where ``selfmeta tune`` looks for an option's value: a number in [low, high] (on a log scale with
    ``log``, whole numbers with ``integer``), or one of ``choices``. ``pair_high`` makes the value the low
    end of a pair whose high end is fixed (a crop scale ``(v, 1.0)``)."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] | None = None
    pair_high: float | None = None

    def value(self, drawn: Any) -> Any:
        """The option's value for a drawn number or choice."""
        return (drawn, self.pair_high) if self.pair_high is not None else drawn


@dataclass(frozen=True)
class Declared:
    """An option as a constructor takes it: name, type, default, range and help."""

    name: str
    kind: str             # int | float | bool | str | pair | list | dict
    item: type | None     # the element type of a pair or list (int or float)
    nullable: bool
    default: Any
    spec: Option

    def describe(self) -> str:
        """What the option takes, in words: ``a number > 0``, ``one of: adamw, lars``, ``null or ...``."""
        noun = {int: "integer", float: "number"}
        bounds = self.spec.bounds()
        if self.kind in ("int", "float"):
            text = f"{'an integer' if self.kind == 'int' else 'a number'}" + (f" {bounds}" if bounds else "")
        elif self.kind == "bool":
            text = "true or false"
        elif self.kind == "str":
            text = f"one of: {', '.join(self.spec.choices)}" if self.spec.choices else "text"
        elif self.kind == "pair":
            text = f"a pair of {noun[self.item]}s" + (f" {bounds}" if bounds else "")
            text += ", low <= high" if self.spec.ordered else ""
        elif self.kind == "list":
            text = f"a list of {noun[self.item]}s" + (f" {bounds}" if bounds else "")
        else:
            text = "a table of options"
        return f"null or {text}" if self.nullable else text

    def check(self, value: Any, owner: str) -> Any:
        """The value, converted to the option's type (``64.0`` -> 64, a list -> a tuple), or SelfmetaError."""
        if value is None and self.nullable:
            return None
        out = _convert(self, value)
        if out is _BAD:
            example = f"; e.g. {self.name}={_example(self.default)}" if self.default is not None else ""
            raise SelfmetaError(f"{owner} option {self.name} takes {self.describe()}, got {value!r}{example}")
        return out


_BAD = object()


def _example(default: Any) -> str:
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, tuple):
        return "[" + ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default) + "]"
    if isinstance(default, dict):
        return "{}" if not default else str(default)
    return f"{default:g}" if isinstance(default, float) else str(default)


def _number(value: Any, item: type, spec: Option) -> Any:
    """An int or float within the option's range, or _BAD. Integral floats (64.0) pass as ints."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return _BAD
    if item is int:
        if isinstance(value, numbers.Integral):
            value = int(value)
        elif math.isfinite(value) and float(value).is_integer():
            value = int(value)
        else:
            return _BAD
    else:
        value = float(value)
        if not math.isfinite(value):
            return _BAD
    return value if spec.in_range(value) else _BAD


def _convert(decl: Declared, value: Any) -> Any:
    spec = decl.spec
    if decl.kind == "int":
        return _number(value, int, spec)
    if decl.kind == "float":
        return _number(value, float, spec)
    if decl.kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, numbers.Integral) and value in (0, 1):
            return bool(value)
        return _BAD
    if decl.kind == "str":
        if not isinstance(value, str) or (spec.choices is not None and value not in spec.choices):
            return _BAD
        return value
    if decl.kind in ("pair", "list"):
        if not isinstance(value, (list, tuple)) or (decl.kind == "pair" and len(value) != 2) or len(value) == 0:
            return _BAD
        items = tuple(_number(v, decl.item, spec) for v in value)
        if _BAD in items or (spec.ordered and items[0] > items[1]):
            return _BAD
        return items
    if decl.kind == "dict":
        return dict(value) if isinstance(value, dict) else _BAD
    raise TypeError(f"unsupported option kind {decl.kind!r}")


def _kind(hint: Any) -> tuple[str, type | None, bool]:
    """A type hint -> (kind, element type, nullable)."""
    args = typing.get_args(hint)
    nullable = type(None) in args
    if nullable:
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"unsupported option type {hint!r}")
        hint, args = rest[0], typing.get_args(rest[0])
    origin = typing.get_origin(hint) or hint
    if hint in (int, float, bool, str):
        return hint.__name__, None, nullable
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in (int, float):
        return "list", args[0], nullable
    if origin is tuple and len(args) == 2 and args[0] == args[1] and args[0] in (int, float):
        return "pair", args[0], nullable
    if origin is dict:
        return "dict", None, nullable
    raise TypeError(f"unsupported option type {hint!r}")


def specs(cls: type) -> dict[str, Option]:
    """The ``options`` dicts of ``cls`` and its bases, the subclass's entries winning."""
    out: dict[str, Option] = {}
    for klass in reversed(cls.__mro__):
        declared = vars(klass).get("options")
        if isinstance(declared, dict):
            out.update(declared)
    return out


def declared_options(cls: type, built: Sequence[str] = ()) -> dict[str, Declared]:
    """Every keyword option ``cls`` takes, from its constructor (a dataclass's fields), in order.

    ``built`` names the constructor arguments the engine supplies (backbone, views, data...), which are not
    user options. A constructor argument without an :class:`Option` in ``options`` is a programming error
    (TypeError), caught by the contract tests.
    """
    target = cls if dataclasses.is_dataclass(cls) else cls.__init__
    hints = typing.get_type_hints(target)
    factories = {f.name: f.default_factory for f in dataclasses.fields(cls)
                 if f.default_factory is not dataclasses.MISSING} if dataclasses.is_dataclass(cls) else {}
    found = specs(cls)
    out = {}
    for p in inspect.signature(cls).parameters.values():
        if p.name in built or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if p.name not in found:
            raise TypeError(f"{cls.__name__}: option {p.name!r} has no Option(...) in {cls.__name__}.options")
        default = factories[p.name]() if p.name in factories else p.default
        if default is p.empty:
            raise TypeError(f"{cls.__name__}: option {p.name!r} has no default")
        kind, item, nullable = _kind(hints[p.name])
        out[p.name] = Declared(p.name, kind, item, nullable, default, found[p.name])
    return out


def check_options(owner: str, cls: type, values: dict[str, Any], built: Sequence[str] = ()) -> dict[str, Any]:
    """``values`` checked against what ``cls`` declares: converted values, or one SelfmetaError line.

    ``owner`` names the plug-in in messages: ``method 'simclr'``, ``image views``...
    """
    if not isinstance(values, dict):
        raise SelfmetaError(f"{owner} options must be a table of name = value, got {values!r}")
    declared = declared_options(cls, built)
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise SelfmetaError(f"unknown option {unknown[0]!r} for {owner}; valid: {', '.join(declared) or 'none'}")
    return {name: declared[name].check(value, owner) for name, value in values.items()}


def describe_options(cls: type, built: Sequence[str] = ()) -> list[str]:
    """One line per option for ``selfmeta list``: ``name=default  (what it takes)  help``."""
    lines = []
    for d in declared_options(cls, built).values():
        default = "null" if d.default is None else _example(d.default)
        lines.append(f"{d.name}={default}  ({d.describe()})" + (f"  {d.spec.help}" if d.spec.help else ""))
    return lines
