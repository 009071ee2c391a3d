"""Strictness helpers shared by configs and weight loading: unknown names, badly typed config
fields and key mismatches are errors that name what was wrong, never silently ignored.

Config dataclasses declare what each field accepts with their type hints, once; bounds are attached
with ``typing.Annotated`` (``ch: Annotated[int, Range(min=32)]``, or the aliases :data:`PositiveInt`,
:data:`PositiveFloat`, :data:`NonNegativeFloat`). A config that derives from :class:`StrictConfig`
has its fields checked against those hints whenever it is built: from Python (``CodecConfig(ch=-1)``),
from a dict or JSON file (:func:`dataclass_from_dict`, which adds unknown-key checks and JSON
conversions) or from CLI flags. Its own ``__post_init__`` (calling ``super().__post_init__()`` first)
holds only the rules between fields. Every config (codec, quantizer, dVAE, training) thus gets the same
checks and the same error messages; a command line prints them with :func:`error_line`, which names
the flag (``--batch-size``) instead of the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

from torch import Tensor

from movq.atomic import check_regular_file

T = TypeVar("T")


class ConfigError(ValueError):
    """A config (a dict, or a JSON file) is unreadable, or has an unknown, wrongly typed or
    out-of-range field. The message names the file (when there is one), the field, the value and
    what is accepted.

    For a field that its hint refuses, the error also carries its parts: ``owner`` (the config class's
    name), ``field`` (its path, ``"quantizer.decay"``, ``"ch_mult[1]"``), ``expected`` (``"an int >= 1"``),
    ``value`` and ``source`` (the file, or ``None``); :func:`error_line` words them for a command line.
    """

    def __init__(self, message: str, *, owner: str | None = None, field: str | None = None,
                 expected: str | None = None, value: Any = None, source: str | Path | None = None) -> None:
        super().__init__(message)
        self.owner, self.field, self.expected, self.value, self.source = owner, field, expected, value, source


@dataclass(frozen=True)
class Range:
    """Bounds of a number field, attached as ``Annotated[int, Range(min=1)]``.

    ``min`` / ``max`` are inclusive unless ``min_open`` / ``max_open``.
    """

    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False

    def contains(self, value: float) -> bool:
        if self.min is not None and (value <= self.min if self.min_open else value < self.min):
            return False
        return not (self.max is not None and (value >= self.max if self.max_open else value > self.max))

    def describe(self) -> str:
        if self.min is not None and self.max is not None:
            return f"in {'(' if self.min_open else '['}{self.min:g}, {self.max:g}{')' if self.max_open else ']'}"
        if self.min is not None:
            return f"{'>' if self.min_open else '>='} {self.min:g}"
        if self.max is not None:
            return f"{'<' if self.max_open else '<='} {self.max:g}"
        return ""


@dataclass(frozen=True)
class MultipleOf:
    """An int field that must be a multiple of ``n`` (``Annotated[int, Range(min=32), MultipleOf(32)]``)."""

    n: int

    def describe(self) -> str:
        return f"a multiple of {self.n}"


@dataclass(frozen=True)
class MinLength:
    """Minimum number of items of a list field (``Annotated[tuple[int, ...], MinLength(1)]``) or of
    characters of a string field (``Annotated[str, MinLength(1)]``)."""

    n: int


@dataclass(frozen=True)
class MaxLength:
    """Maximum number of items of a list field (``Annotated[tuple[int, ...], MaxLength(16)]``), checked
    before the items are: a hostile ten-million-item list is refused at once."""

    n: int


PositiveInt = Annotated[int, Range(min=1)]
NonNegativeInt = Annotated[int, Range(min=0)]
PositiveFloat = Annotated[float, Range(min=0, min_open=True)]
NonNegativeFloat = Annotated[float, Range(min=0)]
Probability = Annotated[float, Range(0, 1, max_open=True)]
"""A probability in ``[0, 1)`` (dropout rates, decays)."""

MAX_LEVELS = 16
"""Most resolution levels (``len(ch_mult)``, dVAE groups, UNet levels) a network config may have:
published models have 3 to 6; the bound refuses a hostile config before its network is built."""
MAX_BLOCKS = 64
"""Most residual blocks per level a network config may have (published models: 1 to 4)."""


# ---------------------------------------------------------------------------------------------
# Names


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``"did you mean 'x'? "`` for the closest of ``candidates`` to ``name`` (difflib), or ``""``."""
    matches = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f"did you mean {matches[0]!r}? " if matches else ""


