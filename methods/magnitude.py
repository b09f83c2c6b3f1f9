"""Magnitude pruning of FFN neurons.

``norm: joint`` (the default): one score per neuron, the L2 norm of all its weights (input
row(s) with output column), so one mask selects whole neurons. ``norm: separate`` is the
reference's ``group_magnitude`` (nn_pruning/modules/binarizer.py, GroupMagnitudeBinarizer,
applied to each MaskedLinear on its own): every projection keeps its own top-v rows or
columns by their norm, and a neuron survives only where all of them kept it (a neuron
with a masked input row outputs 0; one with a masked output column adds nothing), so
fewer than v * d_ff neurons survive.
"""

from __future__ import annotations

import torch

from harness.method import PruningContext, PruningMethod
from harness.params import Param
from harness.registry import METHODS
from harness.selection import select_local


@METHODS.register("magnitude")
class Magnitude(PruningMethod):
    """Score = L2 norm of the neuron's weights (input row(s) with output column), from the current weights; local top-v."""

    defaults = {"norm": Param("joint", "joint: one norm over the neuron's weights; separate: the reference's "
                                       "group_magnitude, each projection masked on its own (ablation)",
                              choices=("joint", "separate"))}

    def __init__(self, params, seed):
        super().__init__(params, seed)
        self.exact_counts = params.get("norm", "joint") == "joint"

    @staticmethod
    def _norms(context: PruningContext, layer: int) -> list[torch.Tensor]:
        """Per projection, each neuron's squared L2 norm of its slice."""
        return [part.to(context.dtype).pow(2).flatten(1).sum(1) for part in context.neuron_weights(layer)]

    def scores(self, context: PruningContext) -> list[torch.Tensor]:
        return [torch.sqrt(sum(self._norms(context, layer))) for layer in range(context.num_layers)]

    def select(self, context, scores, kept_fraction):
        if self.params.get("norm", "joint") == "joint":
            return super().select(context, scores, kept_fraction)
        keep = []
        for layer, joint in enumerate(scores):
            both = torch.stack(select_local(self._norms(context, layer), kept_fraction, context.min_width)).all(0)
            if int(both.sum()) < context.min_width:  # no layer vanishes: its best neurons by the joint norm stay
                both |= select_local([joint], 0.0, context.min_width)[0]
            keep.append(both)
        return keep
