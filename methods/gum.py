"""Globally Unique Movement (Santacroce et al. 2023): movement scores, one global top-v
cut, and a uniqueness-weighted L1 regularizer on the scores (method-spec.md, "gum").

    R = mean over layers of (1/d_ff) * sum_j sigmoid(S_j) * (1 + lambda_u * r_j)
    loss += lambda(t) * R,  lambda(t) = lambda * v(t) / v_f  (or constant)
    r_j  = sum_{i != j} |cos(a_i, a_j)| / k   (k = surviving neurons of the layer)

The cosines come from an exponential moving average of the Gram matrix A^T A of the
masked post-activation outputs over non-padding tokens: new = (1 - m) old + m current.
The squared norms are its diagonal (the EMA of sum_t a_ti^2), so one matrix holds both.
r is not differentiated: it only re-weights the penalty.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.registry import METHODS
from methods._movement import MovementScores

COS_EPS = 1e-6  # cos_ij = G_ij / (|a_i| |a_j| + eps), as in the uniqueness metric


def gram_matrix(acts: torch.Tensor, blocks: int = 4) -> torch.Tensor:
    """A^T A for acts (tokens, k), computing only the blocks on and above the diagonal
    (the rest is their transpose): about 5/8 of the plain product's FLOPs for 4 blocks."""
    width = acts.shape[1]
    if width < 256:  # small: one matmul is faster than the bookkeeping
        return acts.t() @ acts
    out = torch.empty(width, width, dtype=acts.dtype, device=acts.device)
    edges = [width * i // blocks for i in range(blocks + 1)]
    for start, end in zip(edges, edges[1:]):
        out[start:end, start:] = acts[:, start:end].t() @ acts[:, start:]
        out[end:, start:end] = out[start:end, end:].t()
    return out


def redundancy(gram: torch.Tensor, survivors: int) -> torch.Tensor:
    """r_j = sum_{i != j} |cos_ij| / survivors, from a Gram matrix (no gradient)."""
    norms = gram.diagonal().clamp_min(0).sqrt()
    cos_abs = torch.outer(norms, norms).add_(COS_EPS)
    torch.div(gram, cos_abs, out=cos_abs).abs_()  # in place: the d_ff x d_ff buffer is reused
    return (cos_abs.sum(1) - cos_abs.diagonal()) / max(survivors, 1)


@METHODS.register("gum")
class GUM(MovementScores):
    """Globally Unique Movement: movement scores, global top-v, L1 on sigmoid(S) weighted by 1 + λ_u·(mean |cos| to survivors)."""

    selection = "global"
    observes_activations = True
    required = ("lambda_u",)  # no published default: sweep it (e.g. 0.1, 1, 10)
    defaults: dict[str, Any] = {
        **MovementScores.defaults,
        "lambda": 2.0,
        "momentum": 0.999,  # EMA weight of the current batch: in effect the current batch
        "lambda_schedule": "reference",  # lambda * v(t) / v_f (the authors'), or "constant"
        "selection": "global",  # "local": the regularizer with local top-v (ablation)
    }
    choices = {"lambda_schedule": ("reference", "constant"), "selection": ("global", "local")}
    label_names = {"lambda_u": "λ_u", "lambda": "λ", "momentum": "m"}

    def __init__(self, params: dict[str, Any], seed: int):
        super().__init__(params, seed)
        self.selection = params.get("selection", "global")

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        super().check_params(params)
        lambda_u = params.get("lambda_u")
        if isinstance(lambda_u, bool) or not isinstance(lambda_u, (int, float)) or lambda_u < 0:
            raise ValueError(f"lambda_u: expected a number >= 0, got {lambda_u!r}")
        if not 0.0 < params.get("momentum", 0.999) <= 1.0:
            raise ValueError(f"momentum: expected a number in (0, 1], got {params['momentum']!r}")

    def attach(self, pruner) -> list[dict[str, Any]]:
        groups = super().attach(pruner)
        device = pruner.keep[0].device
        self.gram = [torch.zeros(width, width, device=device) for width in pruner.widths]
        self.r = [torch.zeros(width, device=device) for width in pruner.widths]
        self._survivors = [torch.arange(width, device=device) for width in pruner.widths]
        self._batch_gram: list[torch.Tensor | None] = [None] * len(pruner.widths)
        return groups

    def forward_mask(self, layer: int, binary_mask: torch.Tensor) -> torch.Tensor:
        self._survivors[layer] = binary_mask.nonzero().flatten()
        return super().forward_mask(layer, binary_mask)

    def observe(self, layer: int, activations: torch.Tensor) -> None:
        # Pruned neurons output 0, so their Gram rows are 0: one matmul over the survivors
        # gives the same matrix at (k/d_ff)^2 of the cost.
        survivors = self._survivors[layer]
        acts = activations.detach()
        if survivors.numel() < acts.shape[1]:
            acts = acts.index_select(1, survivors)
        batch = gram_matrix(acts.float())
        previous = self._batch_gram[layer]
        self._batch_gram[layer] = batch if previous is None else previous + batch

    @torch.no_grad()
    def _update_redundancy(self, layer: int) -> torch.Tensor:
        """Fold this step's Gram into the EMA, then recompute r for the layer."""
        momentum, gram, survivors = self.params["momentum"], self.gram[layer], self._survivors[layer]
        batch, self._batch_gram[layer] = self._batch_gram[layer], None
        gram.mul_(1.0 - momentum)
        if batch is not None:
            if survivors.numel() == gram.shape[0]:
                gram.add_(batch, alpha=momentum)
            else:
                gram.index_put_((survivors.unsqueeze(1), survivors), batch.mul_(momentum), accumulate=True)
        self.r[layer] = redundancy(gram, survivors.numel())
        return self.r[layer]

    def regularizer(self, pruner, step: int, kept_fraction: float) -> torch.Tensor:
        strength = self.params["lambda"]
        if self.params["lambda_schedule"] == "reference":
            strength *= kept_fraction / pruner.schedule.final_kept
        lambda_u = self.params["lambda_u"]
        terms = [
            (torch.sigmoid(score) * (1.0 + lambda_u * self._update_redundancy(layer))).sum() / score.numel()
            for layer, score in enumerate(self.movement)
        ]
        return strength * torch.stack(terms).mean()
