"""Soft movement pruning (Sanh et al. 2020) at the granularity of FFN neurons (ablation).

As the reference trains it (``sigmoied_threshold:1d_alt`` with ``regularization: l1``):
- during training a neuron is kept while sigmoid(S) > tau, with tau following the cubic
  schedule from 0 to ``threshold`` (``schedule_threshold`` in
  nn_pruning/patch_coordinator.py, ``initial_threshold`` 0, ``final_threshold`` 0.1);
- ``ThresholdBinarizer`` (nn_pruning/modules/binarizer.py) keeps at least
  int(min_elements * numel) + 1 elements of each (d_ff x d_model) mask, with
  ``min_elements`` = ``linear_min_parameters`` = the prune leftover v_f (utils.py,
  ``args_to_hparams``): at least (int(v_f * d_ff * d_model) + 1) // d_model neurons per
  layer, the best by score;
- the L1 penalty is sigmoid(S) summed over the neurons / d_ff per layer, summed over layers
  and divided by ``nummod`` (``regularization_loss``), times
  ``l1_lambda * tau / threshold`` (``regu_lambda``; the reference's ``--regu_lamb``
  default is 2). ``penalty_scale: per_layer`` (the mean over layers) is the ablation.

A threshold does not hit an exact sparsity, so the final mask is local top-v of S at the
job's target: soft movement is compared at the same sparsity as every other method.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.method import PruningContext
from harness.params import Param
from harness.registry import METHODS
from harness.selection import select_local
from methods._movement import MovementScores


def reference_minimum(final_kept: float, width: int, hidden_size: int) -> int:
    """Neurons ThresholdBinarizer keeps at least: int(v_f * numel) + 1 elements of a
    (width x hidden_size) mask whose rows are constant, i.e. that many whole rows."""
    return (int(final_kept * width * hidden_size) + 1) // hidden_size


@METHODS.register("soft_movement")
class SoftMovement(MovementScores):
    """Learned scores; training mask sigmoid(S) > τ (τ: 0 → `threshold`, cubic) with the reference's minimum width + L1 on sigmoid(S); final mask = local top-v."""

    version = 2  # 2: weight-gating STE, training minimum width, nummod scale, l1_lambda 2
    selection = "local"
    defaults: dict[str, Any] = {
        **MovementScores.defaults,
        "threshold": Param(0.1, "final τ of the training mask sigmoid(S) > τ (below 1: no sigmoid exceeds 1)",
                           minimum=0.0, maximum=1.0, min_open=True, max_open=True),
        "l1_lambda": Param(2.0, "L1 strength (the reference's regu_lamb)", minimum=0.0),
        "penalty_scale": Param("reference", "reference: summed layer terms / nummod; per_layer: their mean (ablation)",
                               choices=("reference", "per_layer")),
    }

    @staticmethod
    def _progress(context: PruningContext, kept_fraction: float) -> float:
        """Where the schedule stands, 0 (dense) -> 1 (final): the cubic shape of v(t)."""
        final = context.final_kept
        return 1.0 if final >= 1.0 else (1.0 - kept_fraction) / (1.0 - final)

    def training_masks(self, context, scores, kept_fraction):
        tau = self.params["threshold"] * self._progress(context, kept_fraction)
        masks = []
        for score in scores:
            mask = torch.sigmoid(score) > tau
            minimum = reference_minimum(context.final_kept, score.numel(), context.hidden_size)
            if int(mask.sum()) < minimum:
                mask = select_local([score], minimum / score.numel(), 0)[0]
            masks.append(mask)
        return masks

    def regularizer(self, context: PruningContext, kept_fraction: float) -> torch.Tensor:
        strength = self.params["l1_lambda"] * self._progress(context, kept_fraction)
        terms = torch.stack([torch.sigmoid(score).mean() for score in self.movement])
        if self.params["penalty_scale"] == "reference":
            return strength * terms.sum() / context.reference_module_count
        return strength * terms.mean()
