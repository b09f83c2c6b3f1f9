"""Result databases for tests: a fresh SQLite file, or a fresh PostgreSQL database on the
server that ``tests/services.sh`` starts (its URL: $HARNESS_TEST_PG_URL, which
``tests/run.sh`` exports, else test-artifacts/pg_url). Without one, PostgreSQL tests skip
and say why. Also store-level job builders and the concurrent writer the store tests run
in subprocesses (this module imports no torch: those start fast)."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from harness.types import JobResult, Metric
from results.store import PendingJob, Store, database_url

REPO = Path(__file__).resolve().parents[1]


def pg_server_url() -> str | None:
    url = os.environ.get("HARNESS_TEST_PG_URL")
    file = REPO / "test-artifacts" / "pg_url"
    if not url and file.is_file():
        url = file.read_text().strip()
    return database_url(url) if url else None


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards."""
    server = pg_server_url()
    if not server:
        pytest.skip("PostgreSQL: no server; run `bash tests/services.sh` as root, or set HARNESS_TEST_PG_URL")
    admin = create_engine(server, isolation_level="AUTOCOMMIT")  # CREATE DATABASE cannot run in a transaction
    name = f"harness_t_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as error:
        admin.dispose()
        pytest.skip(f"PostgreSQL at {make_url(server).host}: {str(error.orig).strip().splitlines()[0]}")
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    """Each test using it runs once per backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'results.db'}"
    else:
        with fresh_pg_database() as url:
            yield url


def pending(name: str) -> PendingJob:
    labels = {"model": "m", "task": "t", "method": name, "method_label": name, "sparsity": 0.5, "seed": 0}
    return PendingJob({"name": name}, name * 8, "g" * 8, labels)


def result(value: float = 1.0, metrics: int = 3) -> JobResult:
    return JobResult(metrics=[Metric(f"m{i}", value, True, "test") for i in range(metrics)], curves=[(1, "loss", 2.0)],
                     layer_stats=[(0, "kept", 3.0)])


def write_many(url: str, writer: int, jobs: int) -> None:
    """One of several processes writing job results to the same database at once."""
    store = Store(url)
    run = store.start_run(f"writer-{writer}", "m.yaml", "h", "test")
    for i in range(jobs):
        name = f"w{writer}j{i}"
        job = store.claim(run, [pending(name)], {}, "0").job_ids[name * 8]
        store.set_status(job, "running")
        store.heartbeat(run)
        store.finish_job(job, result(float(i), metrics=20))
    store.finish_run(run)
