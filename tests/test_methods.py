"""Movement, GUM, global movement and soft movement: scores, STE, selection, regularizer."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from harness.adapters import ffn_layers
from harness.cli import main
from harness import sections
from harness.config import _method_variants
from harness.params import ConfigError, resolve_params
from harness.pruning import FFNPruner
from harness.registry import METHODS
from harness.selection import CubicSchedule, kept_count
from harness.similarity import COS_EPS
from harness.task import IGNORE_INDEX, TokenizedExample
from harness.train import train

TRAIN_DEFAULTS = sections.defaults("train")

VOCAB, D_FF = 50, 16


def tiny_gpt2(n_layer: int = 2, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=16, n_layer=n_layer, n_head=2, n_inner=D_FF,
                        bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config)


def method(name: str, **params):
    cls = METHODS.get(name)
    return cls(resolve_params(name, params, cls.defaults, cls.required), seed=0)


def attached(model, name: str, sparsity: float = 0.5, steps: int = 10, **params) -> FFNPruner:
    instance = method(name, **params)
    pruner = FFNPruner(model, instance, CubicSchedule(steps, 1.0 - sparsity))
    pruner.extra_groups = pruner.attach()
    return pruner


def top_v(scores: torch.Tensor, count: int) -> set[int]:
    """The definition, independently of harness.selection: best scores, lower index on ties."""
    order = sorted(range(scores.numel()), key=lambda i: (-float(scores[i]), i))
    return set(order[:count])


def random_examples(count: int = 32, length: int = 12) -> list[TokenizedExample]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, VOCAB, (count, length), generator=generator).tolist()
    return [TokenizedExample(row, row) for row in ids]


# -- movement ----------------------------------------------------------------------------------
def test_ste_on_activations_passes_the_mask_gradient_to_the_scores():
    """The ablation ``ste: activations`` (the default gates the weights: tests/test_parity.py)."""
    model = tiny_gpt2()
    pruner = attached(model, "movement", ste="activations")
    pruner.before_step(5, None)  # mid-schedule: some neurons pruned
    assert any(not bool(keep.all()) for keep in pruner.keep)
    ids = torch.randint(0, VOCAB, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    score_grads = [score.grad.clone() for score in pruner.method.movement]
    # Reference: the same binary masks as leaf tensors; their gradient is what the STE passes on.
    leaves = [keep.float().requires_grad_() for keep in pruner.keep]
    pruner._masks, pruner._scores = leaves, None  # the plain multiply by leaf masks
    model.zero_grad()
    model(input_ids=ids, labels=ids).loss.backward()
    for grad, leaf, keep in zip(score_grads, leaves, pruner.keep):
        assert torch.allclose(grad, leaf.grad, atol=1e-6)
        assert grad[~keep].abs().sum() > 0  # pruned neurons still learn: they can come back


@pytest.mark.parametrize("ste", ["weights", "activations"])
def test_movement_training_moves_scores_and_keeps_exact_top_v(ste):
    model = tiny_gpt2()
    pruner = attached(model, "movement", sparsity=0.75, steps=20, score_lr=0.05, ste=ste)
    selections = []
    original = pruner.method.training_masks

    def recording(p, scores, kept_fraction):
        masks = original(p, scores, kept_fraction)
        selections.append(([s.clone() for s in scores], masks, kept_fraction))
        return masks

    pruner.method.training_masks = recording
    settings = dict(TRAIN_DEFAULTS, steps=20, batch_size=4)
    train(model, random_examples(), pruner, settings, 0, 0, torch.device("cpu"), pruner.extra_groups)
    assert all(float(score.detach().abs().max()) > 0.05 for score in pruner.method.movement)
    for scores, masks, kept_fraction in selections:  # exactly top-v by score, every step
        for layer_scores, mask in zip(scores, masks):
            count = kept_count(kept_fraction, D_FF, 1)
            assert set(mask.nonzero().flatten().tolist()) == top_v(layer_scores, count)
    final_phase = {tuple(torch.cat(masks).tolist()) for _, masks, v in selections if v == 0.25}
    if ste == "activations":  # pruned neurons still get task gradient there, so the kept set keeps changing
        assert len(final_phase) > 1
    group = pruner.extra_groups[0]
    assert group["initial_lr"] == 0.05 and group["weight_decay"] == 0.0


# -- global selection --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gum", "global_movement"])
def test_global_selection_non_uniform_widths_exact_total(name):
    model = tiny_gpt2(n_layer=3)
    pruner = attached(model, name, sparsity=0.5, lambda_u=1.0) if name == "gum" else attached(model, name, 0.5)
    with torch.no_grad():
        for i, score in enumerate(pruner.method.movement):
            score.copy_(torch.linspace(-1, 1, D_FF) + 0.5 * (i - 1))  # later layers score higher
    keep = pruner.finalize()
    widths = [len(k) for k in keep]
    assert sum(widths) == kept_count(0.5, 3 * D_FF) == pruner.expected_kept()
    assert widths[0] < widths[1] < widths[2]


def test_gum_training_keeps_exact_global_counts():
    model = tiny_gpt2(n_layer=3)
    pruner = attached(model, "gum", sparsity=0.75, steps=10, lambda_u=1.0)
    counts = []
    original = pruner.method.training_masks
    pruner.method.training_masks = lambda p, s, v: counts.append((v, original(p, s, v))) or counts[-1][1]
    log = train(model, random_examples(), pruner, dict(TRAIN_DEFAULTS, steps=10, batch_size=4), 0, 0,
                torch.device("cpu"), pruner.extra_groups)
    for v, masks in counts:
        assert sum(int(m.sum()) for m in masks) == kept_count(v, 3 * D_FF, 3)
    assert any(name == "regularizer" for _, name, _ in log.curves)


# -- GUM's uniqueness regularizer ----------------------------------------------------------------
def synthetic_gum(lambda_u: float, widths=(4,), final_kept: float = 0.75, **params):
    """GUM attached to a stand-in context: the regularizer needs only widths and the schedule."""
    gum = method("gum", lambda_u=lambda_u, **params)
    context = SimpleNamespace(widths=tuple(widths), num_layers=len(widths), device=torch.device("cpu"),
                              dtype=torch.float32, final_kept=final_kept, min_width=1,
                              reference_module_count=3 * len(widths))
    groups = gum.attach(context)
    gum.training_masks(context, gum.scores(context), 1.0)  # every neuron survives
    return gum, context, groups


def twin_activations() -> torch.Tensor:
    """Neurons 0 and 1 identical, 2 and 3 unique (orthogonal to everything)."""
    x = torch.tensor([1.0, 2.0, 0, 0, 0, 0])
    y = torch.tensor([0, 0, 3.0, 1.0, 0, 0])
    z = torch.tensor([0, 0, 0, 0, 1.0, 1.0])
    return torch.stack([x, x, y, z], dim=1)  # (tokens, d_ff)


@pytest.mark.parametrize("lambda_u", [0.0, 10.0])
def test_gum_prunes_a_duplicate_before_an_equal_unique_neuron(lambda_u):
    gum, context, groups = synthetic_gum(lambda_u)
    gum.observe(0, twin_activations())
    gum.after_backward(context)  # the reference measures r after the backward pass, for the next step
    penalty = gum.regularizer(context, kept_fraction=1.0)
    assert torch.allclose(gum.r[0], torch.tensor([0.25, 0.25, 0.0, 0.0]), atol=1e-5)  # |cos| sums / k
    penalty.backward()
    torch.optim.SGD(groups[0]["params"], lr=1.0).step()  # plain SGD: the regularizer's own weighting
    kept = gum.training_masks(context, gum.scores(context), 0.75)[0].nonzero().flatten().tolist()  # keep 3 of 4
    if lambda_u > 0:
        assert kept == [0, 2, 3]  # one twin goes; its copy stays
    else:
        assert kept == [0, 1, 2]  # equal scores: the index tie-break, twins not preferred for removal


def test_gum_regularizer_value_and_lambda_schedules():
    for schedule, factor in (("reference", 0.5 / 0.25), ("constant", 1.0)):
        for scale, divisor in (("reference", 3), ("per_layer", 1)):  # nummod: 3 patched modules per GPT-2 layer
            gum, context, _ = synthetic_gum(2.0, final_kept=0.25, lambda_schedule=schedule, penalty_scale=scale)
            with torch.no_grad():
                gum.movement[0].copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
            gum.observe(0, twin_activations())
            gum.after_backward(context)
            value = gum.regularizer(context, kept_fraction=0.5)
            r = torch.tensor([0.25, 0.25, 0.0, 0.0])
            expected = 2.0 * factor * (torch.sigmoid(gum.movement[0].detach()) * (1 + 2.0 * r)).sum() / 4 / divisor
            assert value.item() == pytest.approx(expected.item(), rel=1e-5)


def test_gum_redundancy_timing():
    """previous_step (the reference): the batch's r re-weights the next step's penalty;
    current_step (ablation): this step's."""
    for timing, first_r in (("previous_step", [0.0] * 4), ("current_step", [0.25, 0.25, 0.0, 0.0])):
        gum, context, _ = synthetic_gum(2.0, redundancy_timing=timing)
        gum.observe(0, twin_activations())
        gum.regularizer(context, kept_fraction=1.0)
        assert torch.allclose(gum.r[0], torch.tensor(first_r), atol=1e-5)
        gum.after_backward(context)
        assert torch.allclose(gum.r[0], torch.tensor([0.25, 0.25, 0.0, 0.0]), atol=1e-5)


