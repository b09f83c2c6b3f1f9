"""FFN-neuron adapter: the only place that knows where each architecture keeps its FFN.

Neuron i of an FFN layer is output unit i of every *input* projection (GPT-2 ``c_fc``;
GLU ``gate_proj`` and ``up_proj``) together with input unit i of the *output*
projection (``c_proj`` / ``fc2`` / ``dense_4h_to_h`` / ``down_proj``). The output bias
is never pruned. GPT-2's ``Conv1D`` stores weights transposed relative to
``nn.Linear``; ``_neuron_major`` handles that once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D


@dataclass(frozen=True)
class ArchSpec:
    blocks: str  # dotted path to the list of decoder blocks
    mlp: str  # attribute of a block holding the FFN ("" = the block itself)
    inputs: tuple[str, ...]  # projections d_model -> d_ff
    output: str  # projection d_ff -> d_model
    width_attr: str  # config attribute holding d_ff


# Checked against transformers 5.x (models/<type>/modeling_<type>.py); every entry is
# tested on a tiny random model in tests/test_architectures.py and tests/test_export.py.
_GLU = ArchSpec("model.layers", "mlp", ("gate_proj", "up_proj"), "down_proj", "intermediate_size")
ARCHITECTURES: dict[str, ArchSpec] = {
    "gpt2": ArchSpec("transformer.h", "mlp", ("c_fc",), "c_proj", "n_inner"),  # Conv1D
    "gpt_neo": ArchSpec("transformer.h", "mlp", ("c_fc",), "c_proj", "intermediate_size"),
    "opt": ArchSpec("model.decoder.layers", "", ("fc1",), "fc2", "ffn_dim"),  # FFN lives in the block
    "gpt_neox": ArchSpec("gpt_neox.layers", "mlp", ("dense_h_to_4h",), "dense_4h_to_h", "intermediate_size"),  # Pythia
    "llama": _GLU,  # also SmolLM2
    "qwen2": _GLU,
    "qwen3": _GLU,
    "mistral": _GLU,
}


@dataclass
class FFNLayer:
    index: int
    module: nn.Module  # the module owning the projections
    spec: ArchSpec

    @property
    def inputs(self) -> list[nn.Module]:
        return [getattr(self.module, name) for name in self.spec.inputs]

    @property
    def output(self) -> nn.Module:
        return getattr(self.module, self.spec.output)

    @property
    def width(self) -> int:
        return _neuron_major(self.output, is_output=True).shape[0]

    def neuron_weights(self, include_bias: bool = False) -> list[torch.Tensor]:
        """The layer's per-neuron weight slices as (d_ff, ...) views: row i belongs to neuron i."""
        parts = [_neuron_major(proj, is_output=False) for proj in self.inputs]
        if include_bias:
            parts += [proj.bias.view(-1, 1) for proj in self.inputs if proj.bias is not None]
        parts.append(_neuron_major(self.output, is_output=True))
        return parts

    def neuron_parameters(self) -> list[tuple[nn.Parameter, int]]:
        """(parameter, neuron axis) for every parameter that holds per-neuron slices."""
        result = []
        for proj in self.inputs:
            result.append((proj.weight, 1 if isinstance(proj, Conv1D) else 0))
            if proj.bias is not None:
                result.append((proj.bias, 0))
        result.append((self.output.weight, 0 if isinstance(self.output, Conv1D) else 1))
        return result


def context_length(config, default: int | None = None) -> int | None:
    """The model's maximum sequence length (its position embeddings), or ``default`` when
    the config names none."""
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or default


def hidden_size(config) -> int:
    """The model width d_model: the other side of every neuron's weights."""
    return int(getattr(config, "hidden_size", None) or getattr(config, "n_embd"))


def architecture_of(model: nn.Module) -> ArchSpec:
    model_type = getattr(model.config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"model type '{model_type}' has no FFN adapter; supported: {', '.join(sorted(ARCHITECTURES))}"
        )
    return ARCHITECTURES[model_type]


def ffn_layers(model: nn.Module) -> list[FFNLayer]:
    spec = architecture_of(model)
    blocks = model.get_submodule(spec.blocks)
    return [
        FFNLayer(i, block.get_submodule(spec.mlp) if spec.mlp else block, spec) for i, block in enumerate(blocks)
    ]


def _neuron_major(proj: nn.Module, is_output: bool) -> torch.Tensor:
    """The projection's weight as a (d_ff, d_model) view, whatever its storage layout."""
    weight = proj.weight
    # nn.Linear stores (out, in); Conv1D stores (in, out).
    conv = isinstance(proj, Conv1D)
    neuron_on_rows = (conv and is_output) or (not conv and not is_output)
    return weight if neuron_on_rows else weight.t()


def _slice_projection(proj: nn.Module, keep: torch.Tensor, is_output: bool) -> nn.Module:
    """A new, smaller projection holding only the kept neurons."""
    keep = keep.to(proj.weight.device)
    weight = proj.weight.detach()
    if isinstance(proj, Conv1D):
        if is_output:  # (d_ff, d_model): rows are neurons, bias (d_model) kept whole
            new = Conv1D(weight.shape[1], len(keep))
            new.weight = nn.Parameter(weight[keep].clone())
            new.bias = nn.Parameter(proj.bias.detach().clone())
        else:  # (d_model, d_ff): columns are neurons
            new = Conv1D(len(keep), weight.shape[0])
            new.weight = nn.Parameter(weight[:, keep].clone())
            new.bias = nn.Parameter(proj.bias.detach()[keep].clone())
        return new.to(weight.device)
    has_bias = proj.bias is not None
    if is_output:  # Linear (d_model, d_ff)
        new = nn.Linear(len(keep), weight.shape[0], bias=has_bias, device=weight.device, dtype=weight.dtype)
        new.weight = nn.Parameter(weight[:, keep].clone())
        if has_bias:
            new.bias = nn.Parameter(proj.bias.detach().clone())
    else:  # Linear (d_ff, d_model)
        new = nn.Linear(weight.shape[1], len(keep), bias=has_bias, device=weight.device, dtype=weight.dtype)
        new.weight = nn.Parameter(weight[keep].clone())
        if has_bias:
            new.bias = nn.Parameter(proj.bias.detach()[keep].clone())
    return new


def shrink_model(model: nn.Module, keep: list[torch.Tensor]) -> list[int]:
    """Physically remove every neuron not in ``keep`` (sorted index tensors, one per
    layer). Returns the new per-layer widths and records them in the config."""
    layers = ffn_layers(model)
    if len(keep) != len(layers):
        raise ValueError(f"expected {len(layers)} keep-index tensors, got {len(keep)}")
    widths = []
    for layer, indices in zip(layers, keep):
        indices = torch.as_tensor(indices, dtype=torch.long).sort().values
        for name in layer.spec.inputs:
            setattr(layer.module, name, _slice_projection(getattr(layer.module, name), indices, is_output=False))
        setattr(layer.module, layer.spec.output, _slice_projection(layer.output, indices, is_output=True))
        widths.append(len(indices))
    set_ffn_widths(model.config, layers[0].spec, widths)
    return widths


def set_ffn_widths(config, spec: ArchSpec, widths: list[int]) -> None:
    """Uniform widths fit the stock config; non-uniform ones are recorded in
    ``ffn_widths`` (the exported model's config class reads them)."""
    if len(set(widths)) == 1:
        setattr(config, spec.width_attr, widths[0])
        if hasattr(config, "ffn_widths"):
            delattr(config, "ffn_widths")
    else:
        config.ffn_widths = list(widths)
        setattr(config, spec.width_attr, max(widths))
