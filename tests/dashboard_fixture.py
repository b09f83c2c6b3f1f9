"""A results database from a tiny REAL matrix, shared by the dashboard and browser tests:
the tiny GPT-2 fine-tuned on the generated text-to-SQL set with random, magnitude (and
GUM when registered) at two sparsities and three seeds, plus one job that fails."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.cli import main
from harness.registry import METHODS
from tests.conftest import write_matrix

TASK = "sql-embedded"
SEEDS = [0, 1, 2]
SPARSITIES = [0.5, 0.75]
MISSING_MODEL = "some-org/not-on-this-machine"
_built: dict[str, Path] = {}


def methods() -> list:
    gum = [{"name": "gum", "params": {"lambda_u": 1.0}}] if "gum" in METHODS else []
    return ["random", "magnitude", *gum]


def tiny_results_matrix(model_dir: Path, seeds: list[int] = SEEDS) -> dict:
    return {
        "name": "dashboard-fixture", "models": [str(model_dir)],
        "tasks": [{"name": TASK, "max_train_examples": 16}],
        "methods": methods(), "sparsities": SPARSITIES, "seeds": seeds,
        "train": {"steps": 6, "batch_size": 4, "max_length": 64},
        # No speed measurement: its gc.collect() costs ~1 s per model in a test process; the
        # Curves test adds speed-ups to a copy of the database instead.
        "eval": {"batch_size": 8, "max_examples": 8, "max_new_tokens": 12, "num_samples": 3, "analysis_examples": 8,
                 "speed_repeats": 0},
    }


def run_cli(matrix: dict, folder: Path, name: str, db: Path) -> int:
    threads = torch.get_num_threads()
    try:  # one thread: tiny models run many times faster than with two contended threads
        return main(["run", "--matrix", str(write_matrix(folder, matrix, name)), "--db", str(db), "--threads", "1"])
    finally:
        torch.set_num_threads(threads)


def build_results_db(folder: Path, model_dir: Path) -> Path:
    """Built once per test session (both test modules ask for it)."""
    if str(model_dir) in _built:
        return _built[str(model_dir)]
    db = folder / "results.db"
    assert run_cli(tiny_results_matrix(model_dir), folder, "matrix.yaml", db) == 0
    failing = tiny_results_matrix(model_dir, seeds=[0]) | {"models": [MISSING_MODEL], "methods": ["random"],
                                                          "sparsities": [0.5], "dense_baseline": False}
    assert run_cli(failing, folder, "failing.yaml", db) == 1
    _built[str(model_dir)] = db
    return db