def direct_redundancy(gram: torch.Tensor, survivors: int) -> torch.Tensor:
    d = gram.shape[0]
    r = torch.zeros(d)
    for j in range(d):
        for i in range(d):
            if i != j:
                r[j] += abs(gram[i, j]) / (gram[i, i].sqrt() * gram[j, j].sqrt() + COS_EPS)
    return r / survivors


@pytest.mark.parametrize("momentum", [1.0, 0.5])
def test_gum_running_cosine_matches_direct_computation(momentum):
    model = tiny_gpt2().train()
    pruner = attached(model, "gum", sparsity=0.5, steps=10, lambda_u=1.0, momentum=momentum)
    gum = pruner.method
    captured: list[torch.Tensor] = []
    layer = ffn_layers(model)[-1]  # scores tie at 0 and ties keep lower indices: the last layer is pruned
    # Runs after the pruner's hook: sees the masked activations of the non-padding tokens.
    ids = torch.randint(0, VOCAB, (3, 9))
    attention = torch.ones_like(ids)
    attention[0, 5:] = 0  # padding must not enter the Gram matrix
    attention[2, 7:] = 0
    layer.output.register_forward_pre_hook(lambda _m, args: captured.append(args[0][attention.bool()].detach()))
    expected = torch.zeros(D_FF, D_FF)
    for step in (1, 5):  # dense, then pruned (the survivors-only Gram path)
        pruner.before_step(step, attention.bool())
        model(input_ids=ids, attention_mask=attention)
        pruner.after_backward()
        acts = captured[-1].reshape(-1, D_FF)
        assert acts.shape[0] == int(attention.sum())
        expected = (1 - momentum) * expected + momentum * acts.t() @ acts
        survivors = int(pruner.keep[-1].sum())
        assert torch.allclose(gum.gram[-1], expected, rtol=1e-4, atol=1e-5)
        assert torch.allclose(gum.r[-1], direct_redundancy(expected, survivors), rtol=1e-4, atol=1e-6)
    assert survivors < D_FF
    if momentum == 1.0:
        assert (gum.r[-1][~pruner.keep[-1]] == 0).all()  # pruned neurons output 0: r = 0


