"""The matrix's ``train`` and ``eval`` sections, assembled from the features that own them.

Each feature declares its settings once (``SETTINGS``: a ``harness.params.Param`` per key,
with default and allowed range), may check combinations (``validate``), and may be
switched off by one of its keys (``active``), in which case its other keys are dropped
from the job spec so they cannot split jobs. ``harness.config`` loops over ``FEATURES``
and knows none of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from harness import analysis, compute, distill, speed, task, train
from harness.params import Param, defaults_of


@dataclass(frozen=True)
class Feature:
    name: str
    section: str  # "train" or "eval"
    settings: dict[str, Param]
    validate: Callable[[dict[str, Any], str], None] | None = None  # raises ConfigError
    active: Callable[[dict[str, Any]], bool] | None = None  # False: drop its keys (but the switch)
    switch: str | None = None  # the key that turns it on or off (kept when off)


def _beam(evaluation: dict[str, Any]) -> bool:
    return evaluation.get("decoding") == "beam"


FEATURES: tuple[Feature, ...] = (
    Feature("training", "train", train.SETTINGS),
    Feature("precision", "train", compute.SETTINGS, compute.validate),
    # Off, every distill key leaves the spec (the switch too): non-distilling jobs never depend on them.
    Feature("distillation", "train", distill.SETTINGS, distill.validate, distill.active),
    Feature("evaluation", "eval", task.EVAL_SETTINGS),
    Feature("beam search", "eval", task.BEAM_SETTINGS, active=_beam),
    Feature("redundancy analysis", "eval", analysis.SETTINGS, active=analysis.active, switch=analysis.SWITCH),
    Feature("speed", "eval", speed.SETTINGS, active=speed.active, switch=speed.SWITCH),
)


def declared(section: str) -> dict[str, Param]:
    """Every key of ``section`` with its declaration."""
    return {key: param for feature in FEATURES if feature.section == section for key, param in feature.settings.items()}


def defaults(section: str) -> dict[str, Any]:
    return defaults_of(declared(section))


def finish(section: str, settings: dict[str, Any], field: str) -> dict[str, Any]:
    """Validate a resolved section (every feature's combination checks) and drop the keys
    of features that are off. Returns a new dict."""
    result = dict(settings)
    for feature in FEATURES:
        if feature.section != section:
            continue
        if feature.validate is not None:
            feature.validate(result, field)
        if feature.active is not None and not feature.active(result):
            for key in feature.settings:
                if key != feature.switch:
                    result.pop(key, None)
    return result
