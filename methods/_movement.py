"""Learned movement scores, shared by movement, global_movement, gum and soft_movement.

One score S per FFN neuron, initialised to 0 and trained by the task loss through a
straight-through estimator (STE): the forward pass multiplies the neuron's activation by
the binary mask, the backward pass hands the mask's gradient to S unchanged. The engine
multiplies ``forward_mask`` into the activations, so returning ``mask + (S - S.detach())``
is the whole STE: its value is the binary mask and its derivative w.r.t. S is 1.
The gradient reaching S_j is then sum over tokens of a_j * dL/d(masked a_j) -- nonzero for
pruned neurons too, so a pruned neuron can come back.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from harness.method import PruningMethod


class MovementScores(PruningMethod):
    """Base class: learned scores S (init 0) in their own optimizer group, STE masks."""

    defaults: dict[str, Any] = {"score_lr": 1e-2}  # the authors' mask-score learning rate

    def attach(self, pruner) -> list[dict[str, Any]]:
        device = pruner.keep[0].device  # the model's device
        self.movement = [nn.Parameter(torch.zeros(width, device=device)) for width in pruner.widths]
        # No weight decay: decay would pull every score toward 0 and blur the ranking.
        return [{"params": self.movement, "lr": self.params["score_lr"], "weight_decay": 0.0}]

    def scores(self, pruner) -> list[torch.Tensor]:
        return [score.detach() for score in self.movement]

    def forward_mask(self, layer: int, binary_mask: torch.Tensor) -> torch.Tensor:
        score = self.movement[layer]
        return binary_mask + (score - score.detach())
