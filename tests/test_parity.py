"""Reference parity: the harness's methods train as the authors' code trains them.

Each method is run twice on the same tiny model (GPT-2 with Conv1D FFNs, and a Llama
with a GLU FFN), in float64, over identical batches: once through the harness's own
training loop and pruner, once through ``tests/reference_oracle.py`` (explicit weight
masks through autograd, no harness code). Score gradients of every step, the penalty of
every step, every step's masks, and the final scores and FFN weights must agree to 1e-6.
``benchmarks/parity.py`` prints the same comparison.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from harness.params import resolve_params
from harness.pruning import FFNPruner
from harness.registry import METHODS
from harness.selection import CubicSchedule
from harness.task import TokenizedExample
from harness.train import SETTINGS as TRAIN_SETTINGS
from harness.train import train
from tests import reference_oracle as oracle

STEPS, SPARSITY, TOLERANCE = 10, 0.5, 1e-6
SETTINGS = {**{k: p.default for k, p in TRAIN_SETTINGS.items()}, "steps": STEPS, "lr": 5e-3, "warmup_frac": 0.1}
CASES = {  # case -> (method, parameters): the reference's defaults unless a test needs movement to show
    "random": {},
    "magnitude": {},
    "magnitude(norm=separate)": {"norm": "separate"},
    "movement": {"score_lr": 0.05},
    "global_movement": {"score_lr": 0.05},
    "soft_movement": {"score_lr": 0.2, "threshold": 0.1, "l1_lambda": 2.0},
    "gum": {"score_lr": 0.05, "lambda_u": 5.0, "lambda": 2.0, "momentum": 0.999},
}


def harness_run(model, method_name: str, params: dict, rows, batch_size: int):
    """The same training through harness.train with the real pruner; records what the oracle records."""
    model = copy.deepcopy(model)
    cls = METHODS.get(method_name)
    method = cls(resolve_params(method_name, params, cls.defaults, cls.required), seed=0)
    pruner = FFNPruner(model, method, CubicSchedule(STEPS, 1.0 - SPARSITY, SETTINGS["warmup_frac"]))
    groups = pruner.attach()
    trace = oracle.Trace()
    scores = method.learned_scores()
    if scores is not None:
        step_grads: list[torch.Tensor | None] = [None] * len(scores)

        def keep(index):
            def hook(param):  # after accumulation, before clipping: the step's whole gradient
                step_grads[index] = param.grad.detach().clone()
                if all(g is not None for g in step_grads):
                    trace.score_grads.append(list(step_grads))
                    step_grads[:] = [None] * len(scores)
            return hook

        for i, score in enumerate(scores):
            score.register_post_accumulate_grad_hook(keep(i))
    before_step = pruner.before_step

    def recording(step, token_mask):
        fraction = before_step(step, token_mask)
        trace.masks.append([k.double() for k in pruner.keep])
        return fraction

    pruner.before_step = recording
    examples = [TokenizedExample(ids, labels) for ids, labels in rows]
    log = train(model, examples, pruner, SETTINGS, 0, 0, torch.device("cpu"), groups)
    penalties = {step: value for step, name, value in log.curves if name == "regularizer"}
    trace.penalties = [penalties.get(step, math.nan) for step in range(1, STEPS + 1)]
    if scores is not None:
        trace.scores = [s.detach().clone() for s in scores]
    for layer in pruner.layers:
        trace.ffn_weights += [proj.weight.detach().clone() for proj in (*layer.inputs, layer.output)]
    return trace


def max_difference(a: oracle.Trace, b: oracle.Trace) -> dict[str, float]:
    """Largest absolute differences: per-step score gradients, penalties, masks, final scores and weights."""
    def worst(pairs):
        return max((float((x - y).abs().max()) for x, y in pairs), default=0.0)

    grads = [(x, y) for sa, sb in zip(a.score_grads, b.score_grads) for x, y in zip(sa, sb)]
    assert len(a.score_grads) == len(b.score_grads)
    penalties = [abs(x - y) for x, y in zip(a.penalties, b.penalties) if not (math.isnan(x) and math.isnan(y))]
    return {
        "score_grad": worst(grads),
        "penalty": max(penalties, default=0.0) if len(penalties) == sum(not math.isnan(x) for x in a.penalties) else math.inf,
        "mask": worst([(x, y) for ma, mb in zip(a.masks, b.masks) for x, y in zip(ma, mb)]),
        "score": worst(zip(a.scores, b.scores)),
        "weight": worst(zip(a.ffn_weights, b.ffn_weights)),
    }


def compare(arch: str, case: str) -> dict[str, float]:
    method = case.split("(")[0]
    model = oracle.tiny_model(arch)
    rows = oracle.examples()
    reference = oracle.run(model, arch, method, {**_defaults(method), **CASES[case]}, STEPS, SPARSITY, SETTINGS,
                           oracle.collate(rows))
    ours = harness_run(model, method, CASES[case], rows, batch_size=len(rows))
    return max_difference(reference, ours)


def _defaults(method: str) -> dict:
    return {k: getattr(v, "default", v) for k, v in METHODS.get(method).defaults.items()}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("case", list(CASES))
def test_harness_training_matches_the_reference_oracle(arch, case):
    differences = compare(arch, case)
    assert max(differences.values()) <= TOLERANCE, differences


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_a_pruned_neuron_gets_exactly_zero_task_gradient(arch):
    """Under the default straight-through mask (on the weights) a pruned neuron's score is
    not moved by the task loss; under ``ste: activations`` (the ablation) it is."""
    for ste, pruned_gradient_is_zero in (("weights", True), ("activations", False)):
        model = oracle.tiny_model(arch)
        cls = METHODS.get("movement")
        method = cls(resolve_params("movement", {"ste": ste}, cls.defaults), seed=0)
        pruner = FFNPruner(model, method, CubicSchedule(STEPS, 0.5))
        pruner.attach()
        with torch.no_grad():  # distinct scores, so that the top-v mask prunes a known half
            for score in method.movement:
                score.copy_(torch.linspace(-1, 1, score.numel(), dtype=score.dtype))
        batch = oracle.collate(oracle.examples())
        pruner.before_step(STEPS, batch["attention_mask"].bool())
        model(**batch).loss.backward()
        for score, keep in zip(method.movement, pruner.keep):
            assert 0 < int(keep.sum()) < keep.numel()
            pruned = score.grad[~keep]
            assert bool((pruned == 0).all()) == pruned_gradient_is_zero, (ste, pruned)
            assert score.grad[keep].abs().sum() > 0


@pytest.mark.parametrize("arch, per_layer", [("gpt2", 3), ("llama", 4)])
def test_gum_penalty_is_the_reference_formula_with_its_nummod(arch, per_layer):
    """regularization_loss divides the summed layer terms by nummod: per layer the score
    module and each MaskedLinear (c_fc, c_proj; gate, up, down)."""
    model = oracle.tiny_model(arch)
    cls = METHODS.get("gum")
    method = cls(resolve_params("gum", {"lambda_u": 3.0}, cls.defaults), seed=0)
    pruner = FFNPruner(model, method, CubicSchedule(STEPS, 0.5))
    pruner.attach()
    assert pruner.context.reference_module_count == per_layer * 2
    with torch.no_grad():
        for i, score in enumerate(method.movement):
            score.copy_(torch.linspace(-2, 1, score.numel(), dtype=score.dtype) * (i + 1))
        method.r = [torch.rand(score.numel(), dtype=score.dtype) for score in method.movement]
    v = 0.75
    value = float(pruner.penalty(v))
    expected = 2.0 * v / 0.5 * sum(float((torch.sigmoid(s) * (1 + 3.0 * r)).sum() / s.numel())
                                   for s, r in zip(method.movement, method.r)) / (per_layer * 2)
    assert value == pytest.approx(expected, rel=1e-12)
    per_layer_method = cls(resolve_params("gum", {"lambda_u": 3.0, "penalty_scale": "per_layer"}, cls.defaults), 0)
    per_layer_method.movement, per_layer_method.r = method.movement, method.r
    assert float(per_layer_method.regularizer(pruner.context, v)) == pytest.approx(expected * per_layer, rel=1e-12)
