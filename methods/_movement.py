"""Learned movement scores, shared by movement, global_movement, gum and soft_movement.

One score S per FFN neuron, initialised to 0 (the reference's ``mask_init: constant``,
``mask_scale: 0``) and trained by the task loss through a straight-through estimator: the
forward pass uses the binary top-v mask, the backward pass hands the mask's gradient to
S unchanged (``TopKBinarizer.backward`` in nn_pruning/modules/binarizer.py). The engine
gates the neuron's weights with that mask (harness.masking), so S_i receives the sum of
W * dL/dW over neuron i's input row(s) and output column, and nothing once the neuron is
pruned. ``ste: activations`` is the ablation that gates only the activation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from harness.masking import STE_MODES
from harness.method import PruningContext, PruningMethod
from harness.params import Param


class MovementScores(PruningMethod):
    """Base class: learned scores S (init 0) in their own optimizer group, straight-through masks."""

    version = 2  # 2: the straight-through mask gates the weights (was: the activations)
    defaults: dict[str, Any] = {
        "score_lr": Param(1e-2, "learning rate of the scores (the reference's mask_scores_learning_rate)",
                          minimum=0.0, min_open=True),
        "ste": Param("weights", "where the straight-through mask sits: weights (the reference) or activations (ablation)",
                     choices=STE_MODES),
    }

    def attach(self, context: PruningContext) -> list[dict[str, Any]]:
        self.movement = [nn.Parameter(torch.zeros(width, device=context.device, dtype=context.dtype))
                         for width in context.widths]
        # No weight decay: decay would pull every score toward 0 and blur the ranking (the
        # reference's mask-score group has none either).
        return [{"params": self.movement, "lr": self.params["score_lr"], "weight_decay": 0.0}]

    def learned_scores(self) -> list[nn.Parameter]:
        return self.movement

    def scores(self, context: PruningContext) -> list[torch.Tensor]:
        return [score.detach() for score in self.movement]
