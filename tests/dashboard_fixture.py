"""A results database from a tiny REAL matrix, shared by the dashboard and browser tests:
the tiny GPT-2 fine-tuned on the generated text-to-SQL set with random, magnitude,
movement, global movement and GUM (those registered) at two sparsities and three seeds,
a distilled group (random, magnitude, movement at the first sparsity, same seeds) so that
every claim of ``results.claims`` can be evaluated, plus one job that fails.

Below it: ``synthetic_results_db``, databases with chosen numbers and no training, for
the statistics and claims tests."""

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


DISTILLED_METHODS = ["random", "magnitude", "movement"]  # the distilled group, at SPARSITIES[0] only


def methods() -> list:
    gum = [{"name": "gum", "params": {"lambda_u": 1.0}}] if "gum" in METHODS else []
    learned = [m for m in ("movement", "global_movement") if m in METHODS]
    return ["random", "magnitude", *learned, *gum]


def distilled_methods() -> list:
    return [m for m in DISTILLED_METHODS if m in METHODS]


def distilled_matrix(model_dir: Path, seeds: list[int] = SEEDS) -> dict:
    """The distilled group: same settings as the main matrix plus distillation; its
    teachers are the main matrix's dense jobs (reused, not retrained)."""
    matrix = tiny_results_matrix(model_dir, seeds)
    return matrix | {"name": "dashboard-fixture-distilled", "methods": distilled_methods(), "sparsities": SPARSITIES[:1],
                     "train": matrix["train"] | {"distill": True}}


def fixture_job_count(seeds: list[int] = SEEDS) -> int:
    """Done jobs the fixture database holds."""
    return (1 + len(methods()) * len(SPARSITIES) + len(distilled_methods())) * len(seeds)


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
    assert run_cli(distilled_matrix(model_dir), folder, "distilled.yaml", db) == 0
    failing = tiny_results_matrix(model_dir, seeds=[0]) | {"models": [MISSING_MODEL], "methods": ["random"],
                                                          "sparsities": [0.5], "dense_baseline": False}
    assert run_cli(failing, folder, "failing.yaml", db) == 1
    _built[str(model_dir)] = db
    return db


# -- synthetic databases: chosen numbers, no training (the statistics' and claims' tests) --------
SYNTHETIC_TASK = "sql-embedded"
SYNTHETIC_MODEL = "tiny-synthetic"
SYNTHETIC_TRAIN = {"steps": 40, "batch_size": 4, "lr": 5e-4}
SYNTHETIC_EVAL = {"decoding": "greedy", "max_examples": 8}


def synthetic_job(method: str, sparsity: float, seed: int, metrics: dict, train: dict | None = None,
                  evaluation: dict | None = None, params: dict | None = None, label: str | None = None,
                  task: str = SYNTHETIC_TASK, model: str = SYNTHETIC_MODEL) -> dict:
    """One done job for ``synthetic_results_db``. ``metrics``: {(name, split): value} or
    {name: value} (split "test"); direction: lower is better for perplexity/loss names."""
    return {"method": method, "sparsity": sparsity, "seed": seed, "metrics": metrics,
            "train": dict(SYNTHETIC_TRAIN if train is None else train),
            "eval": dict(SYNTHETIC_EVAL if evaluation is None else evaluation), "params": params or {},
            "label": label or method, "task": task, "model": model}


