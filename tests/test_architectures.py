"""Every architecture in the adapter table: mask -> shrink keeps logits; tying respected."""

from __future__ import annotations

import pytest
import torch

from harness.adapters import ARCHITECTURES, ffn_layers
from harness.params import resolve_params
from harness.pruning import FFNPruner
from harness.registry import METHODS
from harness.selection import CubicSchedule, kept_count

VOCAB, D_FF = 64, 24


def tiny_config(model_type: str):
    """A tiny random config of the stock class (offline); ties as the real models do."""
    import transformers as tf

    common = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                  max_position_embeddings=64, intermediate_size=D_FF)
    configs = {
        "gpt2": lambda: tf.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=16, n_layer=3, n_head=2, n_inner=D_FF),
        "gpt_neo": lambda: tf.GPTNeoConfig(vocab_size=VOCAB, max_position_embeddings=64, hidden_size=16, num_layers=3,
                                           num_heads=2, intermediate_size=D_FF, window_size=8,
                                           attention_types=[[["global", "local"], 1], [["global"], 1]]),
        "opt": lambda: tf.OPTConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=3, ffn_dim=D_FF,
                                    num_attention_heads=2, max_position_embeddings=64, word_embed_proj_dim=16),
        # Pythia: untied output layer.
        "gpt_neox": lambda: tf.GPTNeoXConfig(**common, tie_word_embeddings=False),
        "llama": lambda: tf.LlamaConfig(**common, num_key_value_heads=1, tie_word_embeddings=True),  # SmolLM2-like
        "qwen2": lambda: tf.Qwen2Config(**common, num_key_value_heads=1, tie_word_embeddings=False),
        "qwen3": lambda: tf.Qwen3Config(**common, num_key_value_heads=1, head_dim=8, tie_word_embeddings=True),
        "mistral": lambda: tf.MistralConfig(**common, num_key_value_heads=1, tie_word_embeddings=False),
    }
    config = configs[model_type]()
    config.bos_token_id = config.eos_token_id = config.pad_token_id = 0  # inside the tiny vocabulary
    return config


def tiny_model(model_type: str, seed: int = 0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type)).eval()
    with torch.no_grad():  # random biases, so that slicing a bias wrongly shows in the logits
        for layer in ffn_layers(model):
            for proj in [*layer.inputs, layer.output]:
                if proj.bias is not None:
                    proj.bias.normal_(0, 0.5)
    return model


def pruner_with(model, method: str, sparsity: float, params: dict | None = None) -> FFNPruner:
    cls = METHODS.get(method)
    instance = cls(resolve_params(method, params or {}, cls.defaults, cls.required), seed=0)
    pruner = FFNPruner(model, instance, CubicSchedule(10, 1.0 - sparsity))
    pruner.attach()
    return pruner


def non_uniform_pruner(model, sparsity: float = 0.5) -> FFNPruner:
    """Global selection over random scores that favour later layers: widths differ."""
    pruner = pruner_with(model, "global_movement", sparsity)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for i, score in enumerate(pruner.method.movement):
            score.copy_(torch.randn(score.numel(), generator=generator) + i)
    return pruner


def tied(model) -> bool:
    return model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


ALL = sorted(ARCHITECTURES)


@pytest.mark.parametrize("model_type", ALL)
@pytest.mark.parametrize("uniform", [True, False], ids=["local", "global"])
def test_shrink_keeps_logits(model_type, uniform):
    model = tiny_model(model_type)
    was_tied = tied(model)
    assert was_tied == model.config.tie_word_embeddings
    pruner = pruner_with(model, "random", 0.5) if uniform else non_uniform_pruner(model)
    keep = pruner.finalize()
    expected_kept = pruner.expected_kept()
    ids = torch.randint(0, VOCAB, (2, 10))
    with torch.no_grad():
        dense_logits = tiny_model(model_type)(ids).logits
        masked = model(ids).logits
        widths = pruner.shrink(keep)
        shrunk = model(ids).logits
    assert torch.allclose(masked, shrunk, atol=1e-4)
    assert not torch.allclose(dense_logits, shrunk, atol=1e-4)  # the mask mattered
    assert sum(widths) == expected_kept
    assert [layer.width for layer in ffn_layers(model)] == widths
    if uniform:
        assert widths == [kept_count(0.5, D_FF)] * 3 and not hasattr(model.config, "ffn_widths")
    else:
        assert len(set(widths)) > 1 and model.config.ffn_widths == widths
    assert tied(model) == was_tied
