"""Spawn-safe workers: the processes executor (2 workers) under every kind of parent -- the
CLI, a user's script without an ``if __name__ == "__main__"`` guard, code with no file
behind ``__main__`` (``python -`` on stdin, ``python -c``), and a process that has run a
Streamlit AppTest of the dashboard (which leaves ``__main__`` pointing at the app). Each
time: every job done, exit 0, and the parent's top-level code ran exactly once (workers
start from ``python -m harness.executors.worker`` and never re-run it)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import load_matrix
from harness.executors import ProcessExecutor
from harness.export import artifacts_root
from harness.job import Execution
from harness.orchestrate import run_matrix
from harness.progress import Reporter
from results.store import Store
from tests.conftest import REPO, sqlite_rows, write_matrix

APP = REPO / "dashboard" / "app.py"


def spawn_matrix(tiny_model_dir: Path) -> dict:
    """Two quick jobs, one per worker."""
    return {"name": "spawn", "models": [str(tiny_model_dir)], "pretrained_baseline": False, "dense_baseline": False,
            "tasks": [{"name": "news-embedded", "max_train_examples": 16, "max_eval_tokens": 200}],
            "methods": ["random", "magnitude"], "sparsities": [0.5],
            "train": {"steps": 3, "batch_size": 4, "max_length": 64},
            "eval": {"batch_size": 4, "analysis_examples": 0, "speed_repeats": 0, "validation_examples": 1}}


def assert_all_done_by_two_workers(db: Path, parent_pid: int | None = None) -> None:
    jobs = sqlite_rows(db, "select method, status, worker from jobs order by id")
    assert [(m, s) for m, s, _ in jobs] == [("random", "done"), ("magnitude", "done")], jobs
    pids = {int(worker.split()[0].split(":")[1]) for _, _, worker in jobs}
    assert len(pids) == 2 and parent_pid not in pids
    assert sqlite_rows(db, "select status from runs") == [("finished",)]


def environment() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def user_code(matrix: Path, db: Path, marker: Path) -> str:
    """What a user writes at the top level of a script or a notebook cell: no __main__ guard."""
    return (
        "import sys\n"
        f"open({str(marker)!r}, 'a').write('top level ran\\n')\n"
        "from harness.config import load_matrix\n"
        "from harness.executors import ProcessExecutor\n"
        "from harness.job import Execution\n"
        "from harness.orchestrate import run_matrix\n"
        "from results.store import Store\n"
        f"matrix = load_matrix({str(matrix)!r})\n"
        f"code = run_matrix(matrix, Store({str(db)!r}), matrix.jobs,\n"
        "                  executor=ProcessExecutor(2, Execution('cpu', 1, save_models=False)))\n"
        f"open({str(marker)!r}, 'a').write(f'exit {{code}}\\n')\n"
        "sys.exit(code)\n"
    )


def test_cli_parent(tmp_path, tiny_model_dir):
    path, db = write_matrix(tmp_path, spawn_matrix(tiny_model_dir)), tmp_path / "r.db"
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--matrix", str(path), "--db", str(db),
                           "--executor", "processes", "--jobs", "2", "--threads", "1", "--no-save-models"],
                          cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 done, 0 failed" in done.stderr
    assert_all_done_by_two_workers(db)


@pytest.mark.parametrize("shape", ["script", "stdin"])
def test_user_code_without_a_main_guard(tmp_path, tiny_model_dir, shape):
    """A script with run_matrix at its top level, and the same code on stdin (``python -``: no
    file behind __main__, as in a notebook kernel or ``python -c``)."""
    path, db, marker = write_matrix(tmp_path, spawn_matrix(tiny_model_dir)), tmp_path / "r.db", tmp_path / "marker"
    code = user_code(path, db, marker)
    if shape == "script":
        script = tmp_path / "experiment.py"
        script.write_text(code)
        command, stdin = [sys.executable, str(script)], None
    else:
        command, stdin = [sys.executable, "-"], code
    done = subprocess.run(command, input=stdin, cwd=tmp_path, env=environment(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert marker.read_text() == "top level ran\nexit 0\n"  # once: no worker re-ran the parent's code
    assert_all_done_by_two_workers(db)


def test_processes_executor_after_a_streamlit_apptest(tmp_path, tiny_model_dir, monkeypatch):
    """In this (pytest) process: an AppTest of the dashboard first -- Streamlit leaves
    sys.modules['__main__'] set to the script it ran, which multiprocessing's spawn would
    re-execute in every worker -- then the processes executor."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])  # restored afterwards
    marker = tmp_path / "marker"
    wrapper = tmp_path / "app_with_side_effect.py"  # dashboard/app.py, plus a line a re-run would repeat
    wrapper.write_text(f"open({str(marker)!r}, 'a').write('app ran\\n')\n"
                       f"exec(compile(open({str(APP)!r}).read(), {str(APP)!r}, 'exec'))\n")
    monkeypatch.setenv("HARNESS_DB", str(tmp_path / "no-results.db"))
    at = AppTest.from_file(str(wrapper), default_timeout=120)
    at.run()
    assert not at.exception and any("No results yet" in i.value for i in at.info)
    assert getattr(sys.modules["__main__"], "__file__", None) == str(wrapper)  # the shape that broke spawn
    assert marker.read_text() == "app ran\n"

    matrix = load_matrix(write_matrix(tmp_path, spawn_matrix(tiny_model_dir)))
    db = tmp_path / "r.db"
    output = io.StringIO()
    # Models saved where the CLI saves them: next to the database, or in $HARNESS_ARTIFACTS.
    execution = Execution("cpu", 1, artifacts=str(artifacts_root(db).resolve()))
    code = run_matrix(matrix, Store(str(db)), matrix.jobs, reporter=Reporter(output, interactive=False),
                      executor=ProcessExecutor(2, execution))
    assert code == 0, output.getvalue()
    assert_all_done_by_two_workers(db, os.getpid())
    assert len(list((tmp_path / "r.artifacts").glob("*/config.json"))) == 2
    assert marker.read_text() == "app ran\n"  # no worker re-ran the app
    assert not (tmp_path / "no-results.db").exists()
