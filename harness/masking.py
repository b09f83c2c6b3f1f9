"""Per-neuron masks on FFN layers, and the straight-through gradient of learned scores.

The authors' code gates the neuron's **weights** (``nn_pruning/modules/masked_nn.py``:
``MaskedLinear`` multiplies one mask value per neuron into the input row of ``c_fc``,
its bias by ``(mask != 0)``, and the input column of ``c_proj``; ``binarizer.py``'s
``TopKBinarizer.backward`` passes the mask's gradient straight to the score). With M the
binary mask and S the score, the score's gradient is the sum of W * dL/d(W masked) over
every weight it gates. Written per token, for neuron i with pre-activation h_i (input
bias b_i) and post-activation a_i:

    dL/dS_i = sum_t dL/dh'_ti * (h_ti - b_i)     (input row(s): c_fc, or gate and up)
            + sum_t dL/da'_ti * a_ti              (output column: c_proj / down_proj)

where h' = M*h and a' = M*a are the gated values. Gating the two places below gives
exactly this without building masked copies of the weights: the forward values equal
the masked-weight forward, the weight and bias gradients equal the masked-weight ones,
and a pruned neuron's score receives exactly zero task gradient (its a is 0 and the
gradient reaching its h is 0). Each gate saves the tensor it returns, which the next
operation (the activation, the output projection) keeps anyway: no extra memory.

``ste: activations`` (an ablation, the harness's behaviour before spec version 2) gates
the post-activation only, with the score gradient sum_t dL/da'_ti * a_ti computed from
the *ungated* activation: pruned neurons then receive gradient and can come back.
"""

from __future__ import annotations

import torch

STE_MODES = ("weights", "activations")


def _per_neuron_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over every axis but the last (batch and sequence): one value per neuron,
    accumulated in at least float32 (a bf16 sum over thousands of tokens is too coarse)."""
    return tensor.reshape(-1, tensor.shape[-1]).sum(0, dtype=torch.promote_types(tensor.dtype, torch.float32))


class GateRows(torch.autograd.Function):
    """h' = mask * h on an input projection's output h = W x + b, as if W's rows and b were
    masked: dh'/dS = h - b (``bias * (mask != 0)`` carries no score gradient)."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, mask: torch.Tensor, score: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
        gated = hidden * mask
        ctx.save_for_backward(gated, mask, bias if bias is not None else torch.empty(0))
        ctx.has_bias, ctx.score_dtype = bias is not None, score.dtype
        return gated

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        gated, mask, bias = ctx.saved_tensors
        grad_hidden = grad * mask
        # For a kept neuron gated == h; for a pruned one grad is 0, so gated's value is moot.
        grad_score = _per_neuron_sum(grad * gated)
        if ctx.has_bias:
            grad_score = grad_score - bias * _per_neuron_sum(grad)
        return grad_hidden, None, grad_score.to(ctx.score_dtype), None


class GateColumns(torch.autograd.Function):
    """a' = mask * a at the output projection's input, as if W's columns were masked:
    da'/dS = a. ``ungated_score_grad`` (the activations ablation) uses the ungated a."""

    @staticmethod
    def forward(ctx, activation: torch.Tensor, mask: torch.Tensor, score: torch.Tensor,
                ungated_score_grad: bool) -> torch.Tensor:
        gated = activation * mask
        # Under weight gating a pruned neuron's activation is already 0, so the gated
        # output (saved by the output projection too) serves for the score gradient.
        ctx.save_for_backward(activation if ungated_score_grad else gated, mask)
        ctx.score_dtype = score.dtype
        return gated

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        activation, mask = ctx.saved_tensors
        return grad * mask, None, _per_neuron_sum(grad * activation).to(ctx.score_dtype), None
