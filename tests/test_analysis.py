"""Neuron-redundancy analysis: the uniqueness convention, batch-by-batch Gram matrices,
sensitivity against an independent autograd computation, and what jobs store."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM
from torch.func import functional_call

from harness.adapters import ffn_layers
from harness.analysis import Analysis, LayerAnalysis, analyze_model
from harness.cli import main
from harness.registry import METHODS
from harness.similarity import redundant_and_max_cos
from harness.task import TokenizedExample, collate
from tests.conftest import write_matrix, sqlite_rows


def gram_of(activations: np.ndarray) -> np.ndarray:
    return activations.T @ activations


def redundancy(gram: np.ndarray, threshold: float) -> tuple[int, np.ndarray]:
    redundant, max_abs = redundant_and_max_cos(torch.from_numpy(gram), threshold)
    return redundant, max_abs.numpy()


def test_group_of_three_identical_neurons_counts_two_redundant():
    rng = np.random.default_rng(0)
    base = np.eye(40)[:, :6]  # six orthogonal neurons over 40 tokens
    activations = np.concatenate([base, base[:, [2, 2, 2]] * [1.0, 3.0, 0.5]], axis=1)  # neuron 2 + 3 twins (scaled)
    activations += 1e-9 * rng.standard_normal(activations.shape)
    redundant, max_abs = redundancy(gram_of(activations), threshold=0.8)
    assert redundant == 3  # a group of four: k - 1
    redundant, _ = redundancy(gram_of(activations[:, :8]), threshold=0.8)  # neuron 2 and two twins
    assert redundant == 2
    assert max_abs[2] == pytest.approx(1.0, abs=1e-6) and max_abs[0] == pytest.approx(0.0, abs=1e-6)


def test_signed_cosine_opposite_neurons_are_not_redundant_but_have_high_max_abs_cos():
    a = np.eye(10)[:, :3]
    activations = np.concatenate([a, -a[:, [0]]], axis=1)
    redundant, max_abs = redundancy(gram_of(activations), threshold=0.8)
    assert redundant == 0  # cos = -1: the reference's convention uses the signed cosine
    assert max_abs[0] == pytest.approx(1.0, abs=1e-6)


def test_orthogonal_activations_give_uniqueness_one():
    redundant, max_abs = redundancy(gram_of(np.eye(32)[:, :16] * 2.5), threshold=0.8)
    layer = LayerAnalysis(0, list(range(16)), np.zeros(16), max_abs, redundant)
    assert redundant == 0 and layer.uniqueness == 1.0
    assert np.allclose(max_abs, 0.0, atol=1e-9)


def test_model_uniqueness_is_pooled_not_a_mean_of_layer_ratios():
    layers = [LayerAnalysis(0, [0, 1], np.ones(2), np.zeros(2), 1), LayerAnalysis(1, list(range(8)), np.ones(8), np.zeros(8), 0)]
    analysis = Analysis(layers, 0.8, "reference", examples=4, tokens=10)
    assert analysis.uniqueness == pytest.approx(1 - 1 / 10)  # mean of ratios would be 0.75
    metrics = {m.name: m for m in analysis.metrics()}
    assert metrics["uniqueness"].split == "analysis" and metrics["uniqueness"].higher_is_better
    assert metrics["redundant_neurons"].value == 1 and metrics["sensitivity_total"].value == 10


# -- on a real (tiny) model ---------------------------------------------------------------
@pytest.fixture(scope="module")
def model_and_examples(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64).eval()
    generator = torch.Generator().manual_seed(0)
    examples = []
    for i in range(7):  # ragged lengths (padding) and prompt tokens without loss
        ids = torch.randint(1, model.config.vocab_size, (10 + 3 * i,), generator=generator).tolist()
        examples.append(TokenizedExample(ids, [-100] * 4 + ids[4:]))
    return model, examples


def test_identical_neurons_in_a_model_are_found(model_and_examples):
    model, examples = model_and_examples
    model = copy.deepcopy(model)  # the fixture's model stays unchanged
    c_fc = ffn_layers(model)[1].inputs[0]  # Conv1D (d_model, d_ff): column i is neuron i's input row
    with torch.no_grad():
        for twin in (5, 9):
            c_fc.weight[:, twin] = c_fc.weight[:, 3]
            c_fc.bias[twin] = c_fc.bias[3]
    # τ close to 1: only true twins pass (random neurons of a tiny model can reach 0.8).
    analysis = analyze_model(model, examples, pad_id=0, batch_size=3, threshold=0.9999)
    assert analysis.layers[1].redundant == 2
    assert analysis.layers[1].max_abs_cos[[3, 5, 9]] == pytest.approx(1.0, abs=1e-4)  # eps 1e-6 in the denominator


def test_gram_accumulated_batch_by_batch_equals_one_pass(model_and_examples):
    model, examples = model_and_examples
    one = analyze_model(model, examples, pad_id=0, batch_size=len(examples), threshold=0.5)
    many = analyze_model(model, examples, pad_id=0, batch_size=2, threshold=0.5)
    assert one.tokens == many.tokens == sum(len(e.input_ids) for e in examples)  # padding excluded
    for a, b in zip(one.layers, many.layers):
        assert np.allclose(a.max_abs_cos, b.max_abs_cos, atol=1e-10) and a.redundant == b.redundant


def direct_sensitivity(model, examples, batch_size: int, layer: int, neuron: int, output_only: bool) -> float:
    """d loss / d s at s = 1 when neuron ``neuron``'s parameters are scaled by s, which is
    Σ θ·∂L/∂θ over them; output column only = Σ a·∂L/∂a. |.| per batch, mean over examples."""
    names = {id(p): n for n, p in model.named_parameters()}
    ffn = ffn_layers(model)[layer]
    parts = ffn.neuron_parameters()[-1:] if output_only else ffn.neuron_parameters()
    total = 0.0
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], pad_id=0)
        scale = torch.ones((), dtype=torch.float64, requires_grad=True)
        replaced = {}
        for parameter, axis in parts:
            onehot = torch.zeros(parameter.shape[axis], dtype=torch.float64)
            onehot[neuron] = 1.0
            shape = [1] * parameter.ndim
            shape[axis] = -1
            replaced[names[id(parameter)]] = parameter.detach() * (1 + (scale - 1) * onehot.view(shape))
        loss = functional_call(model, replaced, args=(), kwargs=batch).loss
        (grad,) = torch.autograd.grad(loss, scale)
        total += abs(float(grad))
    return total / len(examples)


@pytest.mark.parametrize("kind", ["reference", "activation"])
def test_sensitivity_equals_direct_autograd(model_and_examples, kind):
    model, examples = model_and_examples
    analysis = analyze_model(model, examples, pad_id=0, batch_size=3, sensitivity=kind)
    for layer, neuron in [(0, 0), (0, 17), (1, 5), (1, 63)]:
        expected = direct_sensitivity(model, examples, 3, layer, neuron, output_only=kind == "activation")
        assert analysis.layers[layer].sensitivity[neuron] == pytest.approx(expected, rel=1e-8, abs=1e-15)
    assert all(p.grad is None for p in model.parameters())  # the model is left as it was
    assert all(p.requires_grad for p in model.parameters())


# -- what jobs store, and the commands --------------------------------------------------------
rows = sqlite_rows


@pytest.fixture(scope="module")
def analysed_run(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("analysis")
    methods = ["random"] + ([{"name": "gum", "params": {"lambda_u": 1.0}}] if "gum" in METHODS else [])
    matrix = {"name": "analysis", "pretrained_baseline": False, "models": [str(tiny_model_dir)],
              "tasks": [{"name": "wiki-embedded", "max_train_examples": 16, "max_eval_tokens": 300}],
              "methods": methods, "sparsities": [0.75], "seeds": [0],
              "train": {"steps": 8, "batch_size": 4, "max_length": 64},
              "eval": {"batch_size": 4, "analysis_examples": 6, "speed_repeats": 0}}
    db = folder / "r.db"
    threads = torch.get_num_threads()
    try:
        assert main(["run", "--matrix", str(write_matrix(folder, matrix)), "--db", str(db), "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    return db


def test_every_job_stores_model_layer_and_neuron_numbers(analysed_run):
    db = analysed_run
    jobs = rows(db, "select id, method from jobs")
    assert {m for _, m in jobs} >= {"dense", "random"}
    for job_id, method in jobs:
        metrics = dict(rows(db, f"select name, value from metrics where job_id = {job_id} and split = 'analysis'"))
        assert set(metrics) == {"uniqueness", "redundant_neurons", "sensitivity_total", "max_abs_cos_mean"}, method
        kept = rows(db, f"select sum(value) from layer_stats where job_id = {job_id} and name = 'kept_neurons'")[0][0]
        assert rows(db, f"select count(*) from neuron_stats where job_id = {job_id}") == [(kept,)]
        per_layer = rows(db, f"select count(*) from layer_stats where job_id = {job_id} and name = 'uniqueness'")
        assert per_layer == [(2,)]
        assert 0 <= metrics["uniqueness"] <= 1
        protocol = json.loads(rows(db, f"select protocol_json from jobs where id = {job_id}")[0][0])
        assert protocol["analysis"]["examples"] == 6 and protocol["analysis"]["sensitivity"] == "reference"
    # neuron ids are the original indices of the survivors: within [0, d_ff)
    assert rows(db, "select max(neuron) < 64, min(neuron) >= 0 from neuron_stats") == [(1, 1)]


def test_gum_jobs_have_per_layer_widths_that_differ(analysed_run):
    if "gum" not in METHODS:
        pytest.skip("method 'gum' is not registered (methods/gum.py not present yet): global selection untestable")
    widths = rows(analysed_run, "select l.value from layer_stats l join jobs j on j.id = l.job_id "
                                "where j.method = 'gum' and l.name = 'kept_neurons' order by l.layer")
    assert len(widths) == 2 and len(set(widths)) > 1, widths


def test_analysis_off_and_bad_settings(tmp_path, tiny_matrix, capsys):
    from harness.config import load_matrix

    tiny_matrix["eval"].update(analysis_examples=0)
    job = load_matrix(write_matrix(tmp_path, tiny_matrix)).jobs[0]
    assert "sensitivity" not in job.eval and "uniqueness_threshold" not in job.eval  # off: cannot split jobs
    tiny_matrix["eval"].update(analysis_examples=8, sensitivity="taylor")
    assert main(["run", "--matrix", str(write_matrix(tmp_path, tiny_matrix)), "--db", str(tmp_path / "x.db")]) == 2
    assert "eval.sensitivity: 'taylor' is not allowed" in capsys.readouterr().err


def test_analyze_command(tiny_model_dir, capsys):
    assert main(["analyze", str(tiny_model_dir), "--task", "wiki-embedded", "--examples", "4", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["protocol"]["examples"] == 4 and report["layers"][-1]["layer"] == "all"
    assert report["layers"][-1]["width"] == 128 and len(report["neurons"]) == 128
    assert set(report["metrics"]) >= {"uniqueness", "sensitivity_total"}
    assert main(["analyze", str(tiny_model_dir), "--task", "wiki-embedded", "--examples", "2"]) == 0
    assert "uniqueness" in capsys.readouterr().out
    assert main(["analyze", str(tiny_model_dir), "--task", "wiki-embeded"]) == 2
    assert "did you mean 'wiki-embedded'" in capsys.readouterr().err
