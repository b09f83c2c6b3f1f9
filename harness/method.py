"""The engine's method interface: a pruning method scores FFN neurons, nothing more.

Torch-Pruning's split: a method says *how important* each neuron is (and may add a
training-time regularizer or learned scores); the engine (``harness.pruning``) owns
masks, the sparsity schedule, top-v selection (local or global) and physical removal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

from harness.selection import select

if TYPE_CHECKING:
    from harness.pruning import FFNPruner


class PruningMethod:
    """Base class; register subclasses with ``@METHODS.register("name")``."""

    registry_name: ClassVar[str] = ""
    selection: ClassVar[str] = "local"  # "local": top-v per layer; "global": one cut over all layers
    defaults: ClassVar[dict[str, Any]] = {}
    required: ClassVar[tuple[str, ...]] = ()
    prunes: ClassVar[bool] = True  # False only for the dense baseline
    # True: the engine calls observe() with every layer's masked activations each forward.
    observes_activations: ClassVar[bool] = False
    # Short parameter names for leaderboard labels, e.g. {"lambda_u": "λ_u"}.
    label_names: ClassVar[dict[str, str]] = {}
    # Allowed values of string parameters, checked when a matrix is validated.
    choices: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self, params: dict[str, Any], seed: int):
        self.params = params
        self.seed = seed

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Validate resolved parameters when a matrix is loaded: raise ValueError whose
        message starts with the parameter name. Default: ``choices``."""
        for key, allowed in cls.choices.items():
            if key in params and params[key] not in allowed:
                raise ValueError(f"{key}: '{params[key]}' is not allowed; allowed: {', '.join(allowed)}")

    def attach(self, pruner: FFNPruner) -> list[dict[str, Any]]:
        """Called once before training. Returns extra optimizer parameter groups
        (e.g. learned scores with their own learning rate)."""
        return []

    def scores(self, pruner: FFNPruner) -> list[torch.Tensor]:
        """One 1-D score tensor per FFN layer; higher = keep. Called at each mask update."""
        raise NotImplementedError

    def keep_masks(self, pruner: FFNPruner, scores: list[torch.Tensor], kept_fraction: float) -> list[torch.Tensor]:
        """Boolean keep-masks for one training step. Default: top-v of ``scores`` under
        ``selection``. A method may choose its training masks differently (a threshold);
        the final selection (``final_scores``) is always exact top-v."""
        return select(scores, kept_fraction, self.selection, pruner.min_width)

    def final_scores(self, pruner: FFNPruner) -> list[torch.Tensor]:
        """Scores for the final selection at the target sparsity (default: ``scores``)."""
        return self.scores(pruner)

    def forward_mask(self, layer: int, binary_mask: torch.Tensor) -> torch.Tensor:
        """The mask multiplied into the layer's activations this step. Learned-score
        methods return a straight-through version connected to their scores."""
        return binary_mask

    def observe(self, layer: int, activations: torch.Tensor) -> None:
        """Masked post-activation outputs of ``layer`` over non-padding tokens, shape
        (tokens, d_ff). Only called when ``observes_activations``."""

    def regularizer(self, pruner: FFNPruner, step: int, kept_fraction: float) -> torch.Tensor | None:
        """A term added to the training loss this step, or None."""
        return None

    @classmethod
    def label(cls, name: str, params: dict[str, Any]) -> str:
        """Leaderboard label: name plus the parameters that differ from the defaults."""
        shown = {k: v for k, v in sorted(params.items()) if k in cls.required or cls.defaults.get(k) != v}
        if not shown:
            return name
        inner = ",".join(f"{cls.label_names.get(k, k)}={_fmt(v)}" for k, v in shown.items())
        return f"{name}({inner})"


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
