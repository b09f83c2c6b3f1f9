"""The fine-tune-while-pruning loop. One loop, read top to bottom; methods act through
the pruner (masks, scores) and the regularizer hook."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn

from harness.pruning import FFNPruner
from harness.task import IGNORE_INDEX, TrainExample


def collate(examples: list[TrainExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding has attention 0 and label IGNORE_INDEX."""
    length = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(examples), length), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        attention[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def batches(examples: list[TrainExample], batch_size: int, pad_id: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
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


def train(
    model: nn.Module,
    examples: list[TrainExample],
    pruner: FFNPruner,
    settings: dict[str, Any],
    seed: int,
    pad_id: int,
    device: torch.device,
    extra_groups: list[dict[str, Any]] = (),
    on_step: Callable[[int, float, float], None] | None = None,
    loss_fn: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor] | None = None,
) -> TrainLog:
    """Fine-tune ``model`` for ``settings['steps']`` steps while ``pruner`` prunes it.

    ``loss_fn(model, batch)`` replaces the plain language-modeling loss (distillation).
    """
    steps = settings["steps"]
    optimizer = optimizer_for(model, settings, list(extra_groups))
    # Clip over everything the optimizer trains, learned scores included: the reference's
    # scores are model parameters, so its grad-norm clip covers them.
    trained = [p for group in optimizer.param_groups for p in group["params"]]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(steps, settings["warmup_frac"]))
    data = batches(examples, settings["batch_size"], pad_id, seed)
    log = TrainLog()
    model.train()
    for step in range(1, steps + 1):
        batch = {key: value.to(device) for key, value in next(data).items()}
        kept = pruner.update(step)
        pruner.token_mask = batch["attention_mask"].bool()

        loss = loss_fn(model, batch) if loss_fn else model(**batch).loss
        penalty = pruner.method.regularizer(pruner, step, kept)
        total = loss if penalty is None else loss + penalty
        if not torch.isfinite(total):
            raise FloatingPointError(f"training loss is {total.item()} at step {step}; job stopped, no metrics stored")

        lr = optimizer.param_groups[0]["lr"]
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(trained, settings["grad_clip"])
        optimizer.step()
        scheduler.step()

        log.final_loss = loss.item()
        log.curves += [(step, "loss", log.final_loss), (step, "sparsity", 1.0 - kept),
                       (step, "lr", lr)]
        if penalty is not None:
            log.curves.append((step, "regularizer", penalty.item()))
        if on_step:
            on_step(step, log.final_loss, 1.0 - kept)
    pruner.token_mask = None
    model.eval()
    return log
