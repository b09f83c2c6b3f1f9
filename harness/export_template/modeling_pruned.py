"""A stock transformers causal LM whose FFN layers have per-layer widths.

Written by `harness export` for a pruned model whose layers kept different numbers of
FFN neurons. It builds the stock architecture named by BASE_MODEL, then resizes every
layer's FFN projections to ``config.ffn_widths`` before from_pretrained loads the weights.
"""

import transformers
from torch import nn
from transformers.pytorch_utils import Conv1D

from .configuration_pruned import PrunedConfig

BASE_MODEL = "PreTrainedModel"  # the stock model class; harness export fills it in


def _resized(proj: nn.Module, width: int, is_output: bool) -> nn.Module:
    """An uninitialised projection like ``proj`` with ``width`` FFN neurons."""
    weight = proj.weight
    if isinstance(proj, Conv1D):  # GPT-2 stores (in, out)
        return Conv1D(weight.shape[1], width) if is_output else Conv1D(width, weight.shape[0])
    bias = proj.bias is not None
    if is_output:
        return nn.Linear(width, proj.out_features, bias=bias, device=weight.device, dtype=weight.dtype)
    return nn.Linear(proj.in_features, width, bias=bias, device=weight.device, dtype=weight.dtype)


class PrunedForCausalLM(getattr(transformers, BASE_MODEL)):
    config_class = PrunedConfig

    def __init__(self, config):
        super().__init__(config)
        layout = config.ffn_layout
        for block, width in zip(self.get_submodule(layout["blocks"]), config.ffn_widths):
            ffn = block.get_submodule(layout["mlp"]) if layout["mlp"] else block
            for name in layout["inputs"]:
                setattr(ffn, name, _resized(getattr(ffn, name), width, is_output=False))
            setattr(ffn, layout["output"], _resized(getattr(ffn, layout["output"]), width, is_output=True))
