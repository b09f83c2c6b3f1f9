"""Masks, selection, schedule and physical removal."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from harness.adapters import ffn_layers
from harness.pruning import FFNPruner
from harness.registry import METHODS
from harness.selection import CubicSchedule, kept_count, select_global, select_local


def random_gpt2(n_layer: int = 3, n_inner: int = 48, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=100, n_positions=32, n_embd=16, n_layer=n_layer, n_head=2, n_inner=n_inner)
    return GPT2LMHeadModel(config).eval()


def pruner_for(model, method_name: str, sparsity: float, seed: int = 0, steps: int = 10) -> FFNPruner:
    method = METHODS.get(method_name)({}, seed)
    pruner = FFNPruner(model, method, CubicSchedule(steps, 1.0 - sparsity))
    pruner.attach()
    return pruner


@pytest.mark.parametrize("method_name", ["random", "magnitude"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_shrunk_model_matches_masked_model(method_name, sparsity):
    model = random_gpt2()
    pruner = pruner_for(model, method_name, sparsity)
    keep = pruner.finalize()
    ids = torch.randint(0, 100, (2, 12))
    with torch.no_grad():
        masked = model(ids).logits
        dense_params = sum(p.numel() for p in model.parameters())
        widths = pruner.shrink(keep)
        shrunk = model(ids).logits
    assert widths == [kept_count(1 - sparsity, 48)] * 3
    assert torch.allclose(masked, shrunk, atol=1e-4)
    # Each removed neuron takes a c_fc column, its c_fc bias entry and a c_proj row.
    removed = sum(48 - w for w in widths)
    assert dense_params - sum(p.numel() for p in model.parameters()) == removed * (16 + 1 + 16)
    # The mask really mattered: pruned logits differ from the dense model's.
    dense = random_gpt2()
    with torch.no_grad():
        assert not torch.allclose(dense(ids).logits, shrunk, atol=1e-4)


def test_magnitude_keeps_largest_norms_with_index_ties():
    model = random_gpt2(n_layer=1, n_inner=8)
    layer = ffn_layers(model)[0]
    with torch.no_grad():
        for proj in (layer.module.c_fc, layer.module.c_proj):
            proj.weight.zero_()
        norms = [3.0, 1.0, 5.0, 1.0, 1.0, 4.0, 0.5, 2.0]
        for i, n in enumerate(norms):
            layer.module.c_fc.weight[0, i] = n  # Conv1D c_fc: column i is neuron i
    pruner = pruner_for(model, "magnitude", sparsity=0.5)
    keep = pruner.finalize()[0].tolist()
    assert keep == [0, 2, 5, 7]
    # ties: keep 5 of 8 -> the three 1.0s compete for one place; index 1 wins
    keep5 = select_local(METHODS.get("magnitude")({}, 0).scores(pruner.context), 5 / 8)[0].nonzero().flatten().tolist()
    assert keep5 == [0, 1, 2, 5, 7]


def test_magnitude_uses_output_column_too():
    model = random_gpt2(n_layer=1, n_inner=4)
    layer = ffn_layers(model)[0]
    with torch.no_grad():
        layer.module.c_fc.weight.zero_()
        layer.module.c_proj.weight.zero_()
        layer.module.c_proj.weight[3, 0] = 10.0  # Conv1D c_proj: row i is neuron i
    scores = METHODS.get("magnitude")({}, 0).scores(pruner_for(model, "magnitude", 0.5).context)[0]
    assert scores.argmax().item() == 3 and scores[3].item() == pytest.approx(10.0)


def test_random_is_deterministic_per_seed_and_differs_across_seeds():
    def kept(seed):
        return [k.tolist() for k in pruner_for(random_gpt2(), "random", 0.5, seed=seed).finalize()]

    assert kept(1) == kept(1)
    assert kept(1) != kept(2)


def test_local_counts_and_round_half_up():
    assert kept_count(0.5, 1024) == 512
    assert kept_count(1 - 0.9, 1024) == 102  # 102.4
    assert kept_count(1 - 0.55, 10) == 5  # 4.5 -> 5 despite 1 - 0.55 = 0.44999...
    assert kept_count(0.01, 10, min_count=1) == 1
    masks = select_local([torch.rand(10), torch.rand(7)], 0.5)
    assert [int(m.sum()) for m in masks] == [5, 4]  # 3.5 -> 4


def test_global_selection_is_exact_and_non_uniform():
    scores = [torch.linspace(0, 1, 20), torch.linspace(2, 3, 20), torch.linspace(-2, -1, 20)]
    masks = select_global(scores, 0.4, min_width=2)
    widths = [int(m.sum()) for m in masks]
    assert sum(widths) == 24
    assert widths == [2, 20, 2]  # the best layer keeps everything, min_width protects the worst
    assert masks[2].nonzero().flatten().tolist() == [18, 19]  # its own best two


def test_global_ties_broken_by_index():
    scores = [torch.ones(4), torch.ones(4)]
    masks = select_global(scores, 0.5, min_width=0)
    assert masks[0].tolist() == [True] * 4 and masks[1].tolist() == [False] * 4


@pytest.mark.parametrize("step", [1, 10, 11, 25, 40, 69, 70, 71, 100])
def test_cubic_schedule_follows_formula(step):
    schedule = CubicSchedule(total_steps=100, final_kept=0.1)
    w = 10
    if step <= w:
        expected = 1.0
    elif step > 100 - 3 * w:
        expected = 0.1
    else:
        expected = 0.1 + 0.9 * (1 - (step - w) / (100 - 4 * w)) ** 3
    assert schedule.kept_fraction(step) == pytest.approx(expected)
    assert schedule.kept_fraction(40) == pytest.approx(0.1 + 0.9 * 0.5**3)


def test_masks_follow_schedule_during_updates():
    model = random_gpt2()
    pruner = pruner_for(model, "magnitude", 0.75, steps=100)
    for step in (1, 10, 40, 71, 100):
        v = pruner.before_step(step, None)
        assert [int(k.sum()) for k in pruner.keep] == [kept_count(v, 48)] * 3
    assert math.isclose(v, 0.25)


def test_dense_jobs_prune_nothing():
    from harness.pruning import NoPruning

    pruner = NoPruning()
    assert pruner.before_step(5, None) == 1.0 and pruner.penalty(1.0) is None and pruner.sparsity == 0.0
    assert "dense" not in METHODS  # a baseline, not a method
