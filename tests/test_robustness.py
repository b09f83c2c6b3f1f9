"""Robustness: every numeric setting range-checked when a matrix loads, the settings listed
with their ranges, non-finite numbers and driver failures that never crash a matrix, the
default leaderboard (headline metrics, variants chosen on validation), one spec giving
the same numbers however it runs, and pinned hub revisions."""

from __future__ import annotations

import io
import json
import math
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sqlalchemy import text

from harness import hub, sections
from harness.cli import main
from harness.config import Matrix, load_matrix
from harness.job import Execution, run_job
from harness.orchestrate import _report_drift, pending, run_matrix
from harness.params import REQUIRED, Param, as_param
from harness.progress import Reporter
from harness.registry import METHODS, TASKS
from harness.spec import JobSpec
from harness.types import JobResult, Metric
from results.store import Store
from tests import faulty  # noqa: F401  (registers the test-only methods and tasks here too)
from tests.conftest import REPO, sqlite_rows, write_matrix
from tests.dashboard_fixture import synthetic_job, synthetic_results_db

CHEAP_TASK = "sql-embedded"  # the cheapest data identity to hash (the table's matrices all load one)
FAST_TASK = "news-embedded"  # the fastest job: a small corpus to tokenize (wiki-embedded's takes seconds)


# -- 3. ranges at load time ----------------------------------------------------------------------
def _numeric_kind(param: Param) -> type | None:
    kind = param._type()
    return kind if kind in (int, float) else None


def bad_values(param: Param) -> list:
    """Values a declaration must refuse: just past each end of its range (never its
    sentinel), a non-finite number where it has no range, and a value of the wrong type."""
    kind = _numeric_kind(param)
    step = 1 if kind is int else 0.5
    bad = []
    if param.minimum is not None:
        low = param.minimum if param.min_open else param.minimum - step
        while param.off is not None and low == param.off:
            low -= step
        bad.append(kind(low))
    if param.maximum is not None:
        bad.append(kind(param.maximum if param.max_open else param.maximum + step))
    if param.minimum is None and param.maximum is None:
        bad.append(float("nan") if kind is float else 1.5)
    bad.append("many")
    return bad


def declared_numeric() -> list[tuple[str, str, str, Param]]:
    """(where, owner, key, Param) for every numeric parameter: the train and eval sections,
    every registered method and every registered task."""
    found = []
    for section in ("train", "eval"):
        found += [(section, section, key, p) for key, p in sections.declared(section).items() if _numeric_kind(p)]
    for name in METHODS.names():
        cls = METHODS.get(name)
        found += [("method", name, key, as_param(p)) for key, p in cls.defaults.items() if _numeric_kind(as_param(p))]
    for name in TASKS.names():
        cls = TASKS.get(name)
        found += [("task", name, key, as_param(p)) for key, p in cls.defaults.items() if _numeric_kind(as_param(p))]
    return found


def _required_method_params(name: str) -> dict:
    cls = METHODS.get(name)
    required = [k for k, p in cls.defaults.items() if as_param(p).required] + list(cls.required)
    return {key: 1.0 for key in required}


def malformed_case(where: str, owner: str, key: str, value, model: str) -> tuple[dict, str]:
    """A matrix that sets ``key`` of ``owner`` to ``value`` (everything else valid), and the
    field its error must name."""
    matrix = {"name": "bad", "models": [model], "tasks": [CHEAP_TASK], "methods": ["random"], "sparsities": [0.5]}
    if where in ("train", "eval"):
        matrix[where] = {key: value}
        return matrix, f"{where}.{key}"
    if where == "method":
        matrix["methods"] = [{"name": owner, "params": {**_required_method_params(owner), key: value}}]
        return matrix, f"methods[0].params.{key}"
    if TASKS.get(owner).task_type == "evaluation_only":  # only under eval.extra_tasks
        name = owner.replace("*", "hellaswag")
        matrix["eval"] = {"extra_tasks": [{"name": name, key: value}]}
        return matrix, f"extra_tasks[0].{key}"
    matrix["tasks"] = [{"name": owner, key: value}]
    return matrix, f"tasks[0].{key}"


