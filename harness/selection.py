"""Sparsity schedule and top-v selection: the counting conventions, stated once.

- v is the kept fraction of FFN neurons; sparsity = 1 - v.
- Local selection keeps round(v * d_ff) neurons in every layer; global selection keeps
  round(v * N) over all N FFN neurons, with at least ``min_width`` per layer.
  round() is round-half-up after rounding the product to 6 decimals, so float noise in
  ``1 - sparsity`` (0.44999999... for 0.55) cannot move a count.
- Ties are broken by neuron index: the lower index is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def kept_count(kept_fraction: float, total: int, min_count: int = 0) -> int:
    count = math.floor(round(kept_fraction * total, 6) + 0.5)
    return max(min(count, total), min(min_count, total))


@dataclass(frozen=True)
class CubicSchedule:
    """Kept fraction per step (method-spec.md): dense for the first W = warmup_frac * T
    steps, cubic decay to the final fraction by step T - 3W, then fixed.
    Steps count optimizer updates from 1 to T."""

    total_steps: int
    final_kept: float
    warmup_frac: float = 0.1

    def kept_fraction(self, step: int) -> float:
        total, final = self.total_steps, self.final_kept
        warmup = self.warmup_frac * total
        if step <= warmup:
            return 1.0
        if step > total - 3 * warmup or total - 4 * warmup <= 0:
            return final
        progress = 1.0 - (step - warmup) / (total - 4 * warmup)
        return final + (1.0 - final) * progress**3


def _ranking(scores: torch.Tensor) -> torch.Tensor:
    """Indices from best to worst; a stable sort keeps the lower index first among ties."""
    return torch.sort(scores.detach().float(), descending=True, stable=True).indices


def select_local(scores: list[torch.Tensor], kept_fraction: float, min_width: int = 1) -> list[torch.Tensor]:
    """Boolean keep-masks keeping the top round(v * d_ff) neurons of each layer."""
    masks = []
    for layer_scores in scores:
        keep = _ranking(layer_scores)[: kept_count(kept_fraction, layer_scores.numel(), min_width)]
        mask = torch.zeros(layer_scores.numel(), dtype=torch.bool, device=layer_scores.device)
        mask[keep] = True
        masks.append(mask)
    return masks


def select_global(scores: list[torch.Tensor], kept_fraction: float, min_width: int = 1) -> list[torch.Tensor]:
    """Boolean keep-masks keeping the top round(v * N) neurons over all layers.

    Each layer first reserves its own best ``min_width`` neurons (so no layer vanishes);
    the rest of the budget goes to the best remaining neurons across layers. The total
    kept count is exact.
    """
    widths = [s.numel() for s in scores]
    total = sum(widths)
    budget = kept_count(kept_fraction, total, min_width * len(scores))
    flat = torch.cat([s.detach().float().flatten() for s in scores])
    offsets = torch.tensor([0] + widths[:-1]).cumsum(0).tolist()
    keep = torch.zeros(total, dtype=torch.bool, device=flat.device)
    for offset, width in zip(offsets, widths):
        reserved = _ranking(flat[offset : offset + width])[: min(min_width, width)]
        keep[offset + reserved] = True
    remaining = budget - int(keep.sum())
    if remaining > 0:
        candidates = _ranking(flat.masked_fill(keep, float("-inf")))
        candidates = candidates[~keep[candidates]][:remaining]
        keep[candidates] = True
    return list(keep.split(widths))


def select(scores: list[torch.Tensor], kept_fraction: float, mode: str, min_width: int = 1) -> list[torch.Tensor]:
    if mode == "local":
        return select_local(scores, kept_fraction, min_width)
    if mode == "global":
        return select_global(scores, kept_fraction, min_width)
    raise ValueError(f"selection must be 'local' or 'global', got {mode!r}")