# -- soft movement -----------------------------------------------------------------------------
def test_soft_movement_thresholds_in_training_and_exact_top_v_at_the_end():
    model = tiny_gpt2()
    pruner = attached(model, "soft_movement", sparsity=0.5, steps=10, threshold=0.1)
    scores = torch.linspace(-4, 4, D_FF)
    with torch.no_grad():
        for score in pruner.method.movement:
            score.copy_(scores)
    soft, context = pruner.method, pruner.context
    assert all(bool(k.all()) for k in soft.training_masks(context, soft.scores(context), 1.0))  # tau 0
    v_half = 0.75  # halfway to the final kept fraction 0.5: tau = 0.05
    masks = soft.training_masks(context, soft.scores(context), v_half)
    assert masks[0].tolist() == (torch.sigmoid(scores) > 0.05).tolist()
    # The reference's minimum width while training (ThresholdBinarizer with min_elements = v_f):
    # at tau 0.99 no neuron passes, (int(0.5 * 16 * 16) + 1) // 16 = 8 of the best stay.
    with torch.no_grad():
        for score in soft.movement:
            score.copy_(scores)
    floor = soft.training_masks(SimpleNamespace(**{**vars(context), "final_kept": 0.5}), soft.scores(context), 0.5)
    soft.params = {**soft.params, "threshold": 0.99}
    floor = soft.training_masks(context, soft.scores(context), 0.5)
    assert floor[0].nonzero().flatten().tolist() == list(range(8, 16))
    soft.params = {**soft.params, "threshold": 0.1}
    keep = pruner.finalize()
    assert [k.tolist() for k in keep] == [list(range(8, 16))] * 2  # local top-v of S at the target
    # l1_lambda (2) * tau / threshold (1 at the end) * (sum of the layers' mean sigmoid) / nummod (3 per layer)
    expected = 2.0 * 2 * torch.sigmoid(scores).mean().item() / 6
    assert soft.regularizer(context, 0.5).item() == pytest.approx(expected)


# -- configuration and listing -------------------------------------------------------------------
def test_gum_parameters_are_validated():
    with pytest.raises(ConfigError, match="lambda_u: required"):
        _method_variants("gum", "methods[0]")
    with pytest.raises(ConfigError, match="lambda_schedule.*allowed: reference, constant"):
        _method_variants({"name": "gum", "params": {"lambda_u": 1, "lambda_schedule": "linear"}}, "methods[0]")
    variants = _method_variants({"name": "gum", "params": {"lambda_u": [0.1, 1.0]}}, "methods[0]")
    labels = [METHODS.get("gum").label("gum", v["params"]) for v in variants]
    assert labels == ["gum(λ_u=0.1)", "gum(λ_u=1)"]


def test_list_methods_shows_the_paper_methods(capsys):
    assert main(["list", "methods"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    for name in ("random", "magnitude", "movement", "gum", "global_movement", "soft_movement"):
        assert len(lines[name].split(None, 1)[1]) > 20  # a description, not just the name


def test_ignore_index_is_the_collate_padding_label():
    assert IGNORE_INDEX == -100


@pytest.mark.parametrize("width", [7, 300, 1001])
def test_blocked_gram_equals_the_plain_product(width):
    from harness.similarity import gram_matrix

    acts = torch.randn(50, width)
    assert torch.allclose(gram_matrix(acts), acts.t() @ acts, rtol=1e-4, atol=1e-3)
