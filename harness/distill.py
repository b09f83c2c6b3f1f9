"""Knowledge distillation from the dense fine-tuned model (method-spec.md).

    loss = a_kd * KL(softmax(z_t / T) || softmax(z_s / T)) * T^2 + a_ce * CE

Both terms are averaged per target token over the positions that carry a label (no
padding, no prompt tokens). The reference uses ``batchmean`` over a (B, T, V) tensor,
which sums over positions and so weights KD about sequence-length times more than CE;
that is deliberately not copied.

The teacher is a job of its own: the dense job on the same model, task, seed and train
settings minus the distill keys (``harness.spec.teacher_spec``). Every executor schedules
it before its students, and students load the teacher's saved model, so a teacher is
trained once however many students share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from harness.params import ConfigError, Param
from harness.task import IGNORE_INDEX

# train-section keys (harness.sections); they appear in a job's train settings only when it
# distills (``distill: true``), so non-distilling jobs never depend on them.
SETTINGS: dict[str, Param] = {
    "distill": Param(False, "distil from the dense job fine-tuned on the same model, task, seed and settings"),
    "distill_alpha_kd": Param(0.5, "weight of the KL term", minimum=0.0),
    "distill_alpha_ce": Param(0.5, "weight of the cross-entropy term", minimum=0.0),
    "distill_temperature": Param(2.0, "softmax temperature T", minimum=0.0, min_open=True),
}
SWITCH = "distill"


@dataclass(frozen=True)
class DistillSettings:
    alpha_kd: float
    alpha_ce: float
    temperature: float

    @classmethod
    def from_section(cls, train: dict[str, Any]) -> DistillSettings:
        return cls(train["distill_alpha_kd"], train["distill_alpha_ce"], train["distill_temperature"])


def active(train: dict[str, Any]) -> bool:
    return bool(train.get(SWITCH))


def validate(train: dict[str, Any], field: str) -> None:
    if active(train) and train["distill_alpha_kd"] + train["distill_alpha_ce"] <= 0:
        raise ConfigError(f"{field}.distill_alpha_kd: with distill_alpha_ce it must weigh something; both are 0")


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      alpha_kd: float, alpha_ce: float, temperature: float) -> torch.Tensor:
    """The loss above for next-token logits (B, T, V) and labels (B, T) with IGNORE_INDEX
    where no loss is taken; position t predicts token t + 1."""
    targets = labels[:, 1:]
    scored = targets != IGNORE_INDEX
    student = student_logits[:, :-1][scored].float()  # (target tokens, V)
    teacher = teacher_logits[:, :-1][scored].float()
    ce = F.cross_entropy(student, targets[scored])
    log_student = F.log_softmax(student / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher / temperature, dim=-1)
    kd = (log_teacher.exp() * (log_teacher - log_student)).sum(-1).mean() * temperature**2
    return alpha_kd * kd + alpha_ce * ce


def distillation_loss_fn(teacher: nn.Module, settings: DistillSettings
                         ) -> Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]:
    """A ``loss_fn`` for ``harness.train.train``: the student's distillation loss on a batch."""
    teacher.eval().requires_grad_(False)

    def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {key: value for key, value in batch.items() if key != "labels"}
        with torch.no_grad():
            teacher_logits = teacher(**inputs).logits
        return distillation_loss(model(**inputs).logits, teacher_logits, batch["labels"], settings.alpha_kd,
                                 settings.alpha_ce, settings.temperature)

    return loss_fn
