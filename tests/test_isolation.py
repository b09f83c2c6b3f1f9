"""Tests never touch the working directory's results or the user's state: run from a folder
that holds a real ``harness.db`` and ``harness.artifacts`` (a user who ran the quickstart,
then the tests), with HARNESS_DB / HARNESS_ARTIFACTS pointing at them, a dashboard test and
the processes executor after a Streamlit AppTest (the pair that failed there: spawned
workers re-ran dashboard/app.py as __main__) pass, and nothing there changes."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from tests.conftest import REPO
from tests.dashboard_fixture import claims_jobs, synthetic_results_db

SUBSET = ["tests/test_isolation.py::test_user_state_is_hidden_from_tests",
          "tests/test_dashboard.py::test_missing_empty_and_junk_databases_explain_themselves",
          "tests/test_spawn.py::test_processes_executor_after_a_streamlit_apptest"]


def test_user_state_is_hidden_from_tests(tmp_path_factory):
    """The autouse fixtures of conftest.py: whatever the shell says, a test sees no
    HARNESS_DB / HARNESS_ARTIFACTS and a HARNESS_CACHE of its own."""
    from harness.export import artifacts_root
    from harness.fetch import cache_root
    from results.store import database_url

    assert "HARNESS_DB" not in os.environ and "HARNESS_ARTIFACTS" not in os.environ
    cache = Path(os.environ["HARNESS_CACHE"])
    assert cache.is_relative_to(tmp_path_factory.getbasetemp()) and cache_root() == cache
    assert database_url(None) == "sqlite:///harness.db"  # the default a test must always override
    assert artifacts_root(Path("/elsewhere/r.db")) == Path("/elsewhere/r.artifacts")


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` (and the folders themselves)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        found[key] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return found


def test_tests_leave_the_working_directory_alone(tmp_path):
    user = tmp_path / "quickstart"
    user.mkdir()
    db = synthetic_results_db(user / "harness.db", claims_jobs(seeds=(0, 1), distilled=False))
    with closing(sqlite3.connect(db)) as connection:  # closed: no -wal/-shm left, as after a finished run
        assert connection.execute("select count(*) from jobs where status = 'done'").fetchone()[0] > 10
    artifacts = user / "harness.artifacts" / ("0" * 64)
    artifacts.mkdir(parents=True)
    (artifacts / "config.json").write_text('{"model_type": "gpt2"}')
    before = snapshot(user)
    assert set(before) == {"harness.db", "harness.artifacts", f"harness.artifacts/{'0' * 64}",
                           f"harness.artifacts/{'0' * 64}/config.json"}
    # PYTHONPATH: what running from the checkout gives `python -m pytest` (the `tests` package);
    # the user's HARNESS_* point at the user's files.
    env = dict(os.environ, HARNESS_DB=str(db), HARNESS_ARTIFACTS=str(user / "harness.artifacts"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("PYTEST_ADDOPTS", None)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(REPO),
                           "-c", str(REPO / "pyproject.toml"), *(str(REPO / test) for test in SUBSET)],
                          cwd=user, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert f"{len(SUBSET)} passed" in done.stdout
    assert snapshot(user) == before  # harness.db byte-identical, no -wal/-shm, artifacts untouched