GENERATED = [(where, owner, key, value) for where, owner, key, param in declared_numeric() for value in bad_values(param)]
HAND_WRITTEN = [  # (matrix overrides, field)
    ({"train": {"steps": -5}}, "train.steps"),
    ({"train": {"steps": 0}}, "train.steps"),
    ({"train": {"batch_size": 0}}, "train.batch_size"),
    ({"train": {"lr": -1.0}}, "train.lr"),
    ({"train": {"lr": 0}}, "train.lr"),
    ({"train": {"lr": "fast"}}, "train.lr"),
    ({"train": {"warmup_frac": 0.5}}, "train.warmup_frac"),
    ({"train": {"max_length": 1}}, "train.max_length"),
    ({"train": {"adam_beta2": 1.0}}, "train.adam_beta2"),
    ({"train": {"steps": 10.5}}, "train.steps"),
    ({"train": {"steps": True}}, "train.steps"),
    ({"eval": {"uniqueness_threshold": 0}}, "eval.uniqueness_threshold"),
    ({"eval": {"uniqueness_threshold": 1.5}}, "eval.uniqueness_threshold"),
    ({"eval": {"max_new_tokens": -1}}, "eval.max_new_tokens"),
    ({"eval": {"speed_repeats": -1}}, "eval.speed_repeats"),
    ({"eval": {"analysis_examples": -3}}, "eval.analysis_examples"),
    ({"eval": {"length_penalty": float("inf")}}, "eval.length_penalty"),
    ({"sparsities": [1.3]}, "sparsities[0]"),
    ({"sparsities": [0.5, -0.1]}, "sparsities[1]"),
    ({"seeds": [-1]}, "seeds[0]"),
    ({"tasks": [{"name": CHEAP_TASK, "train": {"steps": 0}}]}, "tasks[0].train.steps"),
    ({"tasks": [{"name": CHEAP_TASK, "eval": {"batch_size": 0}}]}, "tasks[0].eval.batch_size"),
    ({"tasks": [{"name": "wiki-embedded", "stride": -2}]}, "tasks[0].stride"),
    ({"methods": [{"name": "gum", "params": {"lambda_u": [0.1, -1.0]}}]}, "methods[0].params.lambda_u"),
    ({"methods": [{"name": "gum", "params": {"lambda_u": 1.0, "momentum": 0}}]}, "methods[0].params.momentum"),
    ({"methods": [{"name": "soft_movement", "params": {"threshold": 1.0}}]}, "methods[0].params.threshold"),
]


