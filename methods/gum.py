"""Globally Unique Movement (Santacroce et al. 2023): movement scores, one global top-v
cut, and a uniqueness-weighted L1 regularizer on the scores (method-spec.md, "gum").

    R = (1 / nummod) * sum over layers of (1/d_ff) * sum_j sigmoid(S_j) * (1 + lambda_u * r_j)
    loss += lambda(t) * R,  lambda(t) = lambda * v(t) / v_f  (or constant)
    r_j  = sum_{i != j} |cos(a_i, a_j)| / k   (k = surviving neurons of the layer)

As the reference trains it (``uniqueness_reg_mask`` with ``adjust_grad_lamb`` = lambda_u):
- the per-layer term is ``GenericLinearPruningContextModule.regularization("l1")`` with
  ``regu_mask_mult`` = 1 + lambda_u * r (nn_pruning/modules/masked_nn.py);
- the sum over layers is divided by ``nummod`` (``regularization_loss`` in
  nn_pruning/patch_coordinator.py), the number of patched modules it visits: per layer the
  shared score module and each MaskedLinear it gates -- 3 per layer for GPT-2 and GPT-Neo
  (c_fc, c_proj, one score module; the attention is not patched since
  ``attention_output_with_dense: 0`` in utils.py's ``args_to_hparams``), 4 for GLU models
  (gate, up, down). ``penalty_scale: per_layer`` (the mean over layers) is the ablation;
- r is computed after the backward pass (utils.py: ``update_running_cos`` then
  ``adjust_grad`` in ``PruningTrainer.training_step``) and re-weights the *next* step's
  penalty; the first step's multiplier is 1. ``redundancy_timing: current_step`` (the
  ablation) uses the current batch's r in the current step's penalty.

The cosines come from an exponential moving average of the Gram matrix AᵀA of the masked
post-activation outputs over non-padding tokens: new = (1 - m) old + m current (the
reference's ``running_cos_mult``). The squared norms are its diagonal, so one matrix holds
both. The spec's measurement convention divides by the survivors k, where the reference
divides by d_ff * v(t) (equal under local selection, not under global).
"""

from __future__ import annotations

from typing import Any

import torch

from harness.method import PruningContext
from harness.params import REQUIRED, Param
from harness.registry import METHODS
from harness.similarity import gram_matrix, mean_abs_cosine_to_others
from methods._movement import MovementScores


@METHODS.register("gum")
class GUM(MovementScores):
    """Globally Unique Movement: movement scores, global top-v, L1 on sigmoid(S) weighted by 1 + λ_u·(mean |cos| to survivors)."""

    version = 2  # 2: weight-gating STE, the reference's nummod scale, r from the previous step
    selection = "global"
    observes_activations = True
    defaults: dict[str, Any] = {
        **MovementScores.defaults,
        "lambda_u": Param(REQUIRED, "weight of the redundancy r in the penalty (no published default: sweep it)",
                          minimum=0.0, kind=float),
        "lambda": Param(2.0, "penalty strength λ (the reference's regu_lamb)", minimum=0.0),
        "momentum": Param(0.999, "EMA weight m of the current batch's Gram matrix", minimum=0.0, maximum=1.0,
                          min_open=True),
        "lambda_schedule": Param("reference", "reference: λ·v(t)/v_f; constant: λ", choices=("reference", "constant")),
        "selection": Param("global", "global top-v (GUM) or local (the regularizer alone, ablation)",
                           choices=("global", "local")),
        "penalty_scale": Param("reference", "reference: summed layer terms / nummod; per_layer: their mean (ablation)",
                               choices=("reference", "per_layer")),
        "redundancy_timing": Param("previous_step", "previous_step: r measured after the backward pass re-weights the "
                                   "next step (reference); current_step: this batch's r (ablation)",
                                   choices=("previous_step", "current_step")),
    }
    label_names = {"lambda_u": "λ_u", "lambda": "λ", "momentum": "m"}

    def __init__(self, params: dict[str, Any], seed: int):
        super().__init__(params, seed)
        self.selection = params.get("selection", "global")

    def attach(self, context: PruningContext) -> list[dict[str, Any]]:
        groups = super().attach(context)
        device = context.device
        self.gram = [torch.zeros(width, width, device=device, dtype=context.dtype) for width in context.widths]
        self.r = [torch.zeros(width, device=device, dtype=context.dtype) for width in context.widths]
        self._survivors = [torch.arange(width, device=device) for width in context.widths]
        self._batch_gram: list[torch.Tensor | None] = [None] * context.num_layers
        return groups

    def observe(self, layer: int, activations: torch.Tensor) -> None:
        # Pruned neurons output 0, so their Gram rows are 0: one matmul over the survivors
        # gives the same matrix at (k/d_ff)^2 of the cost.
        survivors = self._survivors[layer]
        acts = activations.detach()
        if survivors.numel() < acts.shape[1]:
            acts = acts.index_select(1, survivors)
        batch = gram_matrix(acts.to(self.gram[layer].dtype))
        previous = self._batch_gram[layer]
        self._batch_gram[layer] = batch if previous is None else previous + batch

    def training_masks(self, context, scores, kept_fraction):
        keep = super().training_masks(context, scores, kept_fraction)
        self._survivors = [mask.nonzero().flatten() for mask in keep]
        return keep

    @torch.no_grad()
    def _update_redundancy(self, context: PruningContext) -> None:
        """Fold this step's Gram matrices into the EMA, then recompute r per layer."""
        momentum = self.params["momentum"]
        for layer, gram in enumerate(self.gram):
            survivors = self._survivors[layer]
            batch, self._batch_gram[layer] = self._batch_gram[layer], None
            gram.mul_(1.0 - momentum)
            if batch is not None:
                if survivors.numel() == gram.shape[0]:
                    gram.add_(batch, alpha=momentum)
                else:
                    gram.index_put_((survivors.unsqueeze(1), survivors), batch.mul_(momentum), accumulate=True)
            self.r[layer] = mean_abs_cosine_to_others(gram, survivors.numel())

    def regularizer(self, context: PruningContext, kept_fraction: float) -> torch.Tensor:
        if self.params["redundancy_timing"] == "current_step":
            self._update_redundancy(context)
        strength = self.params["lambda"]
        if self.params["lambda_schedule"] == "reference":
            strength *= kept_fraction / context.final_kept
        lambda_u = self.params["lambda_u"]
        terms = torch.stack([(torch.sigmoid(score) * (1.0 + lambda_u * r)).sum() / score.numel()
                             for score, r in zip(self.movement, self.r)])
        if self.params["penalty_scale"] == "reference":
            return strength * terms.sum() / context.reference_module_count
        return strength * terms.mean()

    def after_backward(self, context: PruningContext) -> None:
        if self.params["redundancy_timing"] == "previous_step":
            self._update_redundancy(context)