def unknown_name_error(what: str, name: str, known: Iterable[str], listing: str | None = None) -> str:
    """``"unknown {what} 'name'; did you mean 'x'? {listing}: [...]"`` (the message of a refused name)."""
    known = sorted(known)
    return f"unknown {what} {name!r}; {did_you_mean(name, known)}{listing or 'known ' + what + 's'}: {known}"


# ---------------------------------------------------------------------------------------------
# Config dicts and files


class _Invalid(Exception):
    """Internal: the value at ``path`` is not what its hint accepts (``expected``)."""

    def __init__(self, path: str, expected: str, value: Any) -> None:
        super().__init__(path, expected, value)
        self.path, self.expected, self.value = path, expected, value


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)) and len(value) > 20:  # no repr of a hostile ten-million-item list
        return f"[{', '.join(repr(v)[:20] for v in value[:3])}, ...] (a list of {len(value)} items)"
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    if isinstance(value, str):
        return f"{text} (a string)"
    if isinstance(value, (list, tuple)):
        return f"{text} (a list)"
    if isinstance(value, Mapping):
        return f"{text} (an object)"
    return text


def dataclass_from_dict(cls: type[T], data: Any, source: str | Path | None = None) -> T:
    """``cls(**data)`` for a dataclass ``cls``, after checking ``data`` against ``cls``'s type hints.

    Every field is checked and converted: ``int`` (not bool, not ``1.5``, not ``"32"``), ``float``
    (ints accepted, finite), ``bool``, ``str``, ``None``, ``Literal[...]``, ``tuple[T, ...]`` /
    ``tuple[A, B]`` (JSON lists become tuples), ``dict[str, T]``, unions (``int | None``), nested
    dataclasses (from dicts), and unions of dataclasses told apart by their ``kind`` field (a dict
    without ``kind`` is the first member's kind).
    ``Annotated`` :class:`Range` / :class:`MultipleOf` / :class:`MinLength` / :class:`MaxLength` bounds
    are checked. Unknown keys are refused with the closest known names.

    ``source`` (a file name) is put in front of the message. Raises :class:`ConfigError`, naming
    the field, the value and what is accepted; errors of ``cls.__post_init__`` are re-raised as
    :class:`ConfigError` with the same prefix.
    """
    return _reporting(lambda: _build_dataclass(cls, data, ""), cls.__name__, source)


def value_from_hint(value: Any, hint: Any, name: str, source: str | Path | None = None) -> Any:
    """``value`` checked and converted like the value of a dataclass field ``name: hint`` (see
    :func:`dataclass_from_dict`); :class:`ConfigError` naming ``name`` otherwise."""
    return _reporting(lambda: _check(value, hint, name), "config", source)


def check_argument(value: Any, hint: Any, name: str) -> Any:
    """``value`` of the function argument ``name`` checked and converted against ``hint`` as a config
    field is (ints refuse bools, floats and strings; floats must be finite; :class:`Range` bounds), so
    every public entry point refuses bad arguments with the same words. Raises :class:`ConfigError`
    (a ``ValueError``): ``"eta must be a number >= 0, got nan"``."""
    try:
        return _check(value, hint, name)
    except _Invalid as error:
        raise ConfigError(f"{error.path} must be {error.expected}, got {_shown(error.value)}",
                          field=error.path, expected=error.expected, value=error.value) from None


def _reporting(build: Callable[[], T], owner: str, source: str | Path | None) -> T:
    """``build()``, with every failure turned into one :class:`ConfigError` naming ``source`` and the field."""
    where = f" in {source}" if source is not None else ""
    try:
        return build()
    except _Invalid as error:
        field = f" field {error.path!r}" if error.path else ""
        raise ConfigError(
            f"invalid {owner}{field}{where}: expected {error.expected}, got {_shown(error.value)}",
            owner=owner, field=error.path, expected=error.expected, value=error.value, source=source,
        ) from None
    except ConfigError as error:
        raise ConfigError(f"{error}{where}", owner=error.owner, field=error.field, expected=error.expected,
                          value=error.value, source=error.source if source is None else source) from None
    except (ValueError, TypeError) as error:  # the dataclass's own cross-field checks (__post_init__)
        raise ConfigError(f"invalid {owner}{where}: {error}") from None