def assert_refused(argv: list[str], db: Path, field: str, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: "), err
    assert field in err, (field, err)
    assert not db.exists(), "a refused matrix must not create the database"
    return err


def test_the_table_covers_every_numeric_parameter():
    covered = {(where, owner, key) for where, owner, key, _ in GENERATED}
    assert covered == {(where, owner, key) for where, owner, key, _ in declared_numeric()}
    owners = {owner for where, owner, _, _ in GENERATED}
    assert {"train", "eval"} <= owners
    # every registered method and task with a numeric parameter is in the table
    assert {m for m in METHODS.names() if any(_numeric_kind(as_param(p)) for p in METHODS.get(m).defaults.values())} <= owners
    assert {t for t in TASKS.names() if any(_numeric_kind(as_param(p)) for p in TASKS.get(t).defaults.values())} <= owners
    for required in ("steps", "batch_size", "lr", "warmup_frac", "max_length"):
        assert ("train", "train", required) in covered
    assert len(GENERATED) >= 2 * len(covered)


@pytest.mark.parametrize("where, owner, key, value", GENERATED,
                         ids=[f"{o}.{k}={v!r}" for _, o, k, v in GENERATED])
def test_malformed_value_is_refused_at_load_time(tmp_path, tiny_model_dir, capsys, where, owner, key, value):
    matrix, field = malformed_case(where, owner, key, value, str(tiny_model_dir))
    db = tmp_path / "r.db"
    err = assert_refused(["run", "--matrix", str(write_matrix(tmp_path, matrix)), "--db", str(db)], db, field, capsys)
    assert f"{field}:" in err


@pytest.mark.parametrize("overrides, field", HAND_WRITTEN, ids=[f for _, f in HAND_WRITTEN])
def test_hand_written_malformed_values(tmp_path, tiny_model_dir, capsys, overrides, field):
    matrix = {"name": "bad", "models": [str(tiny_model_dir)], "tasks": [CHEAP_TASK], "methods": ["random"],
              "sparsities": [0.5]} | overrides
    db = tmp_path / "r.db"
    assert_refused(["run", "--matrix", str(write_matrix(tmp_path, matrix)), "--db", str(db)], db, field, capsys)


def test_a_refused_matrix_leaves_an_existing_database_untouched(tmp_path, tiny_model_dir, capsys):
    db = tmp_path / "r.db"
    store = Store(str(db))
    run = store.start_run("earlier", "m.yaml", "h")
    store.finish_run(run)
    store.engine.dispose()
    before = db.read_bytes()
    matrix = {"name": "bad", "models": [str(tiny_model_dir)], "tasks": [CHEAP_TASK], "methods": ["random"],
              "sparsities": [0.5], "train": {"steps": -5}}
    assert main(["run", "--matrix", str(write_matrix(tmp_path, matrix)), "--db", str(db)]) == 2
    assert "train.steps" in capsys.readouterr().err
    assert db.read_bytes() == before and not (tmp_path / "r.db-wal").exists()


def test_the_command_line_refuses_in_one_line_with_exit_2(tmp_path, tiny_model_dir):
    matrix = {"name": "bad", "models": [str(tiny_model_dir)], "tasks": [CHEAP_TASK], "methods": ["random"],
              "sparsities": [0.5], "train": {"batch_size": 0}}
    db = tmp_path / "r.db"
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--matrix", str(write_matrix(tmp_path, matrix)),
                           "--db", str(db)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: train.batch_size: 0 is out of range; allowed: integer >= 1"]
    assert not db.exists() and list(tmp_path.iterdir()) == [tmp_path / "matrix.yaml"]


def test_sentinels_keep_their_meaning(tmp_path, tiny_model_dir, capsys):
    matrix = {"name": "ok", "models": [str(tiny_model_dir)], "tasks": [CHEAP_TASK], "methods": ["random"],
              "sparsities": [0.5], "train": {"max_length": 0},
              "eval": {"max_new_tokens": 0, "analysis_examples": 0, "speed_repeats": 0, "max_examples": 0,
                       "validation_examples": 0, "no_repeat_ngram_size": 0}}
    path = write_matrix(tmp_path, matrix)
    db = tmp_path / "r.db"
    assert main(["run", "--matrix", str(path), "--db", str(db), "--dry-run"]) == 0
    assert not db.exists()
    capsys.readouterr()
    spec = next(j for j in load_matrix(path).jobs if j.prunes)
    task = TASKS.get(CHEAP_TASK)
    assert spec.train["max_length"] == task.train_defaults["max_length"]  # 0 = the task's default
    assert spec.eval["max_new_tokens"] == task.eval_defaults["max_new_tokens"]
    assert spec.eval["analysis_examples"] == 0 and "uniqueness_threshold" not in spec.eval  # 0 = off: keys dropped
    assert spec.eval["speed_repeats"] == 0 and "speed_batch_size" not in spec.eval
    assert spec.eval["max_examples"] == 0 and spec.eval["validation_examples"] == 0


# -- 3b. the settings, listed with their ranges --------------------------------------------------
def blocks(out: str) -> dict[str, list[str]]:
    """Entry name -> its indented detail lines, from `harness list ... --verbose`."""
    result: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line and not line.startswith(" "):
            current = line.split()[0]
            result[current] = []
        elif current is not None:
            result[current].append(line.strip())
    return result


def assert_rows(lines: list[str], declared: dict) -> None:
    for key, spec in declared.items():
        param = as_param(spec)
        row = next((l for l in lines if l.split()[0] == key), None)
        assert row is not None, (key, lines)
        default = "(required)" if param.required else repr(param.default)
        assert row.split(None, 1)[1].startswith(default), (key, row)
        assert param.allowed() in row and param.doc in row, (key, row)


@pytest.mark.parametrize("what, registry", [("methods", METHODS), ("tasks", TASKS)])
def test_list_verbose_shows_every_parameter(capsys, what, registry):
    assert main(["list", what, "--verbose"]) == 0
    found = blocks(capsys.readouterr().out)
    assert set(found) == set(registry.names())
    for name in registry.names():
        cls = registry.get(name)
        lines = found[name]
        if cls.defaults:
            assert_rows(lines, cls.defaults)
        else:
            assert "(no parameters)" in lines
    if what == "methods":
        gum = next(l for l in found["gum"] if l.startswith("lambda_u"))
        assert "(required)" in gum and "number >= 0" in gum
    else:
        assert any("headline metric perplexity" in l for l in found["wiki-embedded"])
    assert main(["list", what]) == 0  # without --verbose: one line per entry, as before
    assert all(not line.startswith(" ") for line in capsys.readouterr().out.splitlines())


@pytest.mark.parametrize("section", ["train", "eval"])
def test_list_sections_show_every_setting(capsys, section):
    assert main(["list", section]) == 0
    out = capsys.readouterr().out
    lines = [line.strip() for line in out.splitlines() if line.startswith("    ")]
    assert_rows(lines, sections.declared(section))
    for feature in sections.FEATURES:
        if feature.section == section:
            assert f"  {feature.name}" in out
    if section == "train":
        assert "steps              200     integer >= 1" in out
    else:
        assert "speed_repeats" in out and "(0 = no speed measurement)" in out


# -- 4. non-finite values and driver failures never crash the driver -----------------------------
def small_matrix(model_dir: Path, **overrides) -> dict:
    return {"name": "robust", "models": [str(model_dir)], "pretrained_baseline": False, "dense_baseline": False,
            "tasks": [{"name": FAST_TASK, "max_train_examples": 16, "max_eval_tokens": 300}],
            "methods": ["random"], "sparsities": [0.5],
            "train": {"steps": 4, "batch_size": 4, "max_length": 64},
            "eval": {"batch_size": 4, "analysis_examples": 0, "speed_repeats": 0, "validation_examples": 2}} | overrides


def rows(db: Path, sql: str) -> list[tuple]:
    return sqlite_rows(db, sql)


def test_non_finite_metrics_fail_their_job_and_the_matrix_goes_on(tmp_path, tiny_model_dir):
    tasks = [{"name": FAST_TASK, "max_train_examples": 16, "max_eval_tokens": 300},
             {"name": "test-inf-metric", "max_train_examples": 16, "max_eval_tokens": 300},
             {"name": "test-inf-metric", "max_train_examples": 16, "max_eval_tokens": 300, "value": "nan",
              "role": "validation"}]
    matrix = load_matrix(write_matrix(tmp_path, small_matrix(tiny_model_dir, tasks=tasks)))
    db = tmp_path / "r.db"
    store, output = Store(str(db)), io.StringIO()
    code = run_matrix(matrix, store, matrix.jobs, execution=Execution("cpu", 1, save_models=False),
                      reporter=Reporter(output, interactive=False))
    assert code == 1
    jobs = rows(db, "select task, status, error, traceback from jobs order by id")
    assert [(t, s) for t, s, _, _ in jobs] == [(FAST_TASK, "done"), ("test-inf-metric", "failed"),
                                                ("test-inf-metric", "failed")]
    assert jobs[1][2] == "FloatingPointError: metric bad_metric [test] is not finite"
    assert jobs[2][2] == "FloatingPointError: metric bad_metric [validation] is not finite"
    assert all("FloatingPointError" in tb for _, _, _, tb in jobs[1:])
    assert rows(db, "select count(*) from metrics m join jobs j on j.id = m.job_id where j.status != 'done'") == [(0,)]
    assert rows(db, "select status from runs") == [("finished",)]
    assert "1 done, 2 failed" in output.getvalue()


@pytest.mark.parametrize("phase", ["finish", "start"])
def test_a_failure_while_recording_fails_that_job_only(tmp_path, tiny_model_dir, monkeypatch, phase):
    matrix = load_matrix(write_matrix(tmp_path, small_matrix(tiny_model_dir, methods=["random", "magnitude"],
                                                             dense_baseline=True)))
    db = tmp_path / "r.db"
    store, output = Store(str(db)), io.StringIO()
    victim = {}  # the job id whose bookkeeping breaks: the second one recorded
    original_finish, original_status = Store.finish_job, Store.set_status

    def finish_job(self, job_id, result, worker=None):
        if phase == "finish" and job_id == 2:
            victim["id"] = job_id
            raise RuntimeError("disk full (simulated)")
        return original_finish(self, job_id, result, worker)

    def set_status(self, job_id, status, *args, **kwargs):
        if phase == "start" and status == "running" and job_id == 2:
            victim["id"] = job_id
            raise RuntimeError("connection reset (simulated)")
        return original_status(self, job_id, status, *args, **kwargs)

    monkeypatch.setattr(Store, "finish_job", finish_job)
    monkeypatch.setattr(Store, "set_status", set_status)
    code = run_matrix(matrix, store, matrix.jobs, execution=Execution("cpu", 1, save_models=False),
                      reporter=Reporter(output, interactive=False))
    assert code == 1 and victim["id"] == 2
    jobs = rows(db, "select id, status, error, traceback from jobs order by id")
    statuses = {job_id: status for job_id, status, _, _ in jobs}
    assert statuses == {1: "done", 2: "failed", 3: "done"}, jobs
    _, _, error, traceback = jobs[1]
    assert error.startswith("recording failed: RuntimeError: ") and "(simulated)" in error
    assert "Traceback" in traceback and "RuntimeError" in traceback
    assert rows(db, "select status from runs") == [("finished",)]
    assert rows(db, "select count(*) from jobs where status in ('running', 'pending')") == [(0,)]
    assert rows(db, "select count(*) from metrics where job_id = 2") == [(0,)]
    assert "2 done, 1 failed" in output.getvalue()


# -- 5. a readable default leaderboard -------------------------------------------------------------
LM, SUMM, MODEL = "wiki-embedded", "summ-embedded", "m"
# gum variants: validation prefers λ_u=1 at 0.5 and λ_u=0.1 at 0.9; the test split would pick λ_u=10 at both
GUM_VALIDATION = {0.5: {0.1: 31.0, 1.0: 30.0, 10.0: 32.0}, 0.9: {0.1: 40.0, 1.0: 42.0, 10.0: 41.0}}
GUM_TEST = {0.5: {0.1: 33.0, 1.0: 32.0, 10.0: 29.0}, 0.9: {0.1: 43.0, 1.0: 44.0, 10.0: 39.0}}


def lm_metrics(test: float, validation: float | None, speedup: float, unique: float) -> dict:
    metrics = {("perplexity", "test"): test, ("loss", "test"): math.log(test), ("prefill_speedup", "speed"): speedup,
               ("uniqueness", "analysis"): unique, ("train_loss_final", "train"): 3.0,
               ("eval_seconds", "cost"): 1.0, ("ffn_sparsity", "model"): 0.5}
    if validation is not None:
        metrics |= {("perplexity", "validation"): validation, ("loss", "validation"): math.log(validation)}
    return metrics


def board_jobs(validation: bool = True) -> list[dict]:
    jobs = []
    for seed in (0, 1):
        w = 0.1 * seed
        jobs.append(synthetic_job("dense", 0.0, seed, lm_metrics(25 + w, 24 + w if validation else None, 1.0, 0.9),
                                  task=LM, model=MODEL))
        for sparsity in (0.5, 0.9):
            worse = 35 if sparsity == 0.5 else 50
            jobs.append(synthetic_job("random", sparsity, seed, lm_metrics(worse + w, worse - 1 + w if validation else None,
                                                                            1 + sparsity, 0.8), task=LM, model=MODEL))
            for lambda_u in (0.1, 1.0, 10.0):
                label = f"gum(λ_u={lambda_u:g})"
                metrics = lm_metrics(GUM_TEST[sparsity][lambda_u] + w,
                                     GUM_VALIDATION[sparsity][lambda_u] + w if validation else None,
                                     1.5 + sparsity + lambda_u / 100, 0.7 + lambda_u / 100)
                jobs.append(synthetic_job("gum", sparsity, seed, metrics, params={"lambda_u": lambda_u}, label=label,
                                          task=LM, model=MODEL))
    jobs.append(synthetic_job("pretrained", 0.0, 0, lm_metrics(60, 59 if validation else None, 1.0, 0.95),
                              task=LM, model=MODEL))
    for method, base in (("dense", 30.0), ("magnitude", 20.0)):
        rouge = {("rouge1", "test"): base + 5, ("rouge2", "test"): base - 10, ("rougeL", "test"): base,
                 ("rougeLsum", "test"): base + 1, ("rougeL", "validation"): base - 1}
        jobs.append(synthetic_job(method, 0.0 if method == "dense" else 0.5, 0, rouge, task=SUMM, model=MODEL))
    for lambda_u, valid in ((0.1, 15.0), (1.0, 20.0), (10.0, 20.0)):  # a tie on validation: both kept
        rouge = {("rouge1", "test"): 24.0, ("rouge2", "test"): 9.0, ("rougeL", "test"): 18.0 + lambda_u,
                 ("rougeLsum", "test"): 19.0}
        if validation:
            rouge[("rougeL", "validation")] = valid
        jobs.append(synthetic_job("gum", 0.5, 0, rouge, params={"lambda_u": lambda_u}, label=f"gum(λ_u={lambda_u:g})",
                                  task=SUMM, model=MODEL))
    return jobs


@pytest.fixture(scope="module")
def board_db(tmp_path_factory) -> Path:
    return synthetic_results_db(tmp_path_factory.mktemp("board") / "board.db", board_jobs())


def leaderboard(capsys, *argv: str) -> str:
    assert main(["leaderboard", *argv]) == 0
    return capsys.readouterr().out


def tables(out: str) -> dict[str, list[str]]:
    """'task · model · metric [split]' -> its lines (header row onwards)."""
    found, current = {}, None
    for line in out.splitlines():
        if line.startswith("== "):
            current = line[3:].split(" (")[0]
            found[current] = []
        elif current and line:
            found[current].append(line)
    return found


def row(lines: list[str], label: str) -> list[str]:
    return next(line for line in lines if line.split("  ")[0].strip() == label).split()


def test_default_leaderboard_shows_headline_metrics_speed_and_uniqueness(board_db, capsys):
    out = leaderboard(capsys, "--db", str(board_db))
    assert list(tables(out)) == [  # per task (by name): its headline metrics, then speed and uniqueness
        *(f"{SUMM} · {MODEL} · {m} [test]" for m in TASKS.get(SUMM).headline_metrics),
        f"{LM} · {MODEL} · perplexity [test]", f"{LM} · {MODEL} · prefill_speedup [speed]",
        f"{LM} · {MODEL} · uniqueness [analysis]"]
    assert set(TASKS.get(SUMM).headline_metrics) == {"rouge1", "rouge2", "rougeL"}  # not rougeLsum
    perplexity = tables(out)[f"{LM} · {MODEL} · perplexity [test]"]
    labels = [line.split("  ")[0].strip() for line in perplexity[2:] if not line.startswith("*")]
    assert labels[:2] == ["dense", "pretrained"] and labels[2:] == ["gum(λ_u=0.1)*", "gum(λ_u=1)*", "random"]
    # the variant chosen on validation at each sparsity, with its test numbers
    assert row(perplexity, "gum(λ_u=1)*")[1:] == ["32.05", "±", "0.071", "(2)"]  # s=0.5 only
    assert row(perplexity, "gum(λ_u=0.1)*")[1:] == ["43.05", "±", "0.071", "(2)"]  # s=0.9 only
    assert perplexity[-1].startswith("* variant chosen on validation") and "perplexity [validation]" in perplexity[-1]
    rouge = tables(out)[f"{SUMM} · {MODEL} · rougeL [test]"]  # tied on validation: both shown, both marked
    assert [line.split("  ")[0] for line in rouge if line.startswith("gum")] == ["gum(λ_u=1)*", "gum(λ_u=10)*"]
    rouge1 = tables(out)[f"{SUMM} · {MODEL} · rouge1 [test]"]  # no rouge1 [validation]: chosen on rougeL
    assert [line.split("  ")[0] for line in rouge1 if line.startswith("gum")] == ["gum(λ_u=1)*", "gum(λ_u=10)*"]
    assert "rougeL [validation]" in rouge1[-1]
    speed = tables(out)[f"{LM} · {MODEL} · prefill_speedup [speed]"]  # chosen on the headline metric
    assert row(speed, "gum(λ_u=1)*")[1] == "2.01" and "perplexity [validation]" in speed[-1]
    lm = "\n".join(line for key, lines in tables(out).items() if key.startswith(LM) for line in lines)
    assert "gum(λ_u=10)" not in lm and "loss" not in out and "[cost]" not in out
    assert not any("[validation]" in key or "rougeLsum" in key for key in tables(out))


def test_select_on_all_shows_every_variant(board_db, capsys):
    out = leaderboard(capsys, "--db", str(board_db), "--select-on", "all")
    perplexity = tables(out)[f"{LM} · {MODEL} · perplexity [test]"]
    for lambda_u in ("0.1", "1", "10"):
        assert len(row(perplexity, f"gum(λ_u={lambda_u})")) == 9  # label + two cells
    assert "*" not in out and "variant chosen" not in out


def test_metric_all_and_one_metric(board_db, capsys):
    every = tables(leaderboard(capsys, "--db", str(board_db), "--metric", "all", "--select-on", "all"))
    expected = {f"{t} · {MODEL} · {m} [{s}]" for t, m, s in sqlite_rows(board_db, (
        "select distinct j.task, m.name, m.split from metrics m join jobs j on j.id = m.job_id"))}
    assert set(every) == expected
    one = tables(leaderboard(capsys, "--db", str(board_db), "--metric", "perplexity"))
    assert list(one) == [f"{LM} · {MODEL} · perplexity [test]", f"{LM} · {MODEL} · perplexity [validation]"]
    chosen = one[f"{LM} · {MODEL} · perplexity [validation]"]
    assert row(chosen, "gum(λ_u=1)*")[1] == "30.05"
    out = leaderboard(capsys, "--db", str(board_db), "--metric", "rougeLsum")
    assert list(tables(out)) == [f"{SUMM} · {MODEL} · rougeLsum [test]"]


def test_json_marks_the_chosen_variants(board_db, capsys):
    records = json.loads(leaderboard(capsys, "--db", str(board_db), "--format", "json"))
    gum = [r for r in records if r["method"] == "gum" and r["metric"] == "perplexity"]
    assert {(r["method_label"], r["sparsity"]) for r in gum} == {("gum(λ_u=1)", 0.5), ("gum(λ_u=0.1)", 0.9)}
    assert {r["chosen_on"] for r in gum} == {"perplexity [validation]"}
    assert {r["chosen_on"] for r in records if r["method"] != "gum"} == {""}


def test_without_validation_metrics_every_variant_is_shown_and_said_once(tmp_path, capsys):
    db = synthetic_results_db(tmp_path / "noval.db", board_jobs(validation=False))
    out = leaderboard(capsys, "--db", str(db))
    perplexity = tables(out)[f"{LM} · {MODEL} · perplexity [test]"]
    assert all(row(perplexity, f"gum(λ_u={v})") for v in ("0.1", "1", "10")) and "*" not in "".join(perplexity)
    assert out.count("no validation metrics") == 1


def test_dashboard_stars_read_the_validation_split(monkeypatch, board_db, tmp_path):
    from streamlit.testing.v1 import AppTest

    def star_rows(db: Path) -> tuple[dict[str, str], str]:
        monkeypatch.setenv("HARNESS_DB", str(db))
        at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=120)
        at.query_params["page"] = "leaderboard"
        at.run()
        at.sidebar.selectbox(key="task").set_value(LM).run()
        at.selectbox(key="leaderboard_metric").set_value(("perplexity", "test")).run()
        assert not at.exception and not at.error
        table = at.dataframe[0].value
        starred = {column: label for column in table.columns for label in table.index
                   if str(table.loc[label, column]).endswith("★")}
        return starred, " ".join(c.value for c in at.caption)

    starred, caption = star_rows(board_db)
    # validation's best (the test split would star gum(λ_u=10) in both columns)
    assert starred == {"s=0.5": "gum(λ_u=1)", "s=0.9": "gum(λ_u=0.1)"}
    assert "on split `validation`" in caption
    bare = synthetic_results_db(tmp_path / "noval.db", board_jobs(validation=False))
    starred, caption = star_rows(bare)
    assert starred == {"s=0.5": "gum(λ_u=10)", "s=0.9": "gum(λ_u=10)"}
    assert "no validation rows" in caption


