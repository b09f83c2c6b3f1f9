"""Random pruning: the baseline the paper finds surprisingly hard to beat."""

from __future__ import annotations

import torch

from harness.method import PruningContext, PruningMethod
from harness.registry import METHODS


@METHODS.register("random")
class Random(PruningMethod):
    """Scores drawn once i.i.d. uniform from the job seed, frozen; local top-v along the schedule."""

    def attach(self, context: PruningContext) -> list[dict]:
        generator = torch.Generator().manual_seed(self.seed)
        self._scores = [torch.rand(width, generator=generator).to(context.device) for width in context.widths]
        return []

    def scores(self, context: PruningContext) -> list[torch.Tensor]:
        return self._scores
