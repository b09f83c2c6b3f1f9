"""The engine's method interface: a pruning method scores FFN neurons, nothing more.

Torch-Pruning's split: a method says *how important* each neuron is (and may add learned
scores, a training-time penalty, or its own training masks); the engine
(``harness.pruning``) owns masks, the straight-through gradient, the sparsity schedule,
top-v selection (local or global) and physical removal. A method sees the model only
through a read-only ``PruningContext``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from harness.adapters import FFNLayer
from harness.params import as_param, default_of
from harness.selection import select


class PruningContext:
    """What a method may read: the FFN layers' shapes and weights, the schedule's target,
    the counting conventions, and where training stands. The engine advances it."""

    def __init__(self, layers: list[FFNLayer], final_kept: float, min_width: int, hidden_size: int,
                 device: torch.device):
        self._layers = layers
        self.widths: tuple[int, ...] = tuple(layer.width for layer in layers)
        self.final_kept = final_kept  # v_f, the kept fraction the job ends at
        self.min_width = min_width  # neurons every layer keeps, at least
        self.hidden_size = hidden_size  # d_model: the other side of each neuron's weights
        self.device = device
        # Learned scores and their statistics: float32, or float64 for a float64 model.
        self.dtype = torch.float64 if layers and layers[0].output.weight.dtype == torch.float64 else torch.float32
        # The authors' ``nummod`` (nn_pruning/patch_coordinator.py, regularization_loss): per
        # layer one shared score module plus one MaskedLinear per gated projection.
        self.reference_module_count = sum(len(layer.spec.inputs) + 2 for layer in layers)
        self._step, self._kept_fraction = 0, 1.0
        self._keep: tuple[torch.Tensor, ...] = tuple(torch.ones(w, dtype=torch.bool, device=device) for w in self.widths)

    @property
    def num_layers(self) -> int:
        return len(self.widths)

    @property
    def step(self) -> int:
        """The current optimizer step (1-based; 0 before training)."""
        return self._step

    @property
    def kept_fraction(self) -> float:
        """The schedule's kept fraction v(t) at the current step."""
        return self._kept_fraction

    @property
    def keep(self) -> tuple[torch.Tensor, ...]:
        """This step's boolean keep-mask per layer."""
        return self._keep

    def neuron_weights(self, layer: int) -> list[torch.Tensor]:
        """Layer ``layer``'s weights as detached (d_ff, ...) views, one per projection
        (input projections first, then the output projection): row i is neuron i's."""
        return [part.detach() for part in self._layers[layer].neuron_weights()]

    def _advance(self, step: int, kept_fraction: float, keep: list[torch.Tensor]) -> None:
        self._step, self._kept_fraction, self._keep = step, kept_fraction, tuple(keep)


class PruningMethod:
    """Base class; register subclasses with ``@METHODS.register("name")``."""

    registry_name: ClassVar[str] = ""
    # Bump when the method's default training dynamics change: it is part of every job's
    # identity, so results of an older version are never taken for the new ones.
    version: ClassVar[int] = 1
    selection: ClassVar[str] = "local"  # "local": top-v per layer; "global": one cut over all layers
    # Parameters a matrix may set: a default value, or a harness.params.Param with its range.
    defaults: ClassVar[dict[str, Any]] = {}
    required: ClassVar[tuple[str, ...]] = ()  # names of required parameters declared without a Param
    # True: the engine calls observe() with every layer's masked activations each forward.
    observes_activations: ClassVar[bool] = False
    # Short parameter names for leaderboard labels, e.g. {"lambda_u": "λ_u"}.
    label_names: ClassVar[dict[str, str]] = {}
    # False when select() may keep fewer neurons than the counting conventions say.
    exact_counts: bool = True

    def __init__(self, params: dict[str, Any], seed: int):
        self.params = params
        self.seed = seed

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Checks across parameters, when a matrix is loaded (each parameter's own type and
        range are checked from its declaration): raise ValueError whose message starts
        with the parameter name."""

    def attach(self, context: PruningContext) -> list[dict[str, Any]]:
        """Called once before training. Returns extra optimizer parameter groups
        (e.g. learned scores with their own learning rate)."""
        return []

    def scores(self, context: PruningContext) -> list[torch.Tensor]:
        """One 1-D score tensor per FFN layer; higher = keep. Called at each mask update."""
        raise NotImplementedError

    def select(self, context: PruningContext, scores: list[torch.Tensor], kept_fraction: float) -> list[torch.Tensor]:
        """Boolean keep-masks for ``scores`` at ``kept_fraction``: top-v under ``selection``
        with the engine's counting conventions (harness.selection)."""
        return select(scores, kept_fraction, self.selection, context.min_width)

    def training_masks(self, context: PruningContext, scores: list[torch.Tensor],
                       kept_fraction: float) -> list[torch.Tensor]:
        """Keep-masks for one training step (default: ``select``). A method may train with
        other masks (a threshold); the final masks always come from ``select``."""
        return self.select(context, scores, kept_fraction)

    def final_scores(self, context: PruningContext) -> list[torch.Tensor]:
        """Scores for the final selection at the target sparsity (default: ``scores``)."""
        return self.scores(context)

    def learned_scores(self) -> list[nn.Parameter] | None:
        """Scores trained through the straight-through mask, one per layer, or None. The
        engine gates the neurons' weights with the binary mask and hands the gradient to
        these (harness.masking)."""
        return None

    @property
    def ste(self) -> str:
        """Where the straight-through mask sits: "weights" (the reference) or "activations"."""
        return self.params.get("ste", "weights")

    def observe(self, layer: int, activations: torch.Tensor) -> None:
        """Masked post-activation outputs of ``layer`` over non-padding tokens, shape
        (tokens, d_ff). Only called when ``observes_activations``."""

    def regularizer(self, context: PruningContext, kept_fraction: float) -> torch.Tensor | None:
        """A term added to the training loss this step, or None."""
        return None

    def after_backward(self, context: PruningContext) -> None:
        """Called after each step's backward pass, before the optimizer step."""

    @classmethod
    def label(cls, name: str, params: dict[str, Any]) -> str:
        """Leaderboard label: name plus the parameters that differ from the defaults."""
        def is_required(key: str) -> bool:
            return key in cls.required or (key in cls.defaults and as_param(cls.defaults[key]).required)

        shown = {k: v for k, v in sorted(params.items()) if is_required(k) or default_of(cls.defaults.get(k)) != v}
        if not shown:
            return name
        inner = ",".join(f"{cls.label_names.get(k, k)}={_fmt(v)}" for k, v in shown.items())
        return f"{name}({inner})"


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
