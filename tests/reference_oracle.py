"""An oracle of the authors' training dynamics, written from their code with no harness code.

The reference (santacml/nn_pruning_uniqueness, on huggingface/nn_pruning) cannot run here:
it patches transformers 4.x modules and needs CUDA. This module rebuilds what its training
step does to a model's FFN neurons, in plain PyTorch, term by term, each citing the file
and function it reproduces:

- masks gate the *weights*: ``MaskedLinear.get_masked_weights_bias`` multiplies the mask
  into the weight (rows of c_fc / gate / up, columns of c_proj / down) and the input bias
  by ``(mask != 0)``; here through ``torch.nn.utils.parametrize`` on the real modules;
- the mask's gradient goes straight to the scores (``TopKBinarizer.backward``,
  ``ThresholdBinarizer.backward``): mask = binary + (S - S.detach()), one score per neuron
  shared by the layer's projections (``ChannelPruningModulePatcher.get_context_key`` gives
  c_fc's row mask and c_proj's column mask the same key);
- the sparsity schedule is ``ModelPatchingCoordinator.schedule_threshold``;
- penalties are ``GenericLinearPruningContextModule.regularization("l1")`` summed and
  divided by ``nummod`` in ``ModelPatchingCoordinator.regularization_loss``;
- GUM's redundancy is ``update_current_total_cos`` / ``update_running_cos`` /
  ``adjust_grad`` in utils.py, run after ``loss.backward()`` in
  ``PruningTrainer.training_step`` and used by the next step's penalty.

Selection counts follow the spec's measurement conventions (exact top-v, min_width,
ties to the lower index; r divided by the survivors k), which the harness documents as
its deliberate choice; the reference's alternatives are named in the README's fidelity
table. Everything runs in float64 so that the comparison measures the method, not
rounding.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize
from transformers.pytorch_utils import Conv1D

IGNORE = -100


# -- tiny models ------------------------------------------------------------------------------
def tiny_model(arch: str, seed: int = 0) -> nn.Module:
    """A 2-layer GPT-2 (Conv1D FFN) or Llama (GLU FFN), no dropout, float64."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if arch == "gpt2":
        config = GPT2Config(vocab_size=40, n_positions=32, n_embd=16, n_layer=2, n_head=2, n_inner=24,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
        model = GPT2LMHeadModel(config)
    else:
        config = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                             bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=False)
        model = LlamaForCausalLM(config)
    model.config.pad_token_id = 0
    return model.double().train()


def examples(count: int = 6, seed: int = 1) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) of different lengths: the padding must stay out of every term."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(count):
        length = 7 + (i * 3) % 6
        ids = torch.randint(1, 40, (length,), generator=generator).tolist()
        labels = [IGNORE] * 2 + ids[2:]  # a two-token "prompt" without loss, like a generation task
        rows.append((ids, labels))
    return rows