# -- 6. same spec, same numbers ---------------------------------------------------------------------
TIMING = ("seconds", "_ms", "per_s", "speedup", "memory")


def numbers(db: Path, attempt: int | None = None) -> dict[tuple[str, str, str], float]:
    where = "" if attempt is None else f" and j.attempt = {attempt}"
    return {(h, name, split): value for h, name, split, value in rows(db, (
        "select j.spec_hash, m.name, m.split, m.value from metrics m join jobs j on j.id = m.job_id "
        f"where j.status = 'done'{where}")) if split not in ("cost", "speed") and not any(t in name for t in TIMING)}


def test_same_spec_same_numbers_however_it_runs(tmp_path, tiny_model_dir):
    matrix = small_matrix(tiny_model_dir, methods=["magnitude", {"name": "gum", "params": {"lambda_u": 1.0}}],
                          dense_baseline=True)
    matrix["eval"] |= {"analysis_examples": 4}
    path = write_matrix(tmp_path, matrix)
    first, second = tmp_path / "local.db", tmp_path / "processes.db"
    threads = torch.get_num_threads()
    try:
        assert main(["run", "--matrix", str(path), "--db", str(first), "--threads", "1", "--no-save-models"]) == 0
        gum = next(j for j in load_matrix(path).jobs if j.method["name"] == "gum")
        assert main(["run", "--matrix", str(path), "--db", str(first), "--threads", "1", "--no-save-models",
                     "--force", "--only", gum.short_hash]) == 0
        assert main(["run", "--matrix", str(path), "--db", str(second), "--threads", "1", "--no-save-models",
                     "--executor", "processes", "--jobs", "2"]) == 0
    finally:
        torch.set_num_threads(threads)
    once, again = numbers(first, attempt=1), numbers(first, attempt=2)
    assert {h for h, _, _ in again} == {gum.spec_hash} and len(again) > 8
    assert again == {key: value for key, value in once.items() if key[0] == gum.spec_hash}
    parallel = numbers(second)
    assert len(parallel) == len(once) and parallel == once
    assert {split for _, _, split in once} >= {"test", "validation", "analysis", "train", "model"}


