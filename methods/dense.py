"""The dense baseline: fine-tuned, nothing pruned."""

from __future__ import annotations

import torch

from harness.method import PruningMethod
from harness.registry import METHODS


@METHODS.register("dense")
class Dense(PruningMethod):
    """No pruning (sparsity 0): the fine-tuned baseline every table shows."""

    prunes = False

    def scores(self, pruner) -> list[torch.Tensor]:
        return [torch.ones(width) for width in pruner.widths]
