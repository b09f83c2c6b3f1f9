"""The shared pruning machinery: masks on FFN activations, schedule, selection, removal.

A per-neuron mask multiplies the input of each FFN output projection (the neuron's
post-activation value; for GLU models act(gate) * up). That one multiply gates the
neuron's input row, bias and output column together, costs O(tokens * d_ff), and is
where learned-score methods get their straight-through gradient.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from harness.adapters import FFNLayer, ffn_layers, shrink_model
from harness.method import PruningMethod
from harness.selection import CubicSchedule, kept_count, select


class FFNPruner:
    def __init__(
        self,
        model: nn.Module,
        method: PruningMethod,
        schedule: CubicSchedule,
        min_width: int = 1,
        mask_update_every: int = 1,
    ):
        self.model = model
        self.method = method
        self.schedule = schedule
        self.min_width = min_width
        self.mask_update_every = max(1, mask_update_every)
        self.layers: list[FFNLayer] = ffn_layers(model)
        device = next(model.parameters()).device
        self.keep: list[torch.Tensor] = [torch.ones(layer.width, dtype=torch.bool, device=device) for layer in self.layers]
        self._forward_masks: list[torch.Tensor | None] = [None] * len(self.layers)
        self.token_mask: torch.Tensor | None = None  # (batch, seq) bool: non-padding tokens
        self.kept_fraction = 1.0
        self._hooks = [
            layer.output.register_forward_pre_hook(self._make_hook(layer.index)) for layer in self.layers
        ] if method.prunes else []

    # -- hooks ---------------------------------------------------------------------
    def _make_hook(self, index: int):
        def hook(module: nn.Module, args: tuple[Any, ...]):
            mask = self._forward_masks[index]
            if mask is None:
                return None
            hidden = args[0] * mask.to(args[0].dtype)
            if self.method.observes_activations and self.model.training:
                tokens = hidden if self.token_mask is None else hidden[self.token_mask]
                self.method.observe(index, tokens.reshape(-1, hidden.shape[-1]))
            return (hidden, *args[1:])

        return hook

    # -- training-time masks -------------------------------------------------------------
    @property
    def widths(self) -> list[int]:
        return [layer.width for layer in self.layers]

    def update(self, step: int) -> float:
        """Recompute masks for ``step`` (1-based) along the schedule; returns the kept fraction."""
        if not self.method.prunes:
            return 1.0
        self.kept_fraction = self.schedule.kept_fraction(step)
        if (step - 1) % self.mask_update_every == 0:
            with torch.no_grad():
                scores = self.method.scores(self)
            self.keep = self.method.keep_masks(self, scores, self.kept_fraction)
        self._forward_masks = [
            self.method.forward_mask(i, keep.float()) for i, keep in enumerate(self.keep)
        ]
        return self.kept_fraction

    def finalize(self) -> list[torch.Tensor]:
        """The final selection at the target kept fraction (exact counts), applied as
        fixed masks. Returns the kept neuron indices per layer."""
        if not self.method.prunes:
            return [torch.arange(width) for width in self.widths]
        with torch.no_grad():
            scores = self.method.final_scores(self)
        self.kept_fraction = self.schedule.final_kept
        self.keep = select(scores, self.kept_fraction, self.method.selection, self.min_width)
        self._forward_masks = [keep.float() for keep in self.keep]
        return [keep.nonzero().flatten().cpu() for keep in self.keep]

    def expected_kept(self) -> int:
        """Neurons the final selection keeps under the counting conventions."""
        final = self.schedule.final_kept
        if not self.method.prunes:
            return sum(self.widths)
        if self.method.selection == "global":
            return kept_count(final, sum(self.widths), self.min_width * len(self.layers))
        return sum(kept_count(final, width, self.min_width) for width in self.widths)

    # -- removal -------------------------------------------------------------------------
    def remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        self._forward_masks = [None] * len(self.layers)

    def shrink(self, keep: list[torch.Tensor]) -> list[int]:
        """Physically remove pruned neurons; the model is then a real smaller model."""
        self.remove_hooks()
        widths = shrink_model(self.model, keep)
        self.layers = ffn_layers(self.model)
        return widths