# -- 7. pinned hub revisions ---------------------------------------------------------------------------
OLD, NEW = "a" * 40, "b" * 40


def hub_spec(name: str = "gpt2") -> JobSpec:
    spec = load_hub_template()
    return JobSpec({"name": name, "source": "hub", "revision": "main"}, spec.task, spec.method, spec.sparsity,
                   spec.seed, spec.train, spec.eval)


def load_hub_template() -> JobSpec:
    from harness.config import expand

    jobs = expand({"name": "hub", "models": ["some-org/not-on-this-machine"], "tasks": [CHEAP_TASK],
                   "methods": ["random"], "sparsities": [0.5], "dense_baseline": False, "pretrained_baseline": False},
                  REPO)
    return jobs[0]


def test_resolve_revisions_and_drift_with_a_stub(monkeypatch):
    calls = []

    def stub(repo, revision, kind):
        calls.append((repo, revision, kind))
        return {"gpt2": NEW, "org/data": "c" * 40}.get(repo)

    monkeypatch.setattr(hub, "resolve_commit", stub)
    spec = hub_spec().to_dict()
    spec["task"]["data"] = {"source": "hub", "hub_id": "org/data", "revision": "refs/convert/parquet"}
    assert hub.hub_references(spec) == {"model:gpt2": ("gpt2", "main", "model"),
                                        "dataset:org/data": ("org/data", "refs/convert/parquet", "dataset")}
    assert hub.resolve_revisions(spec) == {"model:gpt2": NEW, "dataset:org/data": "c" * 40}
    cache: dict = {}
    calls.clear()
    for _ in range(3):
        assert hub.resolve_revisions(spec, cache, only={"model:gpt2"}) == {"model:gpt2": NEW}
    assert calls == [("gpt2", "main", "model")]  # asked once
    monkeypatch.setattr(hub, "resolve_commit", lambda repo, revision, kind: None)  # offline: nothing resolves
    assert hub.resolve_revisions(spec) == {}
    assert hub.drift({"model:gpt2": OLD}, {"model:gpt2": NEW}) == [
        "model:gpt2 now resolves to bbbbbbbbbbbb, the done job used aaaaaaaaaaaa"]
    assert hub.drift({"model:gpt2": OLD}, {"model:gpt2": OLD}) == []
    assert hub.drift({"model:gpt2": OLD}, {}) == []  # offline now: nothing claimed
    assert hub.drift({}, {"model:gpt2": NEW}) == []  # the job ran offline: nothing to compare


