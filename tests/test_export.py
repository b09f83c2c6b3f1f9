"""Saved / exported models load with plain transformers and give the harness's logits."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from harness.adapters import ARCHITECTURES, ffn_layers
from harness.export import has_custom_code, save_model
from tests.test_architectures import VOCAB, non_uniform_pruner, pruner_with, tied, tiny_model


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
@pytest.mark.parametrize("uniform", [True, False], ids=["local", "global"])
def test_saved_model_loads_with_from_pretrained(tmp_path, model_type, uniform):
    model = tiny_model(model_type)
    pruner = pruner_with(model, "random", 0.5) if uniform else non_uniform_pruner(model)
    widths = pruner.shrink(pruner.finalize())
    folder = save_model(model, None, tmp_path / f"{model_type}-{'u' if uniform else 'n'}")
    assert has_custom_code(folder) != uniform
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind

    loaded = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=not uniform).eval()
    assert [layer.width for layer in ffn_layers(loaded)] == widths
    assert tied(loaded) == tied(model) == model.config.tie_word_embeddings
    ids = torch.randint(0, VOCAB, (2, 10))
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, loaded(ids).logits, atol=1e-5)
    if uniform:
        assert type(loaded) is type(model)
    else:  # the stock class cannot hold per-layer widths: it must refuse, not load garbage
        assert json.loads((folder / "config.json").read_text())["ffn_widths"] == widths
        with pytest.raises(Exception):
            AutoModelForCausalLM.from_pretrained(folder)


def test_save_replaces_an_older_model_atomically(tmp_path):
    model = tiny_model("gpt2")
    folder = save_model(model, None, tmp_path / "job")
    pruner = pruner_with(model, "random", 0.5)
    pruner.shrink(pruner.finalize())
    save_model(model, None, folder)
    loaded = AutoModelForCausalLM.from_pretrained(folder)
    assert [layer.width for layer in ffn_layers(loaded)] == [12, 12, 12]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job"]


# -- through the runner and the CLI ------------------------------------------------------------
def _rows(db, query):
    from tests.conftest import sqlite_rows

    return sqlite_rows(db, query)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir):
    from harness.cli import main
    from tests.conftest import write_matrix

    folder = tmp_path_factory.mktemp("export-run")
    matrix = {"name": "export", "pretrained_baseline": False, "models": [str(tiny_model_dir)],
              "tasks": [{"name": "wiki-embedded", "max_train_examples": 16, "max_eval_tokens": 400}],
              "methods": ["random", {"name": "gum", "params": {"lambda_u": 1.0}}], "sparsities": [0.5],
              "train": {"steps": 8, "batch_size": 4, "max_length": 64},
              "eval": {"batch_size": 4, "analysis_examples": 0, "speed_repeats": 1, "speed_batch_size": 2,
                       "speed_prompt_length": 16, "speed_new_tokens": 4}}
    path = write_matrix(folder, matrix)
    db = folder / "r.db"
    assert main(["run", "--matrix", str(path), "--db", str(db)]) == 0
    return folder, db


def test_every_job_stores_dense_and_shrunk_speed(finished_run):
    _, db = finished_run
    speed = _rows(db, "select j.method, m.name, m.value, m.higher_is_better from metrics m join jobs j "
                      "on j.id = m.job_id where m.split = 'speed' or m.name = 'params'")
    by_job: dict[str, dict[str, tuple[float, bool]]] = {}
    for method, name, value, higher in speed:
        by_job.setdefault(method, {})[name] = (value, bool(higher))
    assert set(by_job) == {"dense", "random", "gum"}
    for metrics in by_job.values():
        assert metrics["prefill_ms"][0] > 0 and metrics["prefill_ms"][1] is False
        assert metrics["decode_tokens_per_s"][0] > 0 and metrics["decode_tokens_per_s"][1] is True
        assert metrics["prefill_speedup"][1] and metrics["decode_speedup"][1]
        assert metrics["peak_memory_mb"][0] > 0 and metrics["peak_memory_mb"][1] is False
        assert metrics["dense_params"][0] >= metrics["params"][0]
    for (protocol,) in _rows(db, "select protocol_json from jobs"):
        speed_protocol = json.loads(protocol)["speed"]
        assert speed_protocol["batch_size"] == 2 and speed_protocol["new_tokens"] == 4
        assert speed_protocol["prompt_length"] == 16 and speed_protocol["memory_method"]


def test_export_cli_gives_the_evaluated_model(finished_run, tmp_path, capsys):
    from harness.cli import main
    from harness.spec import JobSpec
    from harness.registry import TASKS

    _, db = finished_run
    spec_hash, spec_json = _rows(db, "select spec_hash, spec_json from jobs where method = 'gum'")[0]
    out = tmp_path / "gum-export"
    assert main(["export", spec_hash[:10], "--out", str(out), "--db", str(db)]) == 0
    assert "from_pretrained" in capsys.readouterr().err
    widths = [int(v) for (v,) in _rows(db, "select l.value from layer_stats l join jobs j on j.id = l.job_id "
                                          "where j.method = 'gum' and l.name = 'kept_neurons' order by l.layer")]
    assert len(set(widths)) > 1 and has_custom_code(out)  # global selection: per-layer widths, custom code
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=has_custom_code(out)).eval()
    assert [layer.width for layer in ffn_layers(model)] == widths
    from transformers import AutoTokenizer

    spec = JobSpec.from_dict(json.loads(spec_json))
    task = TASKS.get(spec.task["name"])(spec.task["name"], spec.task["params"])
    evaluation = task.evaluate(model, AutoTokenizer.from_pretrained(out), spec.eval, torch.device("cpu"))
    stored = dict(_rows(db, "select m.name, m.value from metrics m join jobs j on j.id = m.job_id "
                            "where j.method = 'gum' and m.split = 'test'"))
    recomputed = {m.name: m.value for m in evaluation.metrics}
    assert recomputed["perplexity"] == pytest.approx(stored["perplexity"], rel=1e-5)


def test_export_errors_are_one_line(finished_run, tmp_path, capsys):
    from harness.cli import main

    _, db = finished_run
    assert main(["export", "ffffffff", "--out", str(tmp_path / "x"), "--db", str(db)]) == 2
    assert "no job whose spec hash starts with" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").write_text("x")
    spec_hash = _rows(db, "select spec_hash from jobs where method = 'random'")[0][0]
    assert main(["export", spec_hash, "--out", str(tmp_path / "full"), "--db", str(db)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_no_save_models_keeps_teachers_only(tmp_path, tiny_matrix, capsys):
    from harness.cli import main
    from tests.conftest import write_matrix

    tiny_matrix["methods"] = ["random"]
    tiny_matrix["train"]["steps"] = 4
    tiny_matrix["eval"].update(speed_repeats=0, analysis_examples=0)
    db = tmp_path / "r.db"
    path = write_matrix(tmp_path, tiny_matrix)
    assert main(["run", "--matrix", str(path), "--db", str(db), "--no-save-models",
                 "--artifacts", str(tmp_path / "saved")]) == 0
    saved = {method: "artifacts" in json.loads(protocol)
             for method, protocol in _rows(db, "select method, protocol_json from jobs")}
    assert saved == {"dense": True, "random": False}
    assert len(list((tmp_path / "saved").iterdir())) == 1
    spec_hash = _rows(db, "select spec_hash from jobs where method = 'random'")[0][0]
    assert main(["export", spec_hash, "--out", str(tmp_path / "o"), "--db", str(db)]) == 2
    assert "has no saved model" in capsys.readouterr().err


def test_exported_non_uniform_model_runs_as_a_matrix_model(finished_run, tmp_path):
    """Pruning a pruned model: the export (custom code, per-layer widths) is a local model."""
    from harness.cli import main
    from tests.conftest import write_matrix

    _, db = finished_run
    spec_hash = _rows(db, "select spec_hash from jobs where method = 'gum'")[0][0]
    out = tmp_path / "gum-export"
    assert main(["export", spec_hash, "--out", str(out), "--db", str(db)]) == 0
    matrix = {"name": "again", "pretrained_baseline": False, "models": [str(out)],
              "tasks": [{"name": "wiki-embedded", "max_train_examples": 8, "max_eval_tokens": 200}],
              "methods": ["magnitude"], "sparsities": [0.5], "dense_baseline": False,
              "train": {"steps": 4, "batch_size": 4, "max_length": 32},
              "eval": {"batch_size": 4, "analysis_examples": 0, "speed_repeats": 0}}
    second = tmp_path / "second.db"
    assert main(["run", "--matrix", str(write_matrix(tmp_path, matrix)), "--db", str(second),
                 "--no-save-models"]) == 0
    before = [int(v) for (v,) in _rows(db, "select l.value from layer_stats l join jobs j on j.id = l.job_id "
                                          "where j.method = 'gum' and l.name = 'kept_neurons' order by l.layer")]
    after = [int(v) for (v,) in _rows(second, "select value from layer_stats where name = 'kept_neurons' order by layer")]
    assert after == [round(w / 2 + 1e-9) if w % 2 == 0 else (w + 1) // 2 for w in before]
