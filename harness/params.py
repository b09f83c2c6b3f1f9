"""Validation of user-supplied parameters against declared defaults.

Methods and tasks declare ``defaults: dict[str, Any]``; a value of the default's type
(int accepted for float, None default = any scalar) is allowed, anything else is a
one-line ConfigError naming the field.
"""

from __future__ import annotations

import difflib
from typing import Any, Mapping


class ConfigError(ValueError):
    """Bad user input: the message is one line naming the field and what is allowed."""


def type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}.get(
        type(value), type(value).__name__
    )


def check_type(field: str, value: Any, default: Any) -> Any:
    """Return ``value`` coerced to the default's type, or raise ConfigError."""
    if default is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        if isinstance(value, str):  # YAML 1.1 reads "5e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"{field}: expected {type_name(default)}, got {type_name(value)} {value!r}")
    return value


def unknown_key_error(field: str, key: str, allowed: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"{field}: unknown key '{key}'{hint}; allowed: {', '.join(sorted(allowed)) or 'none'}")


def resolve_params(
    field: str, given: Mapping[str, Any] | None, defaults: Mapping[str, Any], required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Merge ``given`` over ``defaults``; unknown keys, wrong types, missing required keys raise."""
    given = dict(given or {})
    resolved = dict(defaults)
    for key, value in given.items():
        if key not in defaults and key not in required:
            raise unknown_key_error(field, key, list(defaults) + list(required))
        resolved[key] = check_type(f"{field}.{key}", value, defaults.get(key))
    for key in required:
        if key not in given:
            raise ConfigError(f"{field}.{key}: required parameter is missing")
    return resolved
