"""One generic registry for methods, tasks and model aliases.

In the style of lm-evaluation-harness: a decorator registers a class under a name, a
lazy ``"module:Class"`` target registers without importing (plugins, heavy
dependencies), and an unknown name gets a did-you-mean error.

Built-ins are discovered by importing every module of the ``methods`` / ``tasks``
packages (their decorators register them), so adding a method is one file in
``methods/``. Out-of-tree packages declare an entry point in the group
``harness.methods`` / ``harness.tasks`` / ``harness.models`` whose value is
``"module:Class"``.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable


class UnknownNameError(ValueError):
    """An unknown registry name; the message says what is allowed."""


@dataclass
class _Entry:
    target: Any  # a class, or a "module:Class" string until first use
    description: str | None = None


def first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0].strip() if (doc or "").strip() else ""


class Registry:
    """Name -> class, with lazy targets and did-you-mean errors."""

    def __init__(self, kind: str, builtin: str | None = None, entry_point_group: str | None = None):
        self.kind = kind
        self._builtin = builtin  # a package (every module imported) or a single module
        self._entry_point_group = entry_point_group
        self._entries: dict[str, _Entry] = {}
        self._discovered = False

    # -- registration -------------------------------------------------------------
    def register(self, name: str, description: str | None = None) -> Callable[[type], type]:
        """Class decorator: ``@METHODS.register("magnitude")``."""

        def decorator(cls: type) -> type:
            existing = self._entries.get(name)
            if existing is not None and isinstance(existing.target, type) and existing.target is not cls:
                if f"{existing.target.__module__}.{existing.target.__qualname__}" != f"{cls.__module__}.{cls.__qualname__}":
                    raise ValueError(f"{self.kind} '{name}' is already registered by {existing.target!r}")
            cls.registry_name = name
            self._entries[name] = _Entry(cls, description or first_line(cls.__doc__))
            return cls

        return decorator

    def register_lazy(self, name: str, target: str, description: str | None = None) -> None:
        """Register ``"module:Class"`` without importing it."""
        if ":" not in target:
            raise ValueError(f"lazy target for {self.kind} '{name}' must be 'module:Class', got {target!r}")
        if name not in self._entries:
            self._entries[name] = _Entry(target, description)

    # -- discovery ----------------------------------------------------------------
    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        if self._builtin:
            package = importlib.import_module(self._builtin)
            for module in pkgutil.iter_modules(getattr(package, "__path__", [])):
                if not module.name.startswith("_"):
                    importlib.import_module(f"{self._builtin}.{module.name}")
        if self._entry_point_group:
            for ep in entry_points(group=self._entry_point_group):
                self.register_lazy(ep.name, ep.value)

    # -- lookup -------------------------------------------------------------------
    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._discover()
        return name in self._entries

    def get(self, name: str) -> type:
        self._discover()
        key = name
        if key not in self._entries and ":" in str(name):  # a family such as "lmeval:<task>"
            key = str(name).split(":", 1)[0] + ":*"
        entry = self._entries.get(key)
        if entry is None:
            raise UnknownNameError(self.unknown_message(name))
        if isinstance(entry.target, str):
            module_name, _, attr = entry.target.partition(":")
            cls = getattr(importlib.import_module(module_name), attr)
            cls.registry_name = key
            entry.target = cls
            entry.description = entry.description or first_line(cls.__doc__)
        return entry.target

    def describe(self) -> list[tuple[str, str]]:
        """(name, one-line description) for every entry, importing lazy ones."""
        return [(name, self._entries[name].description or first_line(self.get(name).__doc__)) for name in self.names()]

    def unknown_message(self, name: str) -> str:
        known = self.names()
        close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"unknown {self.kind} '{name}'{hint} (known: {', '.join(known)})"


METHODS = Registry("method", builtin="methods", entry_point_group="harness.methods")
TASKS = Registry("task", builtin="tasks", entry_point_group="harness.tasks")
MODELS = Registry("model", builtin="harness.models", entry_point_group="harness.models")