def done_hub_job(db: Path, spec: JobSpec, resolved: dict[str, str]) -> Store:
    store = Store(str(db))
    run = store.start_run("hub", "m.yaml", "h")
    job_id, _ = store.claim_next(run, pending(spec), {}, "test")
    store.set_status(job_id, "running")
    store.finish_job(job_id, JobResult(metrics=[Metric("bleu", 1.0, True)], resolved_revisions=resolved))
    store.finish_run(run)
    return store


def test_drift_is_one_line_per_changed_reference(tmp_path, monkeypatch):
    spec, other = hub_spec(), hub_spec("org/other")
    store = done_hub_job(tmp_path / "r.db", spec, {"model:gpt2": OLD})
    done_hub_job(tmp_path / "r.db", other, {})  # ran offline: recorded nothing, so no hub call for it
    assert json.loads(rows(tmp_path / "r.db", "select resolved_json from jobs where id = 1")[0][0]) == {"model:gpt2": OLD}
    calls = []
    monkeypatch.setattr(hub, "resolve_commit", lambda repo, revision, kind: calls.append(repo) or NEW)
    output = io.StringIO()
    _report_drift(store, [spec, other, spec], Reporter(output, interactive=False))
    assert output.getvalue().splitlines() == [
        f"  note {spec.short_hash} {spec.label}: model:gpt2 now resolves to bbbbbbbbbbbb, the done job used "
        f"aaaaaaaaaaaa; its results are kept (rerun with --force --only {spec.short_hash} to redo it at the new "
        f"commit)"] * 2
    assert calls == ["gpt2"]
    # the same note when a rerun of the matrix finds the job done (and runs nothing)
    output = io.StringIO()
    matrix = Matrix("hub", tmp_path / "m.yaml", "h", [spec])
    assert run_matrix(matrix, store, [spec], reporter=Reporter(output, interactive=False)) == 0
    assert sum("now resolves to bbbbbbbbbbbb" in line for line in output.getvalue().splitlines()) == 1
    monkeypatch.setattr(hub, "resolve_commit", lambda repo, revision, kind: OLD)  # unchanged: nothing said
    output = io.StringIO()
    _report_drift(store, [spec], Reporter(output, interactive=False))
    assert output.getvalue() == ""


