"""The shared pruning machinery: masks on FFN neurons along the schedule, selection, removal.

Masks act through hooks on each FFN layer's projections (``harness.masking`` has the
gates and why they reproduce the authors' weight masks). A method without learned scores
needs one multiply: the mask times the output projection's input (the neuron's
post-activation value; act(gate) * up for GLU models), which equals masking its input
row, bias and output column in the forward pass and in every weight's gradient. A method
with learned scores also gates its input projection(s), so that its scores get the
reference's straight-through gradient.

The training loop talks to a pruner through four calls: ``before_step``, ``penalty``,
``after_backward`` and ``sparsity``; ``NoPruning`` is the dense jobs' pruner.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from harness.adapters import ffn_layers, hidden_size, shrink_model
from harness.masking import GateColumns, GateRows
from harness.method import PruningContext, PruningMethod
from harness.selection import CubicSchedule, kept_count


class NoPruning:
    """The pruner of a dense job: every neuron is kept, nothing is added to the loss."""

    sparsity = 0.0

    def before_step(self, step: int, token_mask: torch.Tensor | None) -> float:
        return 1.0

    def penalty(self, kept_fraction: float) -> torch.Tensor | None:
        return None

    def after_backward(self) -> None:
        pass


class FFNPruner:
    def __init__(
        self,
        model: nn.Module,
        method: PruningMethod,
        schedule: CubicSchedule,
        min_width: int = 1,
        mask_update_every: int = 1,
    ):
        self.model = model
        self.method = method
        self.schedule = schedule
        self.mask_update_every = max(1, mask_update_every)
        self.layers = ffn_layers(model)
        device = next(model.parameters()).device
        self.context = PruningContext(self.layers, schedule.final_kept, min_width, hidden_size(model.config), device)
        self.keep: list[torch.Tensor] = list(self.context.keep)
        self._masks: list[torch.Tensor | None] = [None] * len(self.layers)
        self._token_mask: torch.Tensor | None = None  # (batch, seq) bool: non-padding tokens
        self._scores: list[nn.Parameter] | None = None
        self._hooks: list[Any] = []
        self._sparsity: float | None = 0.0  # of the current masks; counted once per mask update

    # -- set-up ----------------------------------------------------------------------------
    def attach(self) -> list[dict[str, Any]]:
        """Let the method set up (learned scores, buffers) and install the mask hooks.
        Returns the method's extra optimizer parameter groups."""
        groups = self.method.attach(self.context)
        self._scores = self.method.learned_scores()
        gate_rows = self._scores is not None and self.method.ste == "weights"
        for layer in self.layers:
            self._hooks.append(layer.output.register_forward_pre_hook(self._output_hook(layer.index)))
            if gate_rows:
                self._hooks += [proj.register_forward_hook(self._input_hook(layer.index)) for proj in layer.inputs]
        return groups

    def _output_hook(self, index: int):
        def hook(module: nn.Module, args: tuple[Any, ...]):
            mask = self._masks[index]
            if mask is None:
                return None
            activation = args[0]
            mask = mask.to(activation.dtype)
            if self._scores is None:
                gated = activation * mask
            else:
                gated = GateColumns.apply(activation, mask, self._scores[index], self.method.ste == "activations")
            if self.method.observes_activations and self.model.training:
                tokens = gated if self._token_mask is None else gated[self._token_mask]
                self.method.observe(index, tokens.reshape(-1, gated.shape[-1]))
            return (gated, *args[1:])

        return hook

    def _input_hook(self, index: int):
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor):
            mask = self._masks[index]
            if mask is None:
                return None
            return GateRows.apply(output, mask.to(output.dtype), self._scores[index], module.bias)

        return hook

    @property
    def widths(self) -> list[int]:
        return [layer.width for layer in self.layers]

    # -- the training loop's calls ---------------------------------------------------------
    def before_step(self, step: int, token_mask: torch.Tensor | None) -> float:
        """Masks for ``step`` (1-based) along the schedule; returns the schedule's kept
        fraction v(t). ``token_mask`` marks the batch's non-padding tokens."""
        kept_fraction = self.schedule.kept_fraction(step)
        if (step - 1) % self.mask_update_every == 0:
            with torch.no_grad():
                scores = self.method.scores(self.context)
                self.keep = self.method.training_masks(self.context, scores, kept_fraction)
            self._sparsity = None
        self.context._advance(step, kept_fraction, self.keep)
        self._masks = [keep.float() for keep in self.keep]
        self._token_mask = token_mask
        return kept_fraction

    def penalty(self, kept_fraction: float) -> torch.Tensor | None:
        return self.method.regularizer(self.context, kept_fraction)

    def after_backward(self) -> None:
        self.method.after_backward(self.context)

    @property
    def sparsity(self) -> float:
        """The fraction of FFN neurons the current masks remove (not the schedule's target:
        a threshold method may differ from it)."""
        if self._sparsity is None:
            self._sparsity = 1.0 - sum(int(keep.sum()) for keep in self.keep) / sum(self.widths)
        return self._sparsity

    # -- the end of training ---------------------------------------------------------------
    def finalize(self) -> list[torch.Tensor]:
        """The final selection at the target kept fraction (exact counts), applied as
        fixed masks. Returns the kept neuron indices per layer."""
        final = self.schedule.final_kept
        with torch.no_grad():
            self.keep = self.method.select(self.context, self.method.final_scores(self.context), final)
        self._sparsity = None
        self.context._advance(self.context.step, final, self.keep)
        self._masks = [keep.float() for keep in self.keep]
        self._token_mask = None
        return [keep.nonzero().flatten().cpu() for keep in self.keep]

    def expected_kept(self) -> int:
        """Neurons the final selection keeps under the counting conventions."""
        final, widths = self.schedule.final_kept, self.widths
        if self.method.selection == "global":
            return kept_count(final, sum(widths), self.context.min_width * len(widths))
        return sum(kept_count(final, width, self.context.min_width) for width in widths)

    # -- removal ---------------------------------------------------------------------------
    def remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        self._masks = [None] * len(self.layers)

    def shrink(self, keep: list[torch.Tensor]) -> list[int]:
        """Physically remove pruned neurons; the model is then a real smaller model."""
        self.remove_hooks()
        widths = shrink_model(self.model, keep)
        self.layers = ffn_layers(self.model)
        return widths