def synthetic_results_db(db: Path, jobs: list[dict]) -> Path:
    """A results database holding done jobs with specs shaped like resolved job specs and
    chosen metric values. The Store creates the schema; the rows are inserted with the
    schema's ORM classes directly (no runner, no training)."""
    import hashlib
    import json
    from datetime import datetime

    from sqlalchemy.orm import Session

    from results.schema import Job, MetricRow
    from results.store import Store

    def digest(payload: dict) -> str:
        return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def protocol(task: str) -> str:
        """What run_job records about a registered task (its headline metrics); {} otherwise."""
        from harness.registry import TASKS

        try:
            cls = TASKS.get(task)
        except Exception:  # a made-up task name
            return "{}"
        return json.dumps({"task_facts": {"headline_metric": cls.headline_metric,
                                          "headline_metrics": list(cls.headline_metrics),
                                          "generated_data": cls.generated_data}})

    store = Store(str(db))
    stamp = datetime(2026, 1, 1)
    with Session(store.engine) as session, session.begin():
        for job in jobs:
            spec = {"model": {"name": job["model"], "source": "local"},
                    "task": {"name": job["task"], "params": {"eval_split": "test"}, "data": {"source": "embedded"}},
                    "method": {"name": job["method"], "params": job["params"]}, "sparsity": float(job["sparsity"]),
                    "seed": int(job["seed"]), "train": job["train"], "eval": job["eval"]}
            row = Job(spec_hash=digest(spec), group_hash=digest({k: v for k, v in spec.items() if k != "seed"}),
                      attempt=1, status="done", spec_json=json.dumps(spec, sort_keys=True), model=job["model"],
                      task=job["task"], method=job["method"], method_label=job["label"],
                      sparsity=float(job["sparsity"]), seed=int(job["seed"]), created_at=stamp, started_at=stamp,
                      finished_at=stamp, harness_version="test", versions_json="{}",
                      protocol_json=protocol(job["task"]))
            session.add(row)
            session.flush()
            for key, value in job["metrics"].items():
                name, split = key if isinstance(key, tuple) else (key, "test")
                lower = name in ("perplexity", "loss") or name.endswith("loss_final")
                session.add(MetricRow(job_id=row.id, name=name, split=split, value=float(value),
                                      higher_is_better=not lower))
    store.engine.dispose()
    return db


def claims_jobs(seeds=(0, 1, 2), sparsities=(0.5, 0.9), random_offset: float = 0.0, noise: float = 0.2,
                distilled: bool = True) -> list[dict]:
    """Every method the claims need, chosen so that each claim can be decided (on the task's
    headline metric, BLEU; exact match 10 lower): dense at 40;
    magnitude best of magnitude/movement; random = magnitude + ``random_offset`` (so 0 is
    within a 5 % margin, and −10 is clearly worse); movement 3 below magnitude; gum 2 above
    movement and global_movement with higher uniqueness; with distillation the methods
    are closer together (spread halved)."""
    jobs = []
    wiggle = [0.0, noise, -noise, 0.5 * noise, -0.5 * noise]
    for seed in seeds:
        w = wiggle[seed % len(wiggle)]
        jobs.append(synthetic_job("dense", 0.0, seed, {"bleu": 40.0 + w, "exact_match": 30.0 + w,
                                                       ("uniqueness", "analysis"): 0.9}))
        for sparsity in sparsities:
            drop = 10.0 * sparsity
            base = {"magnitude": 30.0 - drop, "movement": 27.0 - drop, "global_movement": 27.5 - drop,
                    "gum": 29.5 - drop}
            base["random"] = base["magnitude"] + random_offset
            unique = {"random": 0.8, "magnitude": 0.8, "movement": 0.7, "global_movement": 0.72, "gum": 0.85}
            for method, value in base.items():
                # per-method noise, different for each seed, so that differences have spread
                jitter = w * (1 + 0.3 * ("random", "magnitude", "movement", "global_movement", "gum").index(method))
                label = "gum(λ_u=1)" if method == "gum" else method
                params = {"lambda_u": 1.0} if method == "gum" else {}
                metrics = {"bleu": value + jitter, "exact_match": value - 10 + jitter,
                           ("uniqueness", "analysis"): unique[method] + jitter / 100}
                jobs.append(synthetic_job(method, sparsity, seed, metrics, params=params, label=label))
                if distilled:
                    center = 28.0 - drop
                    d_metrics = {"bleu": center + (value - center) / 2 + jitter,
                                 "exact_match": center - 10 + (value - center) / 2 + jitter,
                                 ("uniqueness", "analysis"): unique[method] + jitter / 100}
                    train = SYNTHETIC_TRAIN | {"distill": True, "distill_alpha_kd": 0.5, "distill_alpha_ce": 0.5,
                                               "distill_temperature": 2.0}
                    jobs.append(synthetic_job(method, sparsity, seed, d_metrics, train=train, params=params,
                                              label=label))
    return jobs