def test_a_hub_model_job_loads_and_records_the_resolved_commit(tmp_path, tiny_model_dir, monkeypatch):
    """The hub is unreachable here: the stub resolves the commit and the tiny local model
    stands in for the hub's weights; what matters is which revision the job asked for."""
    from harness import job as job_module
    from harness.models import load_model as real_load

    monkeypatch.setattr(hub, "resolve_commit", lambda repo, revision, kind: NEW if kind == "model" else None)
    asked = []

    def load_model(identity, device, dtype=torch.float32):
        asked.append(identity)
        return real_load({"name": "tiny", "source": "local", "path": str(tiny_model_dir)}, device, dtype)

    monkeypatch.setattr(job_module, "load_model", load_model)
    template = load_matrix(write_matrix(tmp_path, small_matrix(tiny_model_dir))).jobs[0]
    spec = JobSpec({"name": "gpt2", "source": "hub", "revision": "main"}, template.task, template.method,
                   template.sparsity, template.seed, template.train, template.eval)
    threads = torch.get_num_threads()
    try:
        result = run_job(spec, Execution("cpu", 1))
    finally:
        torch.set_num_threads(threads)
    assert [a["revision"] for a in asked] == [NEW] and asked[0]["name"] == "gpt2"
    assert result.resolved_revisions == {"model:gpt2": NEW}
    store = Store(str(tmp_path / "r.db"))
    run = store.start_run("hub", "m.yaml", "h")
    job_id, _ = store.claim_next(run, pending(spec), {}, "test")
    store.set_status(job_id, "running")
    store.finish_job(job_id, result)
    assert store.resolved_revisions([spec.spec_hash]) == {spec.spec_hash: {"model:gpt2": NEW}}


