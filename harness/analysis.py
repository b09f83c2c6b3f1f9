"""Neuron-redundancy analysis of a (shrunk or dense) model over a task's evaluation split.

Two questions from the paper, asked of the neurons a model *kept*:

- **sensitivity** — how much the loss would change without the neuron. Default
  (``reference``, the authors' definition): |Σ_θ θ·∂L/∂θ| over the neuron's input row(s),
  their bias entries and its output column. ``activation``: |Σ_tokens a·∂L/∂a| over the
  neuron's post-activation output, the exact first-order estimate of removing it (it
  equals the output-column term alone). Absolute value per batch, summed over batches,
  divided by the number of examples.
- **uniqueness** — whether a near-duplicate survives. The Gram matrix AᵀA of the
  post-activation outputs (its diagonal: the squared norms) is accumulated in float64
  over every non-padding token (memory independent of the split size); cos_ij = G_ij /
  (‖a_i‖‖a_j‖ + 1e-6) (``harness.similarity``, shared with GUM). Neuron i is *redundant* when some j > i of the same layer has signed cos_ij ≥ τ,
  so a group of k identical neurons counts k − 1. Uniqueness = 1 − redundant / surviving,
  per layer, and pooled over all layers for the model.

Activations are the input of each FFN output projection (for GLU models act(gate)·up),
read by forward pre-hooks, where ``harness.pruning`` applies its masks. The model is
analysed as it is: every neuron it holds is a survivor (the job analyses the model after
physical removal), over the task's test split (``eval_split``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.adapters import FFNLayer, ffn_layers
from harness.params import Param
from harness.similarity import redundant_and_max_cos
from harness.task import TokenizedExample, collate
from harness.types import SPLIT_ANALYSIS, Metric

SENSITIVITY_KINDS = ("reference", "activation")

# eval-section keys (harness.sections); with analysis_examples 0 the others are dropped.
SETTINGS: dict[str, Param] = {
    "analysis_examples": Param(64, "test examples the redundancy analysis reads", minimum=1, off=0, off_doc="off"),
    "uniqueness_threshold": Param(0.8, "cosine at or above which a neuron has a surviving twin", minimum=0.0,
                                  maximum=1.0, min_open=True),
    "sensitivity": Param("reference", "reference: |Σ θ·∂L/∂θ| (the authors'); activation: |Σ a·∂L/∂a|",
                         choices=SENSITIVITY_KINDS),
    # The absolute value is taken per backward pass, so the batch size changes the number: the
    # reference's analysis runs its --batch_size (default 1) examples per pass.
    "sensitivity_batch_size": Param(1, "examples per backward pass of the analysis (|Σ| is taken per pass)",
                                    minimum=1),
}
SWITCH = "analysis_examples"


@dataclass(frozen=True)
class AnalysisSettings:
    examples: int
    threshold: float = 0.8
    sensitivity: str = "reference"
    batch_size: int = 1  # examples per backward pass

    @classmethod
    def from_section(cls, evaluation: dict[str, Any]) -> AnalysisSettings:
        return cls(int(evaluation.get(SWITCH) or 0), float(evaluation.get("uniqueness_threshold", 0.8)),
                   evaluation.get("sensitivity", "reference"), int(evaluation.get("sensitivity_batch_size") or 1))

    @property
    def enabled(self) -> bool:
        return self.examples > 0


def active(evaluation: dict[str, Any]) -> bool:
    return bool(evaluation.get(SWITCH))


# -- results ----------------------------------------------------------------------------
def _finite_mean(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


@dataclass
class LayerAnalysis:
    layer: int
    neuron_ids: list[int]  # original index of each surviving neuron
    sensitivity: np.ndarray  # per neuron
    max_abs_cos: np.ndarray  # per neuron (NaN when the layer has one neuron)
    redundant: int

    @property
    def width(self) -> int:
        return len(self.neuron_ids)

    @property
    def uniqueness(self) -> float:
        return 1.0 - self.redundant / self.width if self.width else float("nan")


@dataclass
class Analysis:
    layers: list[LayerAnalysis]
    threshold: float
    sensitivity_kind: str
    examples: int
    tokens: int  # non-padding tokens in the Gram matrices
    split: str = ""
    batch_size: int = 1  # examples per backward pass

    @property
    def surviving(self) -> int:
        return sum(layer.width for layer in self.layers)

    @property
    def redundant(self) -> int:
        return sum(layer.redundant for layer in self.layers)

    @property
    def uniqueness(self) -> float:
        """Pooled over layers (redundant / surviving over the whole model), not a mean of ratios."""
        return 1.0 - self.redundant / self.surviving if self.surviving else float("nan")

    @property
    def sensitivity_total(self) -> float:
        return float(sum(layer.sensitivity.sum() for layer in self.layers))

    @property
    def mean_max_abs_cos(self) -> float:
        return _finite_mean(np.concatenate([layer.max_abs_cos for layer in self.layers]) if self.layers else np.array([]))

    def metrics(self) -> list[Metric]:
        """Model-level numbers as metrics (split ``analysis``)."""
        rows = [
            ("uniqueness", self.uniqueness, True),
            ("redundant_neurons", float(self.redundant), False),
            # Higher: the kept neurons carry more of the loss (what sensitivity-based selection aims for).
            ("sensitivity_total", self.sensitivity_total, True),
            ("max_abs_cos_mean", self.mean_max_abs_cos, False),
        ]
        return [Metric(n, v, h, SPLIT_ANALYSIS) for n, v, h in rows if math.isfinite(v)]

    def layer_stats(self) -> list[tuple[int, str, float]]:
        stats = []
        for layer in self.layers:
            stats += [(layer.layer, "uniqueness", layer.uniqueness), (layer.layer, "redundant", float(layer.redundant)),
                      (layer.layer, "sensitivity_sum", float(layer.sensitivity.sum()))]
        return [s for s in stats if math.isfinite(s[2])]

    def neuron_stats(self) -> list[tuple[int, int, float | None, float | None]]:
        return [
            (layer.layer, neuron, float(s), float(c) if math.isfinite(c) else None)
            for layer in self.layers
            for neuron, s, c in zip(layer.neuron_ids, layer.sensitivity, layer.max_abs_cos)
        ]

    def layer_rows(self) -> list[dict[str, Any]]:
        """One row per layer plus a pooled ``all`` row: what ``harness analyze`` prints."""
        rows = [{"layer": layer.layer, "width": layer.width, "redundant": layer.redundant,
                 "uniqueness": layer.uniqueness, "sensitivity_sum": float(layer.sensitivity.sum()),
                 "max_abs_cos_mean": _finite_mean(layer.max_abs_cos)} for layer in self.layers]
        rows.append({"layer": "all", "width": self.surviving, "redundant": self.redundant, "uniqueness": self.uniqueness,
                     "sensitivity_sum": self.sensitivity_total, "max_abs_cos_mean": self.mean_max_abs_cos})
        return rows

    def protocol(self) -> dict[str, Any]:
        return {"split": self.split, "examples": self.examples, "tokens": self.tokens,
                "uniqueness_threshold": self.threshold, "sensitivity": self.sensitivity_kind,
                "sensitivity_batch_size": self.batch_size,
                "cosine": "signed, Gram over non-padding tokens, float64; i redundant if some j > i has cos >= threshold"}


# -- the pass ---------------------------------------------------------------------------
@dataclass
class _LayerAccumulator:
    width: int
    gram: torch.Tensor
    sensitivity: torch.Tensor
    activation: torch.Tensor | None = None  # this batch's post-activation output (for ``activation``)


def _neuron_terms(layer: FFNLayer) -> torch.Tensor:
    """Σ θ·∂L/∂θ per neuron over its input row(s), their biases and its output column."""
    total = None
    for parameter, axis in layer.neuron_parameters():
        if parameter.grad is None:
            continue
        product = parameter.detach().double() * parameter.grad.double()
        per_neuron = product if product.ndim == 1 else product.sum(dim=1 - axis)
        total = per_neuron if total is None else total + per_neuron
    return total if total is not None else torch.zeros(layer.width, dtype=torch.float64, device=layer.output.weight.device)


def analyze_model(
    model: nn.Module,
    examples: list[TokenizedExample],
    pad_id: int,
    *,
    batch_size: int = 1,
    threshold: float = 0.8,
    sensitivity: str = "reference",
    neuron_ids: list[list[int]] | None = None,
    split: str = "",
) -> Analysis:
    """Sensitivity and uniqueness of every FFN neuron ``model`` holds, over ``examples``.

    Runs forward and backward passes (the loss is the model's own, on the examples'
    labels); leaves the model's weights untouched and its gradients cleared.
    """
    if sensitivity not in SENSITIVITY_KINDS:
        raise ValueError(f"sensitivity must be one of {', '.join(SENSITIVITY_KINDS)}, got {sensitivity!r}")
    if not examples:
        raise ValueError("the analysis needs at least one evaluation example")
    layers = ffn_layers(model)
    device = next(model.parameters()).device
    accumulators = [
        _LayerAccumulator(layer.width, torch.zeros(layer.width, layer.width, dtype=torch.float64, device=device),
                          torch.zeros(layer.width, dtype=torch.float64, device=device))
        for layer in layers
    ]
    token_mask: list[torch.Tensor] = []  # the current batch's non-padding positions

    def make_hook(acc: _LayerAccumulator):
        def hook(_module: nn.Module, args: tuple[Any, ...]):
            hidden = args[0]
            tokens = hidden.detach()[token_mask[0]].double()  # (non-padding tokens, width)
            acc.gram += tokens.T @ tokens
            if sensitivity == "activation":
                hidden.retain_grad()
                acc.activation = hidden
            return None

        return hook

    # Only the FFN parameters need gradients: cheaper, and the embedding's gradient
    # (vocabulary-sized) is never built. Restored afterwards.
    saved = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    handles = [layer.output.register_forward_pre_hook(make_hook(acc)) for layer, acc in zip(layers, accumulators)]
    tokens_seen = 0
    try:
        for parameter, _ in saved:
            parameter.requires_grad_(False)
        for layer in layers:
            for parameter, _ in layer.neuron_parameters():
                parameter.requires_grad_(True)
        model.eval()  # no dropout: the analysis is of the model as evaluated
        model.zero_grad(set_to_none=True)
        for start in range(0, len(examples), batch_size):
            batch = {k: v.to(device) for k, v in collate(examples[start : start + batch_size], pad_id).items()}
            token_mask[:] = [batch["attention_mask"].bool()]
            tokens_seen += int(token_mask[0].sum())
            with torch.enable_grad():
                loss = model(**batch).loss
                if not torch.isfinite(loss):  # a batch without target tokens: no gradient signal
                    continue
                loss.backward()
            for layer, acc in zip(layers, accumulators):
                if sensitivity == "activation":
                    a = acc.activation
                    terms = (a.detach().double() * a.grad.double()).sum(dim=tuple(range(a.ndim - 1)))
                    acc.activation = None
                else:
                    terms = _neuron_terms(layer)
                acc.sensitivity += terms.abs()  # absolute value per batch, as the reference does
            model.zero_grad(set_to_none=True)
    finally:
        for handle in handles:
            handle.remove()
        for parameter, flag in saved:
            parameter.requires_grad_(flag)
        model.zero_grad(set_to_none=True)
        model.train(was_training)

    results = []
    for index, acc in enumerate(accumulators):
        redundant, max_abs = redundant_and_max_cos(acc.gram, threshold)
        ids = neuron_ids[index] if neuron_ids is not None else list(range(acc.width))
        sens = (acc.sensitivity / len(examples)).cpu().numpy()
        results.append(LayerAnalysis(index, list(ids), sens, max_abs.cpu().numpy(), redundant))
    return Analysis(results, threshold, sensitivity, len(examples), tokens_seen, split, batch_size)


# -- the job's entry point ----------------------------------------------------------------
def analyze_task(model: nn.Module, tokenizer: Any, task: Any, settings: AnalysisSettings, max_length: int,
                 neuron_ids: list[list[int]] | None = None) -> Analysis | None:
    """The analysis a job stores, over the first ``settings.examples`` test examples. None
    when it is off or the task has no evaluation texts."""
    if not settings.enabled:
        return None
    try:
        examples = task.eval_texts(tokenizer, max_length, settings.examples)
    except NotImplementedError:
        return None
    if not examples:
        return None
    split = str(getattr(task, "params", {}).get("eval_split", ""))
    return analyze_model(model, examples, tokenizer.pad_token_id, batch_size=settings.batch_size,
                         threshold=settings.threshold, sensitivity=settings.sensitivity, neuron_ids=neuron_ids,
                         split=split)
