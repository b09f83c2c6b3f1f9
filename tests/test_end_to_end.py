"""A tiny matrix through the CLI into a temporary database."""

from __future__ import annotations

import json
import math

import pytest
import torch

from harness.cli import main
from harness.selection import kept_count
from tests.conftest import write_matrix, sqlite_rows


rows = sqlite_rows


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("e2e")
    matrix = {
        "name": "tiny", "pretrained_baseline": False, "models": [str(tiny_model_dir)],
        "tasks": [{"name": "wiki-embedded", "max_train_examples": 16, "max_eval_tokens": 600}],
        "methods": ["random", "magnitude"], "sparsities": [0.5, 0.9], "seeds": [0],
        "train": {"steps": 8, "batch_size": 4, "max_length": 64}, "eval": {"batch_size": 4},
    }
    path = write_matrix(folder, matrix)
    db = folder / "results.db"
    assert main(["run", "--matrix", str(path), "--db", str(db)]) == 0
    return path, db


def test_jobs_metrics_and_statuses(finished):
    _, db = finished
    jobs = rows(db, "select method, sparsity, status, attempt from jobs order by method, sparsity")
    assert jobs == [("dense", 0.0, "done", 1), ("magnitude", 0.5, "done", 1), ("magnitude", 0.9, "done", 1),
                    ("random", 0.5, "done", 1), ("random", 0.9, "done", 1)]
    names = {r[0] for r in rows(db, "select distinct name from metrics")}
    assert {"perplexity", "loss", "ffn_sparsity", "params", "params_removed_fraction"} <= names
    for (value,) in rows(db, "select value from metrics where name = 'perplexity'"):
        assert 1 < value < 600  # vocabulary of 512 tokens: a sane, finite perplexity
    curves = rows(db, "select count(*) from curves where name = 'loss'")
    assert curves == [(5 * 8,)]


def test_measured_sparsity_and_parameter_count(finished, tiny_model_dir):
    _, db = finished
    config = json.loads((tiny_model_dir / "config.json").read_text())
    d_ff, d_model, layers = config["n_inner"], config["n_embd"], config["n_layer"]
    dense_params = rows(db, "select m.value from metrics m join jobs j on j.id = m.job_id "
                            "where j.method = 'dense' and m.name = 'params'")[0][0]
    for sparsity in (0.5, 0.9):
        kept = kept_count(1 - sparsity, d_ff)
        measured = rows(db, f"select m.value from metrics m join jobs j on j.id = m.job_id "
                            f"where j.sparsity = {sparsity} and m.name = 'ffn_sparsity'")
        assert [v for (v,) in measured] == [pytest.approx(1 - kept / d_ff)] * 2
        params = rows(db, f"select m.value from metrics m join jobs j on j.id = m.job_id "
                          f"where j.sparsity = {sparsity} and m.name = 'params'")
        expected = dense_params - layers * (d_ff - kept) * (2 * d_model + 1)
        assert [v for (v,) in params] == [expected] * 2
        widths = rows(db, f"select l.value from layer_stats l join jobs j on j.id = l.job_id "
                          f"where j.sparsity = {sparsity} and l.name = 'kept_neurons'")
        assert [v for (v,) in widths] == [kept] * (2 * layers)


def test_rerun_does_no_work_and_force_adds_attempt(finished, capsys):
    path, db = finished
    before = rows(db, "select count(*) from metrics")
    assert main(["run", "--matrix", str(path), "--db", str(db)]) == 0
    assert rows(db, "select count(*) from metrics") == before
    assert rows(db, "select max(attempt) from jobs") == [(1,)]
    assert main(["run", "--matrix", str(path), "--db", str(db), "--force", "--only", "magnitude/s=0.5"]) == 0
    assert rows(db, "select method, sparsity, attempt, status from jobs where attempt = 2") == [("magnitude", 0.5, 2, "done")]
    capsys.readouterr()
    assert main(["run", "--matrix", str(path), "--db", str(db), "--dry-run"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 5 and all(line.endswith("done") for line in out)


def test_leaderboard_prints_methods_and_dense(finished, capsys):
    _, db = finished
    assert main(["leaderboard", "--db", str(db), "--metric", "perplexity"]) == 0
    out = capsys.readouterr().out
    assert "lower is better" in out and "dense" in out and "magnitude" in out and "s=0.9" in out
    assert main(["leaderboard", "--db", str(db), "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert {r["method_label"] for r in records} == {"dense", "random", "magnitude"}


def test_failing_job_is_recorded_and_others_go_on(tmp_path, tiny_matrix):
    tiny_matrix["models"] = [tiny_matrix["models"][0], "some-org/not-on-this-machine"]
    tiny_matrix["methods"] = ["random"]
    path = write_matrix(tmp_path, tiny_matrix)
    db = tmp_path / "r.db"
    assert main(["run", "--matrix", str(path), "--db", str(db)]) == 1
    statuses = rows(db, "select model, status, error from jobs order by model")
    assert [s[1] for s in statuses] == ["done", "done", "failed", "failed"]
    assert "could not be loaded from the Hugging Face hub" in statuses[2][2]
    assert rows(db, "select count(*) from jobs where traceback like '%Traceback%'") == [(2,)]


@pytest.mark.parametrize("mutate", [
    lambda m: m.update(sparsities=[1.3]),
    lambda m: m.update(methods=["magnitud"]),
    lambda m: m["train"].update(stepz=1),
])
def test_bad_matrix_exits_2_and_writes_nothing(tmp_path, tiny_matrix, capsys, mutate):
    mutate(tiny_matrix)
    path = write_matrix(tmp_path, tiny_matrix)
    db = tmp_path / "never.db"
    assert main(["run", "--matrix", str(path), "--db", str(db)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert not db.exists()


def test_bad_database_exits_2_and_is_untouched(tmp_path, tiny_matrix, capsys):
    path = write_matrix(tmp_path, tiny_matrix)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all" * 10)
    before = junk.read_bytes()
    assert main(["run", "--matrix", str(path), "--db", str(junk)]) == 2
    assert "not a SQLite database" in capsys.readouterr().err
    assert junk.read_bytes() == before


def test_sliding_window_perplexity_matches_a_plain_loop(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks._lm import sliding_window_nll

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = AutoTokenizer.from_pretrained(tiny_model_dir)("The history of the world is long. " * 30)["input_ids"]
    window, stride = 64, 24
    nll, count = sliding_window_nll(model, ids, window, stride, batch_size=3, device=torch.device("cpu"))
    # Independent computation: for each token t >= 1, its context is the window that
    # scores it; recompute token by token from the definition.
    expected, n, previous_end = 0.0, 0, 0
    with torch.no_grad():
        for begin in range(0, len(ids), stride):
            end = min(begin + window, len(ids))
            logits = model(torch.tensor([ids[begin:end]])).logits[0]
            for t in range(max(previous_end, begin + 1), end):
                expected -= torch.log_softmax(logits[t - begin - 1], -1)[ids[t]].item()
                n += 1
            previous_end = end
            if end == len(ids):
                break
    assert count == n == len(ids) - 1
    assert nll == pytest.approx(expected, rel=1e-5)
    assert math.isfinite(nll)
