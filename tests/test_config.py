"""Matrix validation, expansion and job identity."""

from __future__ import annotations

import pytest
import yaml

from harness.config import load_matrix
from harness.params import ConfigError
from tests.conftest import write_matrix


def jobs_of(tmp_path, matrix, name="m.yaml"):
    return load_matrix(write_matrix(tmp_path, matrix, name)).jobs


def test_expansion_counts_and_dense_dedup(tmp_path, tiny_matrix):
    tiny_matrix.update(methods=["random", "magnitude", {"name": "dense"}], sparsities=[0.0, 0.5, 0.9], seeds=[0, 1])
    jobs = jobs_of(tmp_path, tiny_matrix)
    dense = [j for j in jobs if j.method["name"] == "dense"]
    assert len(dense) == 2  # one per seed, however many methods list sparsity 0
    assert {j.sparsity for j in dense} == {0.0}
    assert len(jobs) == 2 + 2 * 2 * 2  # dense + methods x sparsities>0 x seeds


def test_param_sweep_makes_variants_with_labels(tmp_path, tiny_matrix, monkeypatch):
    from harness.registry import METHODS
    from harness.method import PruningMethod

    METHODS.names()  # discover the built-ins first, then register on a copy the test undoes
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))

    @METHODS.register("sweepable")
    class Sweepable(PruningMethod):
        """A method with a parameter, for the sweep test."""
        defaults = {"alpha": 1.0, "beta": 2}

    tiny_matrix["methods"] = [{"name": "sweepable", "params": {"alpha": [0.1, 1.0], "beta": 3}}]
    jobs = [j for j in jobs_of(tmp_path, tiny_matrix) if j.method["name"] == "sweepable"]
    assert sorted(j.method["params"]["alpha"] for j in jobs) == [0.1, 1.0]
    assert sorted(j.method_label for j in jobs) == ["sweepable(alpha=0.1,beta=3)", "sweepable(beta=3)"]


def test_hash_stable_under_reordering_and_formatting(tmp_path, tiny_matrix):
    first = {j.spec_hash for j in jobs_of(tmp_path, tiny_matrix, "a.yaml")}
    reordered = dict(reversed(list(tiny_matrix.items())))
    reordered["train"] = dict(reversed(list(tiny_matrix["train"].items())))
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(reordered, default_flow_style=True, sort_keys=False))
    assert {j.spec_hash for j in load_matrix(path).jobs} == first
    # an explicit default does not change the resolved spec either
    tiny_matrix["train"]["lr"] = 5.0e-4
    assert {j.spec_hash for j in jobs_of(tmp_path, tiny_matrix, "c.yaml")} == first


@pytest.mark.parametrize("change", [
    lambda m: m["train"].update(lr=1e-3),
    lambda m: m["eval"].update(decoding="beam"),
    lambda m: m["tasks"][0].update(max_eval_tokens=500),
    lambda m: m.update(seeds=[1]),
])
def test_hash_changes_with_any_resolved_field(tmp_path, tiny_matrix, change):
    before = {j.spec_hash for j in jobs_of(tmp_path, tiny_matrix, "a.yaml")}
    change(tiny_matrix)
    after = {j.spec_hash for j in jobs_of(tmp_path, tiny_matrix, "b.yaml")}
    assert not before & after


def test_hash_changes_with_local_model_content(tmp_path, tiny_matrix, tiny_model_dir):
    import shutil

    copy = tmp_path / "model-copy"
    shutil.copytree(tiny_model_dir, copy)
    tiny_matrix["models"] = [str(copy)]
    before = {j.spec_hash for j in jobs_of(tmp_path, tiny_matrix, "a.yaml")}
    config = (copy / "config.json").read_text().replace('"n_head": 2', '"n_head": 1')
    (copy / "config.json").write_text(config)
    assert not before & {j.spec_hash for j in jobs_of(tmp_path, tiny_matrix, "b.yaml")}


BAD = [
    (lambda m: m.update(sparsities=[1.3]), "sparsities[0]"),
    (lambda m: m.update(sparsities=[-0.1]), "sparsities[0]"),
    (lambda m: m.update(sparsities=["half"]), "sparsities[0]"),
    (lambda m: m.update(sparsities=[]), "sparsities"),
    (lambda m: m.update(methods=["magnitud"]), "did you mean 'magnitude'"),
    (lambda m: m.update(tasks=["wiki-embeded"]), "did you mean 'wiki-embedded'"),
    (lambda m: m.update(models=["tiny-wiki-gpt"]), "did you mean 'tiny-wiki-gpt2'"),
    (lambda m: m.update(models=["./no/such/model"]), "models[0]"),
    (lambda m: m.update(seeds=[0.5]), "seeds[0]"),
    (lambda m: m.update(methods=[]), "methods"),
    (lambda m: m.pop("tasks"), "tasks"),
    (lambda m: m.update(epochs=3), "unknown key 'epochs'"),
    (lambda m: m["train"].update(stepz=3), "train: unknown key 'stepz' (did you mean 'steps'?)"),
    (lambda m: m["train"].update(steps="many"), "train.steps: expected integer"),
    (lambda m: m["eval"].update(decoding="sampling"), "eval.decoding"),
    (lambda m: m["tasks"][0].update(window="big"), "tasks[0].window"),
    (lambda m: m["tasks"][0].update(colour=1), "tasks[0]: unknown key 'colour'"),
    (lambda m: m.update(methods=[{"name": "random", "params": {"lr": 1}}]), "methods[0].params: unknown key 'lr'"),
    (lambda m: m.update(name=""), "name"),
]


@pytest.mark.parametrize("mutate,expected", BAD)
def test_validation_errors_name_the_field(tmp_path, tiny_matrix, mutate, expected):
    mutate(tiny_matrix)
    with pytest.raises(ConfigError) as error:
        jobs_of(tmp_path, tiny_matrix)
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


def test_non_yaml_and_missing_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_matrix(bad)
    with pytest.raises(ConfigError, match="file not found"):
        load_matrix(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_matrix(tmp_path / "list.yaml")
