"""Faults, for real: a runner killed with SIGKILL mid-job and rerun, Ctrl-C, a worker
process that dies, a job whose loss goes NaN."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.config import load_matrix
from harness.executors import ProcessExecutor
from harness.progress import Reporter
from harness.job import Execution
from harness.orchestrate import run_matrix
from results.store import Store
from tests import faulty  # noqa: F401  (registers the test-only methods in this process)
from tests.conftest import write_matrix
from tests.databases import REPO

# The CLI in a subprocess, with the test-only methods registered.
CLI = [sys.executable, "-c", "import sys, tests.faulty; from harness.cli import main; sys.exit(main(sys.argv[1:]))"]


def rows(db: Path, sql: str) -> list[tuple]:
    connection = sqlite3.connect(db)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def wait_for(db: Path, sql: str, expected: list[tuple], process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the runner exited early ({process.returncode})"
        try:
            if db.exists() and rows(db, sql) == expected:
                return
        except sqlite3.OperationalError:  # the schema is still being created
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {sql} == {expected}")


def start(args: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    with open(log, "w") as handle:  # its own session: signals go to it alone, as from a terminal
        return subprocess.Popen(args, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def small(tiny_model_dir: Path, methods: list, steps: int, **extra) -> dict:
    return {"name": "faults", "pretrained_baseline": False, "models": [str(tiny_model_dir)], "dense_baseline": False, "methods": methods,
            "tasks": [{"name": "wiki-embedded", "max_train_examples": 16, "max_eval_tokens": 300}],
            "sparsities": [0.5], "train": {"steps": steps, "batch_size": 4, "max_length": 64, **extra},
            "eval": {"batch_size": 4, "analysis_examples": 0, "speed_repeats": 0}}


def test_sigkilled_runner_is_resumed_and_a_live_run_is_left_alone(tmp_path, tiny_model_dir):
    path = write_matrix(tmp_path, small(tiny_model_dir, ["random", {"name": "test-slow", "params": {"sleep": 0.4}}], 10))
    db, command = tmp_path / "r.db", ["run", "--matrix", str(path), "--db", str(tmp_path / "r.db")]
    runner = start(CLI + command, tmp_path / "first.log")
    try:
        by_method = "select method, status from jobs order by id"
        wait_for(db, by_method, [("random", "done"), ("test-slow", "running")], runner)
        # Another run of the same matrix while the first is alive: it takes nothing, disturbs nothing.
        matrix, output = load_matrix(path), io.StringIO()
        assert run_matrix(matrix, Store(str(db)), matrix.jobs, reporter=Reporter(output, interactive=False)) == 0
        assert "running in run 1 on" in output.getvalue()
        assert rows(db, by_method) == [("random", "done"), ("test-slow", "running")]
        assert rows(db, "select id, status from runs") == [(1, "running"), (2, "finished")]
    finally:
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait()
    assert rows(db, by_method) == [("random", "done"), ("test-slow", "running")]  # the dead run's claim

    assert main(command) == 0  # rerun: the interrupted job again, from scratch; the done one skipped
    jobs = rows(db, "select method, attempt, status, error from jobs order by id")
    assert [j[:3] for j in jobs] == [("random", 1, "done"), ("test-slow", 1, "interrupted"), ("test-slow", 2, "done")]
    assert jobs[1][3].startswith("run 1 on ") and "stopped during this job" in jobs[1][3]
    assert rows(db, "select id, status from runs") == [(1, "died"), (2, "finished"), (3, "finished")]
    assert rows(db, "select count(*) from metrics m join jobs j on j.id = m.job_id where j.status != 'done'") == [(0,)]
    assert rows(db, "select job_id, name, split from metrics group by job_id, name, split having count(*) > 1") == []
    assert rows(db, "select count(distinct job_id) from curves") == [(2,)]


@pytest.mark.parametrize("executor", [[], ["--executor", "processes", "--jobs", "1"]], ids=["local", "processes"])
def test_ctrl_c_marks_the_running_job_interrupted_and_exits_130(tmp_path, tiny_model_dir, executor):
    path = write_matrix(tmp_path, small(tiny_model_dir, ["random"], 100_000))  # would run for hours
    db = tmp_path / "r.db"
    runner = start([sys.executable, "-m", "harness", "run", "--matrix", str(path), "--db", str(db), *executor],
                   tmp_path / "run.log")
    try:
        wait_for(db, "select status from jobs", [("running",)], runner)
        time.sleep(1.0)  # in the middle of training
        os.killpg(runner.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole process group
        assert runner.wait(timeout=60) == 130, (tmp_path / "run.log").read_text()[-2000:]
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
    ((status, error, worker),) = rows(db, "select status, error, worker from jobs")
    assert status == "interrupted" and "interrupted" in error
    assert rows(db, "select status from runs") == [("interrupted",)]
    if executor:  # the worker process is gone too
        with pytest.raises(ProcessLookupError):
            os.kill(int(worker.split()[0].split(":")[1]), 0)


def test_dead_worker_fails_its_job_and_the_matrix_goes_on(tmp_path, tiny_model_dir):
    matrix = load_matrix(write_matrix(tmp_path, small(tiny_model_dir, ["test-crash", "random"], 4)))
    store = Store(str(tmp_path / "r.db"))
    executor = ProcessExecutor(1, Execution("cpu", 1), preload=("tests.faulty",))  # one worker: it is replaced
    output = io.StringIO()
    assert run_matrix(matrix, store, matrix.jobs, reporter=Reporter(output, interactive=False), executor=executor) == 1
    jobs = rows(Path(store.path), "select method, status, error, worker from jobs order by id")
    assert [j[:2] for j in jobs] == [("test-crash", "failed"), ("random", "done")]
    assert "was killed by SIGKILL while running this job" in jobs[0][2]
    assert jobs[0][3].split()[0] != jobs[1][3].split()[0]  # a new worker ran the next job
    assert "1 done, 1 failed" in output.getvalue()


def test_nan_loss_fails_the_job_with_a_clear_reason(tmp_path, tiny_model_dir):
    path = write_matrix(tmp_path, small(tiny_model_dir, ["random"], 6, lr=1e30))
    db = tmp_path / "r.db"
    assert main(["run", "--matrix", str(path), "--db", str(db)]) == 1
    ((status, error),) = rows(db, "select status, error from jobs")
    assert status == "failed" and error.startswith("FloatingPointError: training loss is ")
    assert "no metrics stored" in error and rows(db, "select count(*) from metrics") == [(0,)]
