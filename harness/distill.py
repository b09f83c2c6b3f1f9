"""Knowledge distillation from the dense fine-tuned model (method-spec.md).

    loss = a_kd * KL(softmax(z_t / T) || softmax(z_s / T)) * T^2 + a_ce * CE

Both terms are averaged per target token over the positions that carry a label (no
padding, no prompt tokens). The reference uses ``batchmean`` over a (B, T, V) tensor,
which sums over positions and so weights KD about sequence-length times more than CE;
that is deliberately not copied.

The teacher is a job of its own: the dense job on the same model, task, seed and train
settings minus the distill keys (``teacher_spec``). Any runner or executor schedules it
before its students (``with_teachers``) and students load the teacher's saved model, so a
teacher is trained once however many students share it.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from harness.spec import JobSpec
from harness.task import IGNORE_INDEX

# train-section keys (merged into harness.config.TRAIN_DEFAULTS); they appear in a job's
# train settings only when it distills, so non-distilling jobs keep their hashes.
DISTILL_DEFAULTS: dict[str, Any] = {"distill": False, "distill_alpha_kd": 0.5, "distill_alpha_ce": 0.5,
                                    "distill_temperature": 2.0}
DENSE = {"name": "dense", "params": {}}


def check_settings(train: dict[str, Any], field: str) -> None:
    """Raise ValueError for distillation settings that make no sense."""
    if train.get("distill_temperature", 1.0) <= 0:
        raise ValueError(f"{field}.distill_temperature: must be > 0, got {train['distill_temperature']}")
    for key in ("distill_alpha_kd", "distill_alpha_ce"):
        if train.get(key, 0.0) < 0:
            raise ValueError(f"{field}.{key}: must be >= 0, got {train[key]}")


def without_distill(train: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in train.items() if key not in DISTILL_DEFAULTS}


def teacher_spec(spec: JobSpec) -> JobSpec | None:
    """The dense job whose fine-tuned model teaches ``spec``, or None if it does not distill."""
    if not spec.train.get("distill"):
        return None
    return JobSpec(spec.model, spec.task, dict(DENSE), 0.0, spec.seed, without_distill(spec.train), spec.eval)


def with_teachers(jobs: list[JobSpec]) -> list[JobSpec]:
    """``jobs`` plus every teacher they need (each once), teachers first."""
    teachers = {t.spec_hash: t for t in map(teacher_spec, jobs) if t is not None}
    return list(teachers.values()) + [job for job in jobs if job.spec_hash not in teachers]


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


def distillation_loss_fn(teacher: nn.Module, train: dict[str, Any]) -> Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]:
    """A ``loss_fn`` for ``harness.train.train``: the student's distillation loss on a batch."""
    teacher.eval().requires_grad_(False)

    def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {key: value for key, value in batch.items() if key != "labels"}
        with torch.no_grad():
            teacher_logits = teacher(**inputs).logits
        return distillation_loss(model(**inputs).logits, teacher_logits, batch["labels"], train["distill_alpha_kd"],
                                 train["distill_alpha_ce"], train["distill_temperature"])

    return loss_fn