def _build_dataclass(cls: type[T], data: Any, path: str) -> T:
    if not isinstance(data, Mapping):
        raise _Invalid(path, f"an object with {cls.__name__} fields", data)
    hints = _hints(cls)
    known = [f.name for f in fields(cls) if f.init]  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in data if k not in known)
    at = f" at {path!r}" if path else ""
    if unknown:
        hint = "".join(did_you_mean(k, known) for k in unknown)
        raise ConfigError(f"unknown {cls.__name__} fields {unknown}{at}; {hint}known fields: {sorted(known)}")
    missing = [
        f.name
        for f in fields(cls)  # type: ignore[arg-type]
        if f.init and f.name not in data
        and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{cls.__name__} needs the fields {missing}{at}")
    values = {name: _check(value, hints[name], f"{path}.{name}" if path else name) for name, value in data.items()}
    token = _PRECHECKED.set(cls)  # checked just now (with the field's full path): check_fields skips them
    try:
        return cls(**values)
    finally:
        _PRECHECKED.reset(token)


_PRECHECKED: ContextVar[type | None] = ContextVar("_PRECHECKED", default=None)
"""The class whose instance :func:`_build_dataclass` is building from values it has already checked."""


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def check_fields(config: Any) -> None:
    """Check every field of the dataclass instance ``config`` against its type hint (as
    :func:`dataclass_from_dict` does) and store the converted values (lists -> tuples, ints -> floats,
    dicts -> nested configs). Raises :class:`ConfigError` naming the class, the field, the value and
    what is accepted. :class:`StrictConfig` calls it from ``__post_init__``; values that
    :func:`dataclass_from_dict` has just checked are not checked again."""
    cls = type(config)
    if _PRECHECKED.get() is cls:
        _PRECHECKED.set(None)
        return
    _reporting(lambda: _check_fields(config), cls.__name__, None)


def _check_fields(config: Any) -> None:
    hints = _hints(type(config))
    for f in fields(config):
        if f.init:
            value = getattr(config, f.name)
            checked = _check(value, hints[f.name], f.name)
            if checked is not value:
                object.__setattr__(config, f.name, checked)  # object's: frozen dataclasses too


class StrictConfig:
    """Base of the config dataclasses: on construction, every field is checked against its type hint
    (:func:`check_fields`), whether the config comes from Python, a dict, a JSON file or CLI flags.

    A subclass with rules between fields defines ``__post_init__`` calling ``super().__post_init__()``
    first; errors name the field (``ConfigError``), the cross-field rules raise ``ValueError``.
    """

    def __post_init__(self) -> None:
        check_fields(self)


def error_line(prog: str, error: BaseException, config: type | None = None,
               flags: Mapping[str, str] | None = None) -> str:
    """The line ``"PROG: error: ..."`` that the command ``prog`` prints for a user error (exit code 2).

    A :class:`ConfigError` about a field of ``config`` (the command's settings, built from its flags)
    names the flag: ``--batch-size must be an int >= 1, got 0`` (the field's path with ``-`` for ``_``
    and ``.``; ``flags`` maps the paths whose flag is spelled otherwise, ``{"loss.adv": "w_adv"}``).
    Any other error (another config's, a file's) keeps its message.
    """
    text = str(error)
    if (isinstance(error, ConfigError) and config is not None and error.owner == config.__name__
            and error.field and error.source is None):
        name, bracket, index = error.field.partition("[")
        flag = "--" + (flags or {}).get(name, name).replace(".", "-").replace("_", "-")
        expected = (error.expected or "").removesuffix(" or null")  # a flag is never null: it is left out
        text = f"{flag}{bracket}{index} must be {expected}, got {_shown(error.value)}"
    return f"{prog}: error: {text}"


def _check(value: Any, hint: Any, path: str) -> Any:
    """``value`` converted to what ``hint`` describes; :class:`_Invalid` when it does not fit."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        inner, *extras = args
        for extra in extras:  # before the items are checked one by one
            if isinstance(extra, MaxLength) and isinstance(value, (list, tuple)) and len(value) > extra.n:
                raise _Invalid(path, f"a list of at most {extra.n} items", value)
        checked = _check(value, inner, path)
        for extra in extras:
            if isinstance(extra, Range) and not extra.contains(checked):
                raise _Invalid(path, f"{_describe(inner)} {extra.describe()}", value)
            if isinstance(extra, MultipleOf) and checked % extra.n:
                raise _Invalid(path, extra.describe(), value)
            if isinstance(extra, MinLength) and len(checked) < extra.n:
                items = "character" if isinstance(checked, str) else "item"
                what = "a string" if isinstance(checked, str) else "a list"
                raise _Invalid(path, f"{what} of at least {extra.n} {items}{'s' if extra.n > 1 else ''}", value)
        return checked
    if hint is Any or hint is object:
        return value
    if origin in (Union, types.UnionType):
        return _check_union(value, args, path)
    if origin is Literal:
        if not any(value == a and type(value) is type(a) for a in args):
            raise _Invalid(path, f"one of {list(args)}", value)
        return value
    if origin is tuple or hint is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Invalid(path, "a list", value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if not args:
            return tuple(value)
        if len(value) != len(args):
            raise _Invalid(path, f"a list of {len(args)} items", value)
        return tuple(_check(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin in (list, dict) or hint in (list, dict):
        return _check_container(value, origin or hint, args, path)
    if is_dataclass(hint):
        if isinstance(value, hint):
            return value
        return _build_dataclass(hint, value, path)  # type: ignore[arg-type]
    if hint is bool:
        if not isinstance(value, bool):
            raise _Invalid(path, "true or false", value)
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid(path, "an int", value)
        return value
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise _Invalid(path, "a finite number", value)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _Invalid(path, "a string", value)
        return value
    if hint is type(None):
        if value is not None:
            raise _Invalid(path, "null", value)
        return None
    return value  # a type these checks do not know: passed through unchanged


def _check_container(value: Any, origin: type, args: tuple, path: str) -> Any:
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _Invalid(path, "a list", value)
        return [_check(v, args[0], f"{path}[{i}]") if args else v for i, v in enumerate(value)]
    if not isinstance(value, Mapping):
        raise _Invalid(path, "an object", value)
    out = {}
    for key, item in value.items():
        if args and args[0] is str and not isinstance(key, str):
            raise _Invalid(f"{path}[{key!r}]", "a string key", key)
        out[key] = _check(item, args[1], f"{path}.{key}") if args else item
    return out


def _check_union(value: Any, args: tuple, path: str) -> Any:
    tagged = _tagged_members(args)
    if tagged:
        return _check_tagged(value, tagged, path)
    if any(isinstance(value, a) for a in args if is_dataclass(a)):
        return value
    failures = []
    for member in args:
        try:
            return _check(value, member, path)
        except _Invalid as error:
            if error.path != path:  # the value has the member's shape but an inner item is wrong
                raise
            failures.append(error.expected)
    raise _Invalid(path, " or ".join(failures), value)


def _check_tagged(value: Any, tagged: Mapping[str, type], path: str) -> Any:
    """``value`` as the dataclass of ``tagged`` its ``kind`` names (the first member's when absent)."""
    if isinstance(value, tuple(tagged.values())):
        return value
    if not isinstance(value, Mapping):
        raise _Invalid(path, f"an object with a 'kind' in {list(tagged)}", value)
    kind = value.get("kind", next(iter(tagged)))
    if not isinstance(kind, str) or kind not in tagged:
        name = path.rsplit(".", 1)[-1] or "union"
        raise ConfigError(unknown_name_error(f"{name} kind", kind, tagged, listing="expected one of"))
    return _build_dataclass(tagged[kind], value, path)


def _tagged_members(args: tuple) -> dict[Any, type]:
    """``{kind: class}`` when every member of a union is a dataclass with a defaulted ``kind`` field."""
    tagged: dict[Any, type] = {}
    for member in args:
        kind = {f.name: f for f in fields(member)}.get("kind") if is_dataclass(member) else None
        if kind is None or kind.default is dataclasses.MISSING:
            return {}
        tagged[kind.default] = member
    return tagged


def _describe(hint: Any) -> str:
    return {int: "an int", float: "a number"}.get(hint, "a value")


def merge_dicts(base: dict[str, Any], override: dict[str, Any], only: Collection[str] | None = None) -> dict[str, Any]:
    """A new dict: ``override``'s values on top of ``base``'s (neither is changed).

    Where both hold a dict under a key, the two merge key by key, recursively, unless their
    ``kind`` differs (another quantizer: ``override``'s replaces ``base``'s whole); any other value
    of ``override`` replaces ``base``'s. ``only``: the top-level keys whose dicts merge (the nested
    configs of a training config, such as ``loss``); other top-level dicts (``codec``) are replaced whole.
    """
    out = dict(base)
    for key, value in override.items():
        old = out.get(key)
        both = isinstance(value, dict) and isinstance(old, dict)
        if both and (only is None or key in only) and value.get("kind", old.get("kind")) == old.get("kind"):
            out[key] = merge_dicts(old, value)
        else:
            out[key] = value
    return out


def read_json_object(path: str | Path) -> dict[str, Any]:
    """The JSON object stored in ``path``; :class:`ConfigError` naming the file when it is empty,
    not valid JSON, or holds something other than an object (``{...}``)."""
    path = Path(path)
    check_regular_file(path, "expected a JSON file", ConfigError)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not a UTF-8 text file (expected a JSON object): {error}") from None
    if not text.strip():
        raise ConfigError(f"{path} is empty; expected a JSON object of config fields")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not valid JSON ({error}); expected a JSON object of config fields") from None
    except RecursionError:
        raise ConfigError(f"{path} nests JSON too deeply to be a config; expected a JSON object of config fields") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds a JSON {type(data).__name__}, expected a JSON object of config fields")
    return data


def dataclass_from_file(cls: type[T], path: str | Path) -> T:
    """:func:`dataclass_from_dict` of the JSON object in ``path``; errors name the file."""
    return dataclass_from_dict(cls, read_json_object(path), source=path)


# ---------------------------------------------------------------------------------------------
# State dicts


def state_dict_mismatches(
    expected: Mapping[str, Tensor], given: Mapping[str, Tensor], optional: Iterable[str] = (), limit: int = 20
) -> list[str]:
    """Describe how ``given`` differs from ``expected``: missing keys (except ``optional`` ones),
    unexpected keys and wrong shapes, at most ``limit`` keys each; an empty list means they match."""
    missing = sorted(set(expected) - set(given) - set(optional))
    unexpected = sorted(set(given) - set(expected))
    wrong = sorted(k for k in set(expected) & set(given) if tuple(expected[k].shape) != tuple(given[k].shape))

    def listing(keys: list[str]) -> str:
        return f"{keys[:limit]}{' ...' if len(keys) > limit else ''}"

    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys {listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys {listing(unexpected)}")
    if wrong:
        shapes = ", ".join(
            f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}" for k in wrong[:limit]
        )
        problems.append(f"wrong shapes {shapes}")
    return problems


def nonfinite_entries(tree: Any, prefix: str = "") -> list[str]:
    """Dotted names of the floating-point tensors and floats in ``tree`` (a tensor, a float, or nested
    dicts / lists / tuples of them, such as a state dict or an optimizer state) that hold NaN or inf;
    an empty list means every value is finite. Meta tensors (no values) count as finite."""
    if isinstance(tree, Tensor):
        finite = not tree.is_floating_point() or tree.is_meta or bool(tree.isfinite().all())
        return [] if finite else [prefix or "value"]
    if isinstance(tree, float):
        return [] if math.isfinite(tree) else [prefix or "value"]
    if isinstance(tree, Mapping):
        items: Iterable[tuple[Any, Any]] = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return []
    return [name for key, value in items for name in nonfinite_entries(value, f"{prefix}{key}" if not prefix else f"{prefix}.{key}")]
