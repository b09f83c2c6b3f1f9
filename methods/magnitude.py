"""Magnitude pruning of FFN neurons."""

from __future__ import annotations

import torch

from harness.method import PruningMethod
from harness.registry import METHODS


@METHODS.register("magnitude")
class Magnitude(PruningMethod):
    """Score = L2 norm of the neuron's weights (input row(s) with output column), from the current weights; local top-v."""

    def scores(self, pruner) -> list[torch.Tensor]:
        return [
            torch.sqrt(sum(part.detach().float().pow(2).flatten(1).sum(1) for part in layer.neuron_weights()))
            for layer in pruner.layers
        ]
