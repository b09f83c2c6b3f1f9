"""The results store on SQLite and PostgreSQL: claims and liveness, exactly-once results,
concurrent writers, migrations, refusing databases it cannot use."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from harness.cli import main
from results.schema import SCHEMA_VERSION
from results.store import Store, StoreError, database_url, now
from tests.conftest import write_matrix
from tests.databases import REPO, db_url, fresh_pg_database, pending, result  # noqa: F401  (db_url: a fixture)

V1_DUMP = Path(__file__).parent / "data" / "harness_v1.sql"


def query(store: Store, sql: str) -> list[tuple]:
    with store.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql))]


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_database_urls():
    assert database_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert database_url("postgres://u@h:5433/db") == "postgresql+psycopg://u@h:5433/db"
    assert database_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("results/r.db") == "sqlite:///results/r.db"


def test_claims_skip_done_and_live_runs_and_reap_dead_ones(db_url):
    store = Store(db_url)
    first = store.start_run("m", "m.yaml", "h", "local")
    claim = store.claim(first, [pending("a"), pending("b")], {}, "0")
    assert set(claim.job_ids) == {"a" * 8, "b" * 8}
    store.set_status(claim.job_ids["a" * 8], "running", worker="here:1 cpu")
    store.finish_job(claim.job_ids["a" * 8], result())
    store.set_status(claim.job_ids["b" * 8], "running")

    # A second run while the first is alive (this very process): it takes only the new job.
    second = store.start_run("m", "m.yaml", "h")
    claim2 = store.claim(second, [pending("a"), pending("b"), pending("c")], {}, "0")
    assert claim2.skipped == {"a" * 8: "done", "b" * 8: f"running in run {first} on {socket.gethostname()} (pid {os.getpid()})"}
    assert list(claim2.job_ids) == ["c" * 8]
    store.finish_run(second)  # 'c' never started: interrupted with the reason
    assert query(store, "select status, error from jobs where spec_hash = 'cccccccc'") == [
        ("interrupted", f"not started: run {second} was finished")]

    # The first run's driver dies (a pid that no longer exists): the next claim reaps it.
    with store._writing() as session:
        session.execute(text("update runs set pid = :pid where id = :id"), {"pid": dead_pid(), "id": first})
    third = store.start_run("m", "m.yaml", "h")
    claim3 = store.claim(third, [pending("b")], {}, "0")
    assert list(claim3.job_ids) == ["b" * 8]
    rows = query(store, "select attempt, status, error from jobs where spec_hash = 'bbbbbbbb' order by attempt")
    assert rows[0][:2] == (1, "interrupted") and f"run {first} on" in rows[0][2] and "stopped" in rows[0][2]
    assert rows[1][:2] == (2, "pending")
    assert query(store, f"select status from runs where id = {first}") == [("died",)]

    # A run on another host is judged by its heartbeat alone.
    with store._writing() as session:
        session.execute(text("update runs set host = 'elsewhere', pid = 1, heartbeat_at = :t where id = :id"),
                        {"t": now() - timedelta(minutes=5), "id": third})
    fourth = store.start_run("m", "m.yaml", "h")
    assert list(store.claim(fourth, [pending("b")], {}, "0").job_ids) == ["b" * 8]
    assert query(store, f"select status from runs where id = {third}") == [("died",)]


def test_results_are_written_exactly_once(db_url):
    store = Store(db_url)
    run = store.start_run("m", "m.yaml", "h")
    job = store.claim(run, [pending("a")], {}, "0").job_ids["a" * 8]
    with pytest.raises(StoreError):  # a pending attempt takes no results: it never ran
        store.finish_job(job, result())
    store.set_status(job, "running")
    store.finish_job(job, result(), worker="w:1 cpu")
    with pytest.raises(StoreError, match="not running"):
        store.finish_job(job, result())
    store.set_status(job, "failed", error="late")  # a finished attempt never changes
    assert query(store, "select status, worker, error from jobs") == [("done", "w:1 cpu", None)]
    assert query(store, "select count(*) from metrics") == [(3,)]


def test_concurrent_writers_lose_nothing(db_url):
    writers, jobs = 4, 10
    code = "import sys; from tests.databases import write_many; write_many(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))"
    processes = [subprocess.Popen([sys.executable, "-c", code, db_url, str(w), str(jobs)], cwd=REPO,
                                  stderr=subprocess.PIPE, text=True) for w in range(writers)]
    errors = [p.communicate(timeout=240)[1] for p in processes]
    assert [p.returncode for p in processes] == [0] * writers, "\n".join(errors)
    store = Store(db_url)
    assert query(store, "select count(*), count(distinct spec_hash) from jobs where status = 'done'") == [
        (writers * jobs, writers * jobs)]
    assert query(store, "select count(*) from metrics") == [(writers * jobs * 20,)]
    assert query(store, "select count(*) from runs where status = 'finished'") == [(writers,)]


def make_v1(url: str) -> None:
    """A database as schema version 1 wrote it: SQLite from a real v1 file's dump; on
    PostgreSQL the current schema with the columns of versions 2 and 3 dropped."""
    if url.startswith("sqlite"):
        connection = sqlite3.connect(url.removeprefix("sqlite:///"))
        connection.executescript(V1_DUMP.read_text())
        connection.close()
        return
    Store(url).engine.dispose()
    engine = create_engine(database_url(url))
    with engine.begin() as connection:
        for table, column in [("runs", "executor"), ("runs", "pid"), ("runs", "heartbeat_at"), ("runs", "status"),
                              ("jobs", "worker"), ("jobs", "spec_version"), ("jobs", "resolved_json"),
                              ("metrics", "spread")]:
            connection.execute(text(f"alter table {table} drop column {column}"))
        connection.execute(text("update meta set value = '1'"))
        connection.execute(text("insert into runs (id, matrix_name, matrix_path, matrix_hash, host, started_at) "
                                "values (1, 'tiny', 'm.yaml', 'h', 'old', now())"))
        connection.execute(text(
            "insert into jobs (id, spec_hash, group_hash, attempt, run_id, status, spec_json, model, task, method, "
            "method_label, sparsity, seed, created_at, harness_version, versions_json) values "
            "(1, repeat('a', 64), 'g', 1, 1, 'done', '{}', 'm', 't', 'magnitude', 'magnitude', 0.5, 0, now(), '0', '{}'),"
            "(2, repeat('c', 64), 'g', 1, 1, 'running', '{}', 'm', 't', 'magnitude', 'magnitude', 0.5, 1, now(), '0', '{}')"))
        connection.execute(text("insert into metrics (job_id, name, split, value, higher_is_better) "
                                "values (1, 'perplexity', 'test', 42.5, false)"))
        connection.execute(text("select setval('runs_id_seq', 1), setval('jobs_id_seq', 2)"))
    engine.dispose()


def test_older_database_is_migrated(db_url):
    make_v1(db_url)
    store = Store(db_url)
    assert query(store, "select value from meta where key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    assert query(store, "select status, executor, pid from runs") == [("died", None, None)]
    assert query(store, "select id, status, worker from jobs order by id") == [(1, "done", None), (2, "running", None)]
    assert query(store, "select value from metrics where job_id = 1") == [(42.5,)]
    assert query(store, "select spec_version from jobs order by id") == [(1,), (1,)]  # before spec versions
    # The v1 run that died mid-job: the next run's claim marks its job interrupted.
    run = store.start_run("tiny", "m.yaml", "h")
    store.claim(run, [], {}, "0")
    assert query(store, "select status, error from jobs where id = 2") == [("interrupted", "its run is no longer running")]
    assert Store(db_url, create=False).latest_statuses() == {"a" * 64: "done", "c" * 64: "interrupted"}


def test_newer_database_is_refused_untouched(db_url, capsys):
    Store(db_url).engine.dispose()
    engine = create_engine(database_url(db_url))
    with engine.begin() as connection:
        connection.execute(text("update meta set value = '99'"))
    engine.dispose()  # SQLite: the change is in the main file now, not in a WAL
    path = Path(db_url.removeprefix("sqlite:///")) if db_url.startswith("sqlite") else None
    before = path.read_bytes() if path else None
    assert main(["leaderboard", "--db", db_url]) == 2
    err = capsys.readouterr().err.strip()
    assert "schema version 99, newer than this harness supports" in err and "\n" not in err
    if path:
        assert path.read_bytes() == before


@pytest.mark.parametrize("damage", ["truncated", "garbage pages", "not a database"])
def test_unusable_sqlite_file_is_refused_untouched(tmp_path, tiny_matrix, capsys, damage):
    path = tmp_path / "r.db"
    store = Store(str(path))
    store.start_run("m", "m.yaml", "h")
    store.engine.dispose()
    data = path.read_bytes()
    data = {"truncated": data[: len(data) // 3], "garbage pages": data[:8192] + b"\x13" * (len(data) - 8192),
            "not a database": b"name,value\nperplexity,12\n" * 50}[damage]
    path.write_bytes(data)
    matrix = write_matrix(tmp_path, tiny_matrix)
    assert main(["run", "--matrix", str(matrix), "--db", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert ("malformed" in err) if damage != "not a database" else ("not a SQLite database" in err)
    assert path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["matrix.yaml", "r.db"]  # no -wal/-shm left behind


def test_end_to_end_on_postgresql(tmp_path, tiny_matrix, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # files a run makes beside a server database (saved models) stay here
    tiny_matrix.update(methods=["random"], dense_baseline=False)
    tiny_matrix["train"]["steps"] = 4
    tiny_matrix["eval"].update(analysis_examples=0, speed_repeats=0)
    path = write_matrix(tmp_path, tiny_matrix)
    with fresh_pg_database() as url:
        plain = url.replace("postgresql+psycopg://", "postgresql://")  # as a user types it
        assert main(["run", "--matrix", str(path), "--db", plain]) == 0
        assert main(["run", "--matrix", str(path), "--db", plain]) == 0  # nothing left to do
        store = Store(plain)
        assert query(store, "select method, status, attempt, worker is not null from jobs") == [("random", "done", 1, True)]
        assert query(store, "select count(distinct job_id) from metrics where name = 'perplexity'") == [(1,)]
        assert query(store, "select status from runs order by id") == [("finished",), ("finished",)]
        capsys.readouterr()
        assert main(["leaderboard", "--db", plain, "--metric", "perplexity"]) == 0
        assert "random" in capsys.readouterr().out
        store.engine.dispose()
