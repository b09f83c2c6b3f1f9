"""Soft movement pruning (Sanh et al. 2020) at the granularity of FFN neurons (ablation).

During training a neuron is kept while sigmoid(S) > tau, with tau following the engine's
cubic schedule from 0 to ``threshold``, and an L1 penalty on sigmoid(S) whose strength
ramps with tau (``l1_lambda * tau / threshold``, as in the movement-pruning code). A
threshold does not hit an exact sparsity, so the final mask is local top-v of S at the
job's target: soft movement is compared at the same sparsity as every other method.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.registry import METHODS
from methods._movement import MovementScores


@METHODS.register("soft_movement")
class SoftMovement(MovementScores):
    """Learned scores; training mask sigmoid(S) > τ (τ: 0 → `threshold`, cubic) + L1 on sigmoid(S); final mask = local top-v."""

    selection = "local"
    defaults: dict[str, Any] = {**MovementScores.defaults, "threshold": 0.1, "l1_lambda": 1.0}

    @staticmethod
    def _progress(pruner, kept_fraction: float) -> float:
        """Where the schedule stands, 0 (dense) -> 1 (final): the cubic shape of v(t)."""
        final = pruner.schedule.final_kept
        return 1.0 if final >= 1.0 else (1.0 - kept_fraction) / (1.0 - final)

    def keep_masks(self, pruner, scores: list[torch.Tensor], kept_fraction: float) -> list[torch.Tensor]:
        tau = self.params["threshold"] * self._progress(pruner, kept_fraction)
        return [torch.sigmoid(score) > tau for score in scores]

    def regularizer(self, pruner, step: int, kept_fraction: float) -> torch.Tensor:
        strength = self.params["l1_lambda"] * self._progress(pruner, kept_fraction)
        return strength * torch.stack([torch.sigmoid(score).mean() for score in self.movement]).mean()
