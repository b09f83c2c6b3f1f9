"""The engine's task interface: what every task in ``tasks/`` provides.

A task knows how to load its data (hub id + revision, or local files in the same
schema), turn examples into token ids with the loss on the right tokens, and evaluate
a (shrunk) model with metrics that declare their direction. The job knows tasks only
through this interface and the registry.

Evaluation has two roles: ``test`` (the task's ``eval_split``, what tables report) and
``validation`` (the task's ``validation_split``, capped by ``eval.validation_examples``,
what choices read: best variants, ★ marks).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from harness.params import Param, default_of
from harness.registry import first_line
from harness.types import Metric

IGNORE_INDEX = -100  # label value that carries no loss (prompt tokens, padding)
ROLES = ("test", "validation")

# The matrix's ``eval`` section, core part (features add theirs: harness.sections).
EVAL_SETTINGS: dict[str, Param] = {
    "max_examples": Param(200, "test examples scored (generation tasks)", minimum=1, off=0, off_doc="all"),
    "validation_examples": Param(32, "validation examples scored for choices (language modeling: blocks of "
                                     "max_length tokens)", minimum=1, off=0, off_doc="no validation evaluation"),
    "batch_size": Param(8, "evaluation batch size", minimum=1),
    "decoding": Param("greedy", "greedy, or beam (the authors' setting)", choices=("greedy", "beam")),
    "max_new_tokens": Param(0, "new tokens per generation", minimum=1, off=0, off_doc="the task's default"),
    "num_samples": Param(5, "sample generations stored per job", minimum=0),
    "extra_tasks": Param([], "evaluation-only tasks (e.g. lmeval:<task>) run on the shrunk model"),
}
BEAM_SETTINGS: dict[str, Param] = {  # only with decoding: beam (the authors' code)
    "num_beams": Param(10, "beams", minimum=1),
    "length_penalty": Param(0.9, "beam length penalty"),
    "no_repeat_ngram_size": Param(4, "no repeated n-grams of this size", minimum=0, off=0, off_doc="off"),
}


class MissingSplitError(ValueError):
    """The task's data has no such split (e.g. local files without a validation file)."""


@dataclass
class EvalResult:
    metrics: list[Metric]
    samples: list[dict[str, str]] = field(default_factory=list)  # prompt, reference, prediction
    protocol: dict[str, Any] = field(default_factory=dict)  # split, window, stride, decoding, ... stored with results


@dataclass
class TokenizedExample:
    """Token ids of one training or evaluation example and its labels."""

    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where no loss is taken


def collate(examples: list[TokenizedExample], pad_id: int) -> dict[str, torch.Tensor]:
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


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Task:
    """Base class. Subclasses set the class attributes and implement the methods below."""

    registry_name: ClassVar[str] = ""
    task_type: ClassVar[str] = "generation"  # "language_modeling" | "generation" | "evaluation_only"
    generated_data: ClassVar[bool] = False  # True: the default data is generated; results are labelled so
    # The one metric verdicts and claims use; the others are shown beside it. ``headline_metrics``:
    # what a short leaderboard shows for the task (its headline metric first).
    headline_metric: ClassVar[str] = ""
    headline_metrics: ClassVar[tuple[str, ...]] = ()
    # Every task parameter: a default value or a harness.params.Param; a matrix entry may override any of them.
    defaults: ClassVar[dict[str, Any]] = {}
    required: ClassVar[tuple[str, ...]] = ()
    # Task-specific defaults for the matrix's train/eval settings whose global default is 0
    # ("the task decides"), e.g. {"max_length": 512} and {"max_new_tokens": 64}.
    train_defaults: ClassVar[dict[str, Any]] = {}
    eval_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, name: str, params: dict[str, Any]):
        self.name = name
        self.params = {key: default_of(value) for key, value in params.items()}  # a declaration gives its default

    # -- identity -----------------------------------------------------------------
    def data_identity(self) -> dict[str, Any]:
        """What the data is: hub id + revision, or local paths with content hashes.

        Part of the job hash, so a changed data file makes a new job. Must not download
        anything (called while validating a matrix).
        """
        raise NotImplementedError

    # -- training -----------------------------------------------------------------
    def train_examples(self, tokenizer: Any, max_length: int) -> list[TokenizedExample]:
        """Tokenized training examples, truncated to ``max_length`` tokens."""
        raise NotImplementedError

    # -- evaluation ---------------------------------------------------------------
    def split_for(self, role: str) -> str | None:
        """The data split a role reads (None: the task has no such split)."""
        return self.params.get("eval_split" if role == "test" else "validation_split")

    def evaluate(self, model: torch.nn.Module, tokenizer: Any, settings: dict[str, Any], device: torch.device,
                 role: str = "test", max_length: int = 0) -> EvalResult:
        """Evaluate ``model`` (in memory, already shrunk) with the resolved eval settings on
        the split of ``role`` ("test" or "validation"); metrics carry that split's name.
        ``max_length`` is the job's training length (language modeling sizes its
        validation cap in blocks of it)."""
        raise NotImplementedError

    def eval_texts(self, tokenizer: Any, max_length: int, max_examples: int) -> list[TokenizedExample]:
        """Tokenized test examples (same loss masking as training), for analyses that
        need the evaluation split's activations (redundancy metrics)."""
        raise NotImplementedError

    @classmethod
    def describe(cls) -> str:
        return first_line(cls.__doc__)
