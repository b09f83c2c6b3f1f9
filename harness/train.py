"""The fine-tune-while-pruning loop. One loop, read top to bottom; methods act through
the pruner: its masks for the step, its penalty, and its look at the step after the
backward pass (GUM's redundancy)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn

from harness.compute import autocast
from harness.params import Param
from harness.pruning import FFNPruner, NoPruning
from harness.task import TokenizedExample, collate

# The matrix's ``train`` section, core part (features add theirs: harness.sections). The
# optimizer defaults are the authors' code's (method-spec.md).
SETTINGS: dict[str, Param] = {
    "steps": Param(200, "optimizer steps", minimum=1),
    "batch_size": Param(8, "examples per step", minimum=1),
    "lr": Param(5e-4, "AdamW learning rate of the weights", minimum=0.0, min_open=True),
    "weight_decay": Param(0.1, "AdamW weight decay (not on biases and LayerNorm)", minimum=0.0),
    "adam_beta1": Param(0.9, "AdamW β1", minimum=0.0, maximum=1.0, max_open=True),
    "adam_beta2": Param(0.999, "AdamW β2", minimum=0.0, maximum=1.0, max_open=True),
    "adam_eps": Param(1e-4, "AdamW ε", minimum=0.0, min_open=True),
    "grad_clip": Param(1.0, "gradient-norm clip over everything trained", minimum=0.0, min_open=True),
    "warmup_frac": Param(0.1, "LR warm-up and the schedule's dense phase W/T (the cubic decay needs 4W < T)",
                         minimum=0.0, maximum=0.25, max_open=True),
    "max_length": Param(0, "tokens per training example", minimum=2, off=0,
                        off_doc="the task's default, capped by the model's context"),
    "min_width": Param(1, "neurons every layer keeps, at least", minimum=1),
    "mask_update_every": Param(1, "steps between mask recomputations", minimum=1),
}


def batches(examples: list[TokenizedExample], batch_size: int, pad_id: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
    """Endless shuffled batches; each epoch is a new permutation from the job seed."""
    if not examples:
        raise ValueError("the task produced no training examples")
    generator = torch.Generator().manual_seed(seed)
    batch_size = min(batch_size, len(examples))
    while True:  # the last partial batch of an epoch is dropped: every batch has batch_size rows
        order = torch.randperm(len(examples), generator=generator).tolist()
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield collate([examples[i] for i in order[start : start + batch_size]], pad_id)


def optimizer_for(model: nn.Module, settings: dict[str, Any], extra_groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and LayerNorm (1-D parameters). Extra groups
    (a method's learned scores) keep their own learning rate and decay."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": settings["weight_decay"]},
        {"params": no_decay, "weight_decay": 0.0},
        *extra_groups,
    ]
    return torch.optim.AdamW(
        groups, lr=settings["lr"], betas=(settings["adam_beta1"], settings["adam_beta2"]), eps=settings["adam_eps"]
    )


def linear_warmup_decay(total_steps: int, warmup_frac: float) -> Callable[[int], float]:
    warmup = max(1, int(round(warmup_frac * total_steps)))

    def factor(step: int) -> float:  # step = number of scheduler steps taken so far
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


@dataclass
class TrainLog:
    curves: list[tuple[int, str, float]] = field(default_factory=list)
    final_loss: float = float("nan")


class Trainer:
    """One optimizer step of fine-tuning while pruning: the pruner's masks for the step, the
    loss (and the method's penalty), backward, the pruner's look after backward, clipping
    over everything trained, AdamW, the LR schedule."""

    def __init__(self, model: nn.Module, pruner: FFNPruner | NoPruning, settings: dict[str, Any], device: torch.device,
                 extra_groups: list[dict[str, Any]] = (), precision: str = "fp32",
                 loss_fn: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor] | None = None):
        self.model, self.pruner, self.settings, self.device = model, pruner, settings, device
        self.precision, self.loss_fn = precision, loss_fn
        self.optimizer = optimizer_for(model, settings, list(extra_groups))
        # Clip over everything the optimizer trains, learned scores included: the reference's
        # scores are model parameters, so its grad-norm clip covers them.
        self.trained = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, linear_warmup_decay(settings["steps"], settings["warmup_frac"]))

    def step(self, step: int, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        """(task loss, penalty or None, the learning rate it used) for optimizer step ``step`` (1-based)."""
        kept = self.pruner.before_step(step, batch["attention_mask"].bool())
        with autocast(self.precision, self.device):
            loss = self.loss_fn(self.model, batch) if self.loss_fn else self.model(**batch).loss
        penalty = self.pruner.penalty(kept)
        total = loss if penalty is None else loss + penalty
        # No finiteness check here: on a GPU it would wait for the forward pass in the middle
        # of every step. ``train`` checks the loss it reads back for its log anyway.
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.pruner.after_backward()
        torch.nn.utils.clip_grad_norm_(self.trained, self.settings["grad_clip"])
        self.optimizer.step()
        self.scheduler.step()
        return loss, penalty, lr


def train(
    model: nn.Module,
    examples: list[TokenizedExample],
    pruner: FFNPruner | NoPruning,
    settings: dict[str, Any],
    seed: int,
    pad_id: int,
    device: torch.device,
    extra_groups: list[dict[str, Any]] = (),
    precision: str = "fp32",
    on_step: Callable[[int, float, float], None] | None = None,
    loss_fn: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor] | None = None,
) -> TrainLog:
    """Fine-tune ``model`` for ``settings['steps']`` steps while ``pruner`` prunes it.

    ``loss_fn(model, batch)`` replaces the plain language-modeling loss (distillation).
    """
    trainer = Trainer(model, pruner, settings, device, extra_groups, precision, loss_fn)
    data = batches(examples, settings["batch_size"], pad_id, seed)
    log = TrainLog()
    model.train()
    for step in range(1, settings["steps"] + 1):
        batch = {key: value.to(device) for key, value in next(data).items()}
        loss, penalty, lr = trainer.step(step, batch)
        log.final_loss = loss.item()
        penalty_value = None if penalty is None else penalty.item()
        total = log.final_loss + (penalty_value or 0.0)
        if not math.isfinite(total):  # the step's update is thrown away with the job
            raise FloatingPointError(f"training loss is {total} at step {step}; job stopped, no metrics stored")
        sparsity = pruner.sparsity  # of the masks this step trained with
        log.curves += [(step, "loss", log.final_loss), (step, "sparsity", sparsity), (step, "lr", lr)]
        if penalty_value is not None:
            log.curves.append((step, "regularizer", penalty_value))
        if on_step:
            on_step(step, log.final_loss, sparsity)
    model.eval()
    return log
