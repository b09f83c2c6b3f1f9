"""The engine's task interface: what every task in ``tasks/`` provides.

A task knows how to load its data (hub id + revision, or local files in the same
schema), turn examples into token ids with the loss on the right tokens, and evaluate
a (shrunk) model with metrics that declare their direction. The runner knows tasks only
through this interface and the registry.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

IGNORE_INDEX = -100  # label value that carries no loss (prompt tokens, padding)


@dataclass(frozen=True)
class Metric:
    name: str
    value: float
    higher_is_better: bool
    split: str = "test"


@dataclass
class EvalResult:
    metrics: list[Metric]
    samples: list[dict[str, str]] = field(default_factory=list)  # prompt, reference, prediction
    protocol: dict[str, Any] = field(default_factory=dict)  # split, window, stride, decoding, ... stored with results


@dataclass
class TrainExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where no loss is taken


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Task:
    """Base class. Subclasses set the class attributes and implement the three methods."""

    registry_name: ClassVar[str] = ""
    task_type: ClassVar[str] = "generation"  # "language_modeling" | "generation" | "evaluation_only"
    generated_data: ClassVar[bool] = False  # True: the default data is generated, label it so
    # Every task parameter with its default; a matrix entry may override any of them.
    defaults: ClassVar[dict[str, Any]] = {}
    required: ClassVar[tuple[str, ...]] = ()
    # Task-specific defaults for the matrix's train/eval settings whose global default is 0
    # ("the task decides"), e.g. {"max_length": 512} and {"max_new_tokens": 64}.
    train_defaults: ClassVar[dict[str, Any]] = {}
    eval_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, name: str, params: dict[str, Any]):
        self.name = name
        self.params = params

    # -- identity -----------------------------------------------------------------
    def data_identity(self) -> dict[str, Any]:
        """What the data is: hub id + revision, or local paths with content hashes.

        Part of the job hash, so a changed data file makes a new job. Must not download
        anything (called while validating a matrix).
        """
        raise NotImplementedError

    # -- training -----------------------------------------------------------------
    def train_examples(self, tokenizer: Any, max_length: int) -> list[TrainExample]:
        """Tokenized training examples, truncated to ``max_length`` tokens."""
        raise NotImplementedError

    # -- evaluation ---------------------------------------------------------------
    def evaluate(
        self, model: torch.nn.Module, tokenizer: Any, settings: dict[str, Any], device: torch.device
    ) -> EvalResult:
        """Evaluate ``model`` (in memory, already shrunk) with the resolved eval settings."""
        raise NotImplementedError

    def eval_texts(self, tokenizer: Any, max_length: int, max_examples: int) -> list[TrainExample]:
        """Tokenized evaluation examples (same loss masking as training), for analyses that
        need the evaluation split's activations (redundancy metrics)."""
        raise NotImplementedError

    @classmethod
    def describe(cls) -> str:
        from harness.registry import first_line

        text = first_line(cls.__doc__)
        return f"{text} [GENERATED DATA]" if cls.generated_data else text
