"""Plain result types: what a job produces and the store writes. No engine, no database.

HELM's run-spec style: small, frozen where they can be, typed, documented fields. A
worker process returns a ``JobResult``; the driver writes it in one transaction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# Metric splits that are not a task's own results (bookkeeping and analyses).
SPLIT_ANALYSIS, SPLIT_MODEL, SPLIT_SPEED, SPLIT_TRAIN, SPLIT_COST = "analysis", "model", "speed", "train", "cost"


@dataclass(frozen=True)
class Metric:
    """One number: its name, value, direction, and the split (or bookkeeping kind) it is on.
    ``spread`` is its interquartile range where it is a median of repeats (speed)."""

    name: str
    value: float
    higher_is_better: bool
    split: str = "test"
    spread: float | None = None

    @property
    def finite(self) -> bool:
        return isinstance(self.value, (int, float)) and math.isfinite(self.value)


@dataclass
class JobResult:
    """Everything a finished job stores; written in one transaction."""

    metrics: list[Metric]
    protocol: dict[str, Any] = field(default_factory=dict)
    layer_stats: list[tuple[int, str, float]] = field(default_factory=list)  # (layer, name, value)
    neuron_stats: list[tuple[int, int, float | None, float | None]] = field(default_factory=list)  # layer, neuron, sens, max|cos|
    curves: list[tuple[int, str, float]] = field(default_factory=list)  # (step, name, value)
    samples: list[dict[str, str]] = field(default_factory=list)  # task, prompt, reference, prediction
    resolved_revisions: dict[str, str] = field(default_factory=dict)  # hub model/dataset -> commit (recorded, not hashed)

    def non_finite(self) -> list[str]:
        """Names (with split) of metrics whose value is NaN or infinite."""
        return [f"{m.name} [{m.split}]" for m in self.metrics if not m.finite]
