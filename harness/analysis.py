"""Neuron-redundancy analysis of a (shrunk or dense) model over a task's evaluation split.

Two questions from the paper, asked of the neurons a model *kept*:

- **sensitivity** — how much the loss would change without the neuron. Default
  (``reference``, the authors' definition): |Σ_θ θ·∂L/∂θ| over the neuron's input row(s),
  their bias entries and its output column. ``activation``: |Σ_tokens a·∂L/∂a| over the
  neuron's post-activation output, the exact first-order estimate of removing it (it
  equals the output-column term alone). Absolute value per batch, summed over batches,
  divided by the number of examples.
- **uniqueness** — whether a near-duplicate survives. The Gram matrix AᵀA of the
  post-activation outputs and their squared norms are accumulated in float64 over every
  non-padding token (memory independent of the split size); cos_ij = G_ij / (‖a_i‖‖a_j‖ +
  1e-6). Neuron i is *redundant* when some j > i of the same layer has signed cos_ij ≥ τ,
  so a group of k identical neurons counts k − 1. Uniqueness = 1 − redundant / surviving,
  per layer, and pooled over all layers for the model.

Activations are the input of each FFN output projection (for GLU models act(gate)·up),
read by forward pre-hooks, where ``harness.pruning`` applies its masks. The model is
analysed as it is: every neuron it holds is a survivor (the runner analyses the model
after physical removal).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.adapters import FFNLayer, context_length, ffn_layers
from harness.task import TrainExample
from harness.train import collate

SENSITIVITY_KINDS = ("reference", "activation")
COS_EPS = 1e-6  # the reference's denominator guard


# -- uniqueness from accumulated statistics ---------------------------------------------
def cosine_matrix(gram: np.ndarray, sq_norms: np.ndarray) -> np.ndarray:
    """Signed cosine similarities of neurons from their Gram matrix and squared norms."""
    norms = np.sqrt(np.maximum(sq_norms, 0.0))
    return gram / (np.outer(norms, norms) + COS_EPS)


def redundancy(gram: np.ndarray, sq_norms: np.ndarray, threshold: float) -> tuple[int, np.ndarray]:
    """(redundant neurons, each neuron's max |cos| to the others; NaN for a lone neuron).

    Neuron i is redundant when a later neuron j > i has cos_ij ≥ threshold: of k
    identical neurons the last one is kept as the representative, k − 1 are redundant.
    """
    cos = cosine_matrix(gram, sq_norms)
    width = cos.shape[0]
    later = np.where(np.triu(np.ones((width, width), dtype=bool), k=1), cos, -np.inf)  # j > i only
    redundant = int((later >= threshold).any(axis=1).sum()) if width > 1 else 0
    others = np.abs(cos)
    np.fill_diagonal(others, -np.inf)
    max_abs = others.max(axis=1) if width > 1 else np.full(width, np.nan)
    return redundant, max_abs


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

    def metrics(self) -> list[dict[str, Any]]:
        """Model-level numbers as metric rows (split ``analysis``)."""
        rows = [
            ("uniqueness", self.uniqueness, True),
            ("redundant_neurons", float(self.redundant), False),
            # Higher: the kept neurons carry more of the loss (what sensitivity-based selection aims for).
            ("sensitivity_total", self.sensitivity_total, True),
            ("max_abs_cos_mean", self.mean_max_abs_cos, False),
        ]
        return [{"name": n, "value": v, "higher_is_better": h, "split": "analysis"} for n, v, h in rows if math.isfinite(v)]

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
                "cosine": "signed, Gram over non-padding tokens, float64; i redundant if some j > i has cos >= threshold"}


# -- the pass ---------------------------------------------------------------------------
@dataclass
class _LayerAccumulator:
    width: int
    gram: torch.Tensor
    sq_norms: torch.Tensor
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
    examples: list[TrainExample],
    pad_id: int,
    *,
    batch_size: int = 8,
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
                          torch.zeros(layer.width, dtype=torch.float64, device=device),
                          torch.zeros(layer.width, dtype=torch.float64, device=device))
        for layer in layers
    ]
    token_mask: list[torch.Tensor] = []  # the current batch's non-padding positions

    def make_hook(acc: _LayerAccumulator):
        def hook(_module: nn.Module, args: tuple[Any, ...]):
            hidden = args[0]
            tokens = hidden.detach()[token_mask[0]].double()  # (non-padding tokens, width)
            acc.gram += tokens.T @ tokens
            acc.sq_norms += tokens.pow(2).sum(0)
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
        redundant, max_abs = redundancy(acc.gram.cpu().numpy(), acc.sq_norms.cpu().numpy(), threshold)
        ids = neuron_ids[index] if neuron_ids is not None else list(range(acc.width))
        sens = (acc.sensitivity / len(examples)).cpu().numpy()
        results.append(LayerAnalysis(index, list(ids), sens, max_abs, redundant))
    return Analysis(results, threshold, sensitivity, len(examples), tokens_seen, split)


# -- settings and the runner's entry point ----------------------------------------------
def check_settings(settings: dict[str, Any], field: str) -> None:
    """Validate the analysis keys of a resolved ``eval`` section (ConfigError names the field).
    With the analysis off, its other settings are dropped so they cannot split jobs."""
    from harness.params import ConfigError

    if settings["analysis_examples"] < 0:
        raise ConfigError(f"{field}.analysis_examples: expected >= 0 (0 turns the analysis off), got {settings['analysis_examples']}")
    if not 0.0 < settings["uniqueness_threshold"] <= 1.0:
        raise ConfigError(f"{field}.uniqueness_threshold: expected a cosine in (0, 1], got {settings['uniqueness_threshold']}")
    if settings["sensitivity"] not in SENSITIVITY_KINDS:
        raise ConfigError(f"{field}.sensitivity: '{settings['sensitivity']}' is not allowed; allowed: {', '.join(SENSITIVITY_KINDS)}")
    if settings["analysis_examples"] == 0:
        settings.pop("uniqueness_threshold")
        settings.pop("sensitivity")


def analyze_task(model: nn.Module, tokenizer: Any, task: Any, settings: dict[str, Any], max_length: int,
                 neuron_ids: list[list[int]] | None = None) -> Analysis | None:
    """The analysis a job stores: ``settings`` is the job's resolved ``eval`` section.
    None when it is off (``analysis_examples: 0``) or the task has no evaluation texts."""
    count = int(settings.get("analysis_examples") or 0)
    if count <= 0:
        return None
    try:
        examples = task.eval_texts(tokenizer, max_length, count)
    except NotImplementedError:
        return None
    if not examples:
        return None
    split = str(getattr(task, "params", {}).get("eval_split", ""))
    return analyze_model(model, examples, tokenizer.pad_token_id, batch_size=int(settings.get("batch_size") or 8),
                         threshold=float(settings.get("uniqueness_threshold", 0.8)),
                         sensitivity=settings.get("sensitivity", "reference"), neuron_ids=neuron_ids, split=split)


def analyze_saved_model(model_name: str, task_name: str, examples: int, *, max_length: int = 0, batch_size: int = 8,
                        threshold: float = 0.8, sensitivity: str = "reference", device: str = "auto") -> Analysis:
    """``harness analyze``: a model alias, local folder (an exported pruned model) or hub
    id, analysed over ``examples`` evaluation examples of a task with default parameters."""
    from pathlib import Path

    from harness.models import load_model, resolve_model
    from harness.params import ConfigError, resolve_params
    from harness.registry import TASKS, UnknownNameError
    from harness.runner import Execution

    try:
        cls = TASKS.get(task_name)
    except UnknownNameError as error:
        raise ConfigError(f"--task: {error}") from None
    if cls.task_type == "evaluation_only":
        raise ConfigError(f"--task: '{task_name}' is evaluation-only and has no evaluation texts to analyse")
    task = cls(task_name, resolve_params("--task", {}, cls.defaults, cls.required))
    identity = resolve_model(model_name, "MODEL", Path.cwd())
    try:
        model, tokenizer = load_model(identity, Execution(device).torch_device())
    except (OSError, RuntimeError, ValueError) as error:
        raise ConfigError(f"MODEL: cannot load '{model_name}': {str(error).splitlines()[0]}") from None
    context = context_length(model.config, default=1024)
    length = min(max_length or cls.train_defaults.get("max_length") or 512, context)
    settings = {"analysis_examples": examples, "batch_size": batch_size, "uniqueness_threshold": threshold,
                "sensitivity": sensitivity}
    analysis = analyze_task(model, tokenizer, task, settings, length)
    if analysis is None:
        raise ConfigError(f"--task: '{task_name}' gave no evaluation examples to analyse")
    return analysis