def collate(rows: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    """Right padding with id 0, attention 0 and label -100 (the HF data collator's layout)."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    attention = torch.zeros(len(rows), width, dtype=torch.long)
    for r, (ids, lab) in enumerate(rows):
        input_ids[r, :len(ids)] = torch.tensor(ids)
        labels[r, :len(ids)] = torch.tensor(lab)
        attention[r, :len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


# -- the FFN projections, named as the reference's model_structure.py does ----------------------
def ffn_projections(model: nn.Module, arch: str) -> list[tuple[list[nn.Module], nn.Module]]:
    """Per layer: (input projections, output projection)."""
    if arch == "gpt2":
        return [([block.mlp.c_fc], block.mlp.c_proj) for block in model.transformer.h]
    return [([layer.mlp.gate_proj, layer.mlp.up_proj], layer.mlp.down_proj) for layer in model.model.layers]


class _RowMask(nn.Module):
    """masked_nn.MaskedLinear: weight * mask with the neuron on the output axis; for an input
    projection also bias * (mask != 0) (``bias_mask: True``, SparseTrainingArguments)."""

    def __init__(self, holder: dict, layer: int, neuron_axis: int):
        super().__init__()
        self.holder, self.layer, self.axis = holder, layer, neuron_axis

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        mask = self.holder["masks"][self.layer]
        return weight * (mask.view(1, -1) if self.axis == 1 else mask.view(-1, 1))


class _BiasMask(nn.Module):
    def __init__(self, holder: dict, layer: int):
        super().__init__()
        self.holder, self.layer = holder, layer

    def forward(self, bias: torch.Tensor) -> torch.Tensor:
        return bias * (self.holder["masks"][self.layer] != 0).to(bias.dtype)  # no gradient to the score


def _neuron_axis(module: nn.Module, is_output: bool) -> int:
    """Axis of the weight that indexes neurons (GPT-2's Conv1D stores the transpose of Linear)."""
    if isinstance(module, Conv1D):
        return 0 if is_output else 1
    return 1 if is_output else 0


def _raw(module: nn.Module) -> torch.Tensor:
    """A gated module's own (unmasked) weight."""
    return module.parametrizations.weight.original


def gate_weights(model: nn.Module, arch: str, holder: dict) -> None:
    for layer, (inputs, output) in enumerate(ffn_projections(model, arch)):
        for proj in inputs:
            parametrize.register_parametrization(proj, "weight", _RowMask(holder, layer, _neuron_axis(proj, False)))
            if proj.bias is not None:
                parametrize.register_parametrization(proj, "bias", _BiasMask(holder, layer))
        parametrize.register_parametrization(output, "weight", _RowMask(holder, layer, _neuron_axis(output, True)))


# -- schedule and selection ----------------------------------------------------------------------
def kept_fraction(step: int, total: int, final: float, warmup_frac: float = 0.1) -> float:
    """patch_coordinator.schedule_threshold with initial_warmup 1, final_warmup 3
    (utils.args_to_hparams): threshold = final + (1 - final) * mul_coeff ** 3."""
    warmup = warmup_frac * total
    if step <= warmup:
        return 1.0
    if step > total - 3 * warmup or total - 4 * warmup <= 0:
        return final
    mul_coeff = 1.0 - (step - warmup) / (total - 4 * warmup)
    return final + (1.0 - final) * mul_coeff ** 3


def count(fraction: float, total: int, minimum: int = 0) -> int:
    """The spec's count: round half-up of v * n (after rounding to 6 decimals), at least ``minimum``."""
    value = math.floor(round(fraction * total, 6) + 0.5)
    return max(min(value, total), min(minimum, total))


def order(scores: torch.Tensor) -> list[int]:
    return sorted(range(scores.numel()), key=lambda i: (-float(scores[i]), i))


def local_top(scores: list[torch.Tensor], fraction: float, min_width: int = 1) -> list[torch.Tensor]:
    masks = []
    for s in scores:
        mask = torch.zeros(s.numel(), dtype=torch.float64)
        mask[order(s)[:count(fraction, s.numel(), min_width)]] = 1.0
        masks.append(mask)
    return masks


def global_top(scores: list[torch.Tensor], fraction: float, min_width: int = 1) -> list[torch.Tensor]:
    """One cut over all layers (utils.distribute_thresholds), each layer keeping its best
    ``min_width`` first (the spec's convention; the reference's global_topK has none)."""
    widths = [s.numel() for s in scores]
    budget = count(fraction, sum(widths), min_width * len(widths))
    masks = [torch.zeros(w, dtype=torch.float64) for w in widths]
    for s, m in zip(scores, masks):
        m[order(s)[:min_width]] = 1.0
    flat = [(-float(s[i]), layer_offset + i, layer, i)
            for layer, (s, layer_offset) in enumerate(zip(scores, [sum(widths[:k]) for k in range(len(widths))]))
            for i in range(s.numel())]
    left = budget - sum(int(m.sum()) for m in masks)
    for _, _, layer, i in sorted(flat):
        if left <= 0:
            break
        if masks[layer][i] == 0:
            masks[layer][i] = 1.0
            left -= 1
    return masks


def threshold_mask(score: torch.Tensor, tau: float, min_elements: float, d_model: int) -> torch.Tensor:
    """binarizer.ThresholdBinarizer.forward on the (d_ff x d_model) 1d_alt mask matrix whose
    rows are constant (masked_nn.MaskModule.mask: mask_scores[0].unsqueeze(-1) @ ones)."""
    matrix = score.view(-1, 1).expand(-1, d_model).reshape(-1)
    numel = matrix.numel()
    nb_min = int(min_elements * numel) + 1 if min_elements != 0 else 0
    mask = (torch.sigmoid(matrix) > tau).double()
    if mask.sum() < nb_min:
        k_threshold = matrix.kthvalue(max(numel - nb_min, 1)).values
        mask = (matrix > k_threshold).double()
    return mask.view(-1, d_model)[:, 0]


# -- the training loop -------------------------------------------------------------------------
@dataclass
class Trace:
    score_grads: list[list[torch.Tensor]] = field(default_factory=list)  # per step, per layer (before clipping)
    penalties: list[float] = field(default_factory=list)
    masks: list[list[torch.Tensor]] = field(default_factory=list)
    scores: list[torch.Tensor] = field(default_factory=list)  # after the last step
    ffn_weights: list[torch.Tensor] = field(default_factory=list)  # after the last step


def run(model: nn.Module, arch: str, method: str, params: dict, steps: int, sparsity: float, settings: dict,
        batch: dict[str, torch.Tensor]) -> Trace:
    """Train a copy of ``model`` the reference's way; every step sees ``batch``."""
    model = copy.deepcopy(model)
    projections = ffn_projections(model, arch)
    widths = [output.weight.shape[0 if isinstance(output, Conv1D) else 1] for _, output in projections]
    d_model = model.config.hidden_size
    final = 1.0 - sparsity
    learned = method in ("movement", "global_movement", "soft_movement", "gum")
    # mask_init constant 0 (SingleDimensionLinearPruningContextModule: torch.zeros); a random
    # method's frozen uniform scores (mask_init uniform + mask_frozen) from the job seed
    scores = [nn.Parameter(torch.zeros(w, dtype=torch.float64)) for w in widths] if learned else None
    if method == "random":
        generator = torch.Generator().manual_seed(0)
        frozen = [torch.rand(w, generator=generator).double() for w in widths]
    holder = {"masks": [torch.ones(w, dtype=torch.float64) for w in widths]}
    gate_weights(model, arch, holder)

    # patch_coordinator.create_optimizer_groups: no decay on biases and norms; the mask
    # scores in their own group (mask_scores_learning_rate, transformers AdamW's default
    # weight_decay 0).
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": settings["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    if learned:
        groups.append({"params": scores, "lr": params["score_lr"], "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=settings["lr"], betas=(settings["adam_beta1"], settings["adam_beta2"]),
                                  eps=settings["adam_eps"])
    warm = max(1, int(round(settings["warmup_frac"] * steps)))  # transformers' linear schedule with warm-up
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warm if s < warm else max(0.0, (steps - s) / max(1, steps - warm)))
    trained = [p for g in optimizer.param_groups for p in g["params"]]

    # GUM: utils.update_current_total_cos takes the masked post-activation of each MLP
    # (``all_neuron_outputs_fc``, the input of c_proj); padding stays out (the spec's rule).
    captured: list[torch.Tensor | None] = [None] * len(widths)
    token_mask = batch["attention_mask"].bool()
    for layer, (_, output) in enumerate(projections):
        output.register_forward_pre_hook(
            lambda _m, args, layer=layer: captured.__setitem__(layer, args[0][token_mask].detach().clone()))
    running = [torch.zeros(w, w, dtype=torch.float64) for w in widths]  # running_c_fc_sum (its diagonal: _norm)
    multiplier = [torch.ones(w, dtype=torch.float64) for w in widths]  # regu_mask_mult, initialised to ones
    nummod = sum(len(inputs) + 2 for inputs, _ in projections)  # per layer: the score module + each MaskedLinear

    trace = Trace()
    for step in range(1, steps + 1):
        v = kept_fraction(step, steps, final, settings["warmup_frac"])
        with torch.no_grad():
            if method == "magnitude":  # the joint norm over the neuron's weights (the harness default),
                norms = []  # of the unmasked weights (MagnitudeBinarizer reads MaskedLinear.weight)
                for inputs, output in projections:
                    parts = [_raw(p).pow(2).sum(dim=1 - _neuron_axis(p, False)) for p in inputs]
                    parts.append(_raw(output).pow(2).sum(dim=1 - _neuron_axis(output, True)))
                    norms.append(parts)
                binary = local_top([sum(parts).sqrt() for parts in norms], v)
                if params.get("norm") == "separate":  # group_magnitude: each MaskedLinear keeps its own top rows
                    binary = [torch.stack(local_top(parts, v)).prod(0) for parts in norms]  # survive in all
            elif method == "random":
                binary = local_top(frozen, v)
            elif method in ("movement",):
                binary = local_top([s.detach() for s in scores], v)
            elif method in ("global_movement", "gum"):
                binary = global_top([s.detach() for s in scores], v)
            elif method == "soft_movement":  # sigmoied_threshold: tau = 0.1 * (1 - mul_coeff^3), min = v_f
                progress = 1.0 if final >= 1 else (1.0 - v) / (1.0 - final)
                tau = params["threshold"] * progress
                binary = [threshold_mask(s.detach(), tau, final, d_model) for s in scores]
        trace.masks.append([b.clone() for b in binary])
        holder["masks"] = [b + (s - s.detach()) for b, s in zip(binary, scores)] if learned else binary

        loss = model(**batch).loss
        penalty = None
        if method == "gum":
            strength = params["lambda"] * v / final  # regu_lambda = final_lambda * threshold / final_threshold
            terms = [(torch.sigmoid(s) * m).sum() / s.numel() for s, m in zip(scores, multiplier)]  # regularization("l1")
            penalty = strength * sum(terms) / nummod  # regularization_loss: regu * lambdas[key] / nummod, n = 1
        elif method == "soft_movement":
            strength = params["l1_lambda"] * tau / params["threshold"]
            penalty = strength * sum(torch.sigmoid(s).sum() / s.numel() for s in scores) / nummod
        total = loss if penalty is None else loss + penalty
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if learned:
            trace.score_grads.append([s.grad.detach().clone() for s in scores])
        trace.penalties.append(penalty.item() if penalty is not None else float("nan"))
        if method == "gum":  # after backward: update_running_cos, then adjust_grad sets regu_mask_mult
            m = params["momentum"]
            for layer, acts in enumerate(captured):
                running[layer] = (1 - m) * running[layer] + m * (acts.T @ acts)
                norm = running[layer].diagonal().clamp_min(0).sqrt().view(-1, 1)
                sim = (running[layer] / (norm * norm.T + 1e-6)).abs()
                sim.fill_diagonal_(0)
                survivors = int(binary[layer].sum())  # the spec's k (the reference: d_ff * threshold)
                multiplier[layer] = sim.sum(dim=0) / survivors * params["lambda_u"] + 1
        torch.nn.utils.clip_grad_norm_(trained, settings["grad_clip"])
        optimizer.step()
        scheduler.step()
    if learned:
        trace.scores = [s.detach().clone() for s in scores]
    for inputs, output in projections:
        for proj in (*inputs, output):
            trace.ffn_weights.append(proj.parametrizations.weight.original.detach().clone())
    return trace