def test_a_hub_dataset_job_reads_and_records_the_resolved_commit(tmp_path, tiny_model_dir, monkeypatch):
    """A task whose data is on the hub (wikisql): the stub resolves the dataset's ref to a
    commit, the rows the job reads are asked for at that commit (the embedded SQL rows, in
    WikiSQL's hub schema, stand in for the hub's), and the commit is recorded."""
    from tasks import _data
    from tasks._data import read_jsonl
    from tasks.sql_embedded import SQL_FILES

    commit = "c" * 40
    monkeypatch.setattr(hub, "resolve_commit", lambda repo, revision, kind: commit if kind == "dataset" else None)
    asked = []

    def load_hub_split(hub_id, config, revision, split):
        asked.append((hub_id, revision, split))
        return read_jsonl(SQL_FILES[split])[:24]

    monkeypatch.setattr(_data, "load_hub_split", load_hub_split)
    matrix = small_matrix(tiny_model_dir, tasks=[{"name": "wikisql", "max_train_examples": 8}])
    matrix["eval"] |= {"max_examples": 2, "max_new_tokens": 4, "num_samples": 0}
    (spec,) = load_matrix(write_matrix(tmp_path, matrix)).jobs
    assert spec.task["data"]["source"] == "hub" and spec.task["params"]["revision"] == "refs/convert/parquet"
    threads = torch.get_num_threads()
    try:
        result = run_job(spec, Execution("cpu", 1))
    finally:
        torch.set_num_threads(threads)
    assert result.resolved_revisions == {"dataset:wikisql": commit}
    assert {split for _, _, split in asked} >= {"train", "test", "validation"}
    assert {(hub_id, revision) for hub_id, revision, _ in asked} == {("wikisql", commit)}
