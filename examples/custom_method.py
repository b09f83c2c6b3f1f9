"""Add a pruning method: score FFN neurons by their mean absolute activation.

Drop this file into methods/ -- or ship it in your own package with an entry point
(group "harness.methods", e.g. activation_norm = my_package.module:ActivationNorm) --
and list it in a matrix: `methods: [activation_norm]`. The engine does the rest: masks,
the cubic schedule, top-v selection and physical removal.
"""

import torch

from harness.method import PruningMethod
from harness.registry import METHODS


@METHODS.register("activation_norm")
class ActivationNorm(PruningMethod):
    """Score = running mean |activation| of the neuron over training tokens; local top-v."""

    observes_activations = True  # the engine calls observe() on every training forward
    defaults = {"momentum": 0.1}  # parameters a matrix may set, with their defaults

    def attach(self, context):  # a read-only view: widths, device, final kept fraction, step, ...
        self.norms = [torch.zeros(width, device=context.device) for width in context.widths]
        return []  # no extra optimizer parameter groups

    def observe(self, layer, activations):  # (non-padding tokens, d_ff), after the mask
        momentum = self.params["momentum"]
        self.norms[layer].mul_(1 - momentum).add_(activations.detach().abs().mean(0), alpha=momentum)

    def scores(self, context):  # one tensor per layer; the highest are kept
        return self.norms
