"""Random pruning: the baseline the paper finds surprisingly hard to beat."""

from __future__ import annotations

import torch

from harness.method import PruningMethod
from harness.registry import METHODS


@METHODS.register("random")
class Random(PruningMethod):
    """Scores drawn once i.i.d. uniform from the job seed, frozen; local top-v along the schedule."""

    def attach(self, pruner) -> list[dict]:
        generator = torch.Generator().manual_seed(self.seed)
        device = pruner.keep[0].device
        self._scores = [torch.rand(width, generator=generator).to(device) for width in pruner.widths]
        return []

    def scores(self, pruner) -> list[torch.Tensor]:
        return self._scores
