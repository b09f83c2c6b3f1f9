"""The processes and Ray executors run a small matrix for real and must agree with the
sequential executor (one CPU thread per job everywhere, so arithmetic is identical);
every executor respects job dependencies."""

from __future__ import annotations

import io
import os
import sys

import pytest
from sqlalchemy import text

from harness.cli import main
from harness.config import load_matrix
from harness.executors import LocalExecutor, ProcessExecutor, RayExecutor
from harness.executors.base import with_dependencies
from harness.progress import Reporter
from harness.job import Execution
from harness.orchestrate import run_matrix, select_jobs
from harness.spec import JobSpec
from results.store import Store
from tests import faulty  # noqa: F401  (registers the test-only methods here too, for matrix validation)
from tests.conftest import write_matrix

TIMING = ("seconds", "per_s", "latency", "throughput", "memory", "_ms")  # metrics that measure the machine


def teacher(spec: JobSpec) -> list[JobSpec]:
    """A fake dependency: every pruned job needs the dense job of its seed done first."""
    if spec.method["name"] == "dense":
        return []
    return [JobSpec(spec.model, spec.task, {"name": "dense", "params": {}}, 0.0, spec.seed, spec.train, spec.eval)]


def rows(store: Store, sql: str) -> list[tuple]:
    with store.engine.connect() as connection:
        return [tuple(r) for r in connection.execute(text(sql))]


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance (2 CPUs) for the module: starting Ray is slow."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def matrix(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("executors")
    return load_matrix(write_matrix(folder, {
        "name": "executors", "pretrained_baseline": False, "models": [str(tiny_model_dir)],
        "tasks": [{"name": "wiki-embedded", "max_train_examples": 16, "max_eval_tokens": 400}],
        "methods": ["random", "magnitude"], "sparsities": [0.5], "seeds": [0],
        "train": {"steps": 6, "batch_size": 4, "max_length": 64},
        "eval": {"batch_size": 4, "analysis_examples": 8, "speed_repeats": 0},  # timings differ by nature
    }))


@pytest.fixture(scope="module")
def runs(matrix, ray_instance, tmp_path_factory):
    """executor name -> (exit code, store, progress output), the same matrix on each."""
    folder = tmp_path_factory.mktemp("executor-runs")
    execution = Execution("cpu", 1)
    executors = {"local": lambda: LocalExecutor(execution), "processes": lambda: ProcessExecutor(2, execution),
                 "ray": lambda: RayExecutor(execution)}
    outcome = {}
    for name, make in executors.items():
        store, output = Store(str(folder / f"{name}.db")), io.StringIO()
        code = run_matrix(matrix, store, matrix.jobs, execution=execution, reporter=Reporter(output, interactive=False),
                          executor=make(), depends_on=teacher)
        outcome[name] = (code, store, output.getvalue())
    return outcome


def metric_values(store: Store) -> dict[tuple[str, str, str], float]:
    return {(h, name, split): value for h, name, split, value in rows(
        store, "select j.spec_hash, m.name, m.split, m.value from metrics m join jobs j on j.id = m.job_id")
        if not any(word in name for word in TIMING)}


@pytest.mark.parametrize("name", ["processes", "ray"])
def test_same_jobs_statuses_and_metrics_as_sequential(runs, name):
    code, store, _ = runs[name]
    local_code, local_store, _ = runs["local"]
    assert code == local_code == 0
    statuses = "select spec_hash, status, attempt from jobs order by spec_hash"
    assert rows(store, statuses) == rows(local_store, statuses)
    assert {s for _, s, _ in rows(store, statuses)} == {"done"}
    expected, got = metric_values(local_store), metric_values(store)
    assert got.keys() == expected.keys() and len(got) > 10
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-12), key


@pytest.mark.parametrize("name", ["local", "processes", "ray"])
def test_dependencies_run_first(runs, name):
    _, store, _ = runs[name]
    (dense_finished,) = rows(store, "select finished_at from jobs where method = 'dense'")[0]
    starts = [started for (started,) in rows(store, "select started_at from jobs where method != 'dense'")]
    assert len(starts) == 2 and all(str(started) >= str(dense_finished) for started in starts)


