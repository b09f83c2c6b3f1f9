"""Typed settings, declared once: every parameter a matrix may set, with its default, its
allowed range or choices, and what a sentinel value means.

Methods and tasks declare ``defaults: dict[str, Param | value]`` (a plain value is a
parameter of that type with no range); the engine's matrix sections (``train``,
``eval``) are built from the features that own them (``harness.sections``). Values are
checked when a matrix is loaded: a wrong type or a value out of range is one
``ConfigError`` line naming the field and what is allowed.
"""

from __future__ import annotations

import copy
import difflib
import math
from dataclasses import dataclass
from typing import Any, Mapping

_REQUIRED = object()


class ConfigError(ValueError):
    """Bad user input: the message is one line naming the field and what is allowed."""


def type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}.get(
        type(value), type(value).__name__
    )


@dataclass(frozen=True)
class Param:
    """One setting: its default (``REQUIRED`` for none), a one-line description, and the
    values allowed: ``minimum``/``maximum`` (open when ``*_open``), ``choices``, or the
    ``off`` value that keeps its special meaning outside the range (e.g. 0 = task default)."""

    default: Any
    doc: str = ""
    minimum: float | None = None
    maximum: float | None = None
    min_open: bool = False
    max_open: bool = False
    choices: tuple[Any, ...] | None = None
    off: Any = None  # a sentinel allowed outside the range
    off_doc: str = ""  # what the sentinel means
    kind: type | None = None  # the type when the default does not say (REQUIRED, None)

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def _type(self) -> type | None:
        if self.kind is not None:
            return self.kind
        return None if self.required or self.default is None else type(self.default)

    def check(self, field: str, value: Any) -> Any:
        """``value`` coerced to the parameter's type, or ConfigError naming ``field``."""
        if value is None and self.default is None:  # an optional parameter left unset
            return None
        value = _check_type(field, value, self._type())
        if self.off is not None and value == self.off and not isinstance(value, bool):
            return value
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{field}: {value!r} is not allowed; allowed: {', '.join(map(str, self.choices))}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{field}: expected a finite number, got {value}")
            low_bad = self.minimum is not None and (value <= self.minimum if self.min_open else value < self.minimum)
            high_bad = self.maximum is not None and (value >= self.maximum if self.max_open else value > self.maximum)
            if low_bad or high_bad:
                raise ConfigError(f"{field}: {value!r} is out of range; allowed: {self.allowed()}")
        return value

    def allowed(self) -> str:
        """The allowed values in words: 'integer >= 1 (0 = the task's default)'."""
        kind = self._type()
        name = {bool: "true or false", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}.get(
            kind, "any value") if kind else "any value"
        if self.choices is not None:
            text = " | ".join(map(str, self.choices))
        elif self.minimum is not None and self.maximum is not None:
            text = f"{name} in {'(' if self.min_open else '['}{_num(self.minimum)}, {_num(self.maximum)}{')' if self.max_open else ']'}"
        elif self.minimum is not None:
            text = f"{name} {'>' if self.min_open else '>='} {_num(self.minimum)}"
        elif self.maximum is not None:
            text = f"{name} {'<' if self.max_open else '<='} {_num(self.maximum)}"
        else:
            text = name
        if self.off is not None:
            text += f" ({self.off} = {self.off_doc})" if self.off_doc else f" (or {self.off})"
        return text


REQUIRED = _REQUIRED


def _num(value: float) -> str:
    return f"{value:g}"


def as_param(declared: Any) -> Param:
    return declared if isinstance(declared, Param) else Param(declared)


def default_of(declared: Any) -> Any:
    """The default a declaration gives (a Param's default, or the plain value)."""
    return declared.default if isinstance(declared, Param) else declared


def defaults_of(declared: Mapping[str, Any]) -> dict[str, Any]:
    """{name: default} of every declared parameter that has one."""
    return {key: copy.deepcopy(default_of(value)) for key, value in declared.items() if not as_param(value).required}


def _check_type(field: str, value: Any, kind: type | None) -> Any:
    if kind is None:
        return value
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is float:
        if isinstance(value, str):  # YAML 1.1 reads "5e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        expected = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}.get(
            kind, kind.__name__)
        raise ConfigError(f"{field}: expected {expected}, got {type_name(value)} {value!r}")
    return value


def check_type(field: str, value: Any, default: Any) -> Any:
    """Return ``value`` coerced to the default's type, or raise ConfigError."""
    return _check_type(field, value, None if default is None else type(default))


def unknown_key_error(field: str, key: str, allowed: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"{field}: unknown key '{key}'{hint}; allowed: {', '.join(sorted(allowed)) or 'none'}")


def check_values(field: str, given: Mapping[str, Any] | None, declared: Mapping[str, Any]) -> dict[str, Any]:
    """The given values, each checked against its declaration (unknown keys, wrong types
    and values out of range raise ConfigError naming ``field.key``)."""
    if given is not None and not isinstance(given, Mapping):
        raise ConfigError(f"{field}: expected a mapping, got {given!r}")
    checked = {}
    for key, value in (given or {}).items():
        if key not in declared:
            raise unknown_key_error(field, str(key), list(declared))
        checked[key] = as_param(declared[key]).check(f"{field}.{key}", value)
    return checked


def resolve_params(field: str, given: Mapping[str, Any] | None, declared: Mapping[str, Any],
                   required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The declared defaults with ``given`` checked and merged over them; a missing
    required parameter raises ConfigError. ``required`` names extra required parameters
    declared without a Param (the plugin API before Params)."""
    declared = dict(declared)
    for key in required:
        declared.setdefault(key, Param(REQUIRED))
    resolved = {**defaults_of(declared), **check_values(field, given, declared)}
    for key, spec in declared.items():
        if as_param(spec).required and key not in resolved:
            raise ConfigError(f"{field}.{key}: required parameter is missing")
    return resolved


def describe(declared: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(name, default, allowed values, description) per declared parameter, for
    ``harness list --verbose``."""
    rows = []
    for key, spec in declared.items():
        param = as_param(spec)
        default = "(required)" if param.required else repr(param.default)
        rows.append((key, default, param.allowed(), param.doc))
    return rows