def test_workers_and_progress_are_recorded(runs):
    _, store, output = runs["processes"]
    workers = {w for (w,) in rows(store, "select worker from jobs")}
    pids = {int(w.split()[0].split(":")[1]) for w in workers}
    assert len(pids) == 2 and os.getpid() not in pids and all(w.endswith("cpu threads=1") for w in workers)
    assert rows(store, "select executor, status from runs") == [("processes(2: cpu)", "finished")]
    assert output.count(" on ") == 3 and "[3/3]" in output and "3 done, 0 failed" in output
    _, ray_store, _ = runs["ray"]
    assert all(w.endswith("cpu threads=1") and os.getpid() != int(w.split()[0].split(":")[1])
               for (w,) in rows(ray_store, "select worker from jobs"))


def test_ray_worker_death_fails_the_job(ray_instance, tmp_path, tiny_model_dir):
    crash = load_matrix(write_matrix(tmp_path, {
        "name": "crash", "pretrained_baseline": False, "models": [str(tiny_model_dir)], "dense_baseline": False,
        "tasks": [{"name": "wiki-embedded", "max_train_examples": 16, "max_eval_tokens": 400}],
        "methods": ["test-crash"], "sparsities": [0.5], "train": {"steps": 6, "batch_size": 4, "max_length": 64},
        "eval": {"analysis_examples": 0, "speed_repeats": 0},
    }))
    store = Store(str(tmp_path / "r.db"))
    executor = RayExecutor(Execution("cpu", 1), preload=("tests.faulty",))
    assert run_matrix(crash, store, crash.jobs, reporter=Reporter(io.StringIO()), executor=executor) == 1
    ((status, error),) = rows(store, "select status, error from jobs")
    assert status == "failed" and "WorkerCrashedError" in error


@pytest.fixture
def missing_model_matrix(tmp_path):
    """Jobs that fail at once (the model is nowhere): dependency handling without training."""
    return load_matrix(write_matrix(tmp_path, {
        "name": "missing", "pretrained_baseline": False, "models": ["some-org/not-on-this-machine"], "tasks": ["wiki-embedded"],
        "methods": ["random"], "sparsities": [0.5], "train": {"steps": 2}}))


def test_failed_dependency_fails_dependents_unrun_and_is_added_when_unselected(missing_model_matrix, tmp_path):
    student = select_jobs(missing_model_matrix.jobs, "random")
    assert len(student) == 1 and len(with_dependencies(student, teacher)) == 2
    store = Store(str(tmp_path / "r.db"))
    assert run_matrix(missing_model_matrix, store, student, reporter=Reporter(io.StringIO()), depends_on=teacher) == 1
    jobs = rows(store, "select method, status, started_at is null, error from jobs order by id")
    assert [j[:3] for j in jobs] == [("dense", "failed", False), ("random", "failed", True)]
    assert jobs[1][3].startswith("dependency ") and "dense" in jobs[1][3] and jobs[1][3].endswith("failed; not run")


def test_dependency_cycle_fails_unrun(missing_model_matrix, tmp_path):
    first, second = missing_model_matrix.jobs
    cycle = {first.spec_hash: [second], second.spec_hash: [first]}
    store = Store(str(tmp_path / "r.db"))
    assert run_matrix(missing_model_matrix, store, [first, second], reporter=Reporter(io.StringIO()),
                      depends_on=lambda spec: cycle[spec.spec_hash]) == 1
    assert rows(store, "select status, error from jobs") == [("failed", "dependency cycle; not run")] * 2


@pytest.mark.parametrize("options", [["--jobs", "2"], ["--executor", "processes", "--ray-address", "auto"],
                                     ["--executor", "processes", "--jobs", "0"]])
def test_conflicting_executor_options_exit_2(missing_model_matrix, tmp_path, capsys, options):
    db = tmp_path / "r.db"
    assert main(["run", "--matrix", str(missing_model_matrix.path), "--db", str(db), *options]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --") and "\n" not in err
