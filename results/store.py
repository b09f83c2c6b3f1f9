"""The results store: open (and check) a database, record runs and job attempts, write a
job's results in one transaction. Any SQLAlchemy URL; SQLite by default, in WAL mode."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, func, inspect, select, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from results.schema import (
    SCHEMA_VERSION,
    Base,
    CurvePoint,
    Job,
    LayerStat,
    Meta,
    MetricRow,
    NeuronStat,
    Run,
    Sample,
)

DEFAULT_DB = "sqlite:///harness.db"
STATUSES = ("pending", "running", "done", "failed", "interrupted")


class StoreError(RuntimeError):
    """A database that cannot be used; the message is one line."""


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def database_url(url: str | None = None) -> str:
    """``--db`` > ``HARNESS_DB`` > ``harness.db`` in the current directory. A bare file
    path is accepted as SQLite."""
    url = url or os.environ.get("HARNESS_DB") or DEFAULT_DB
    return url if "://" in url else f"sqlite:///{url}"


@dataclass
class JobResult:
    """Everything a finished job stores; written in one transaction."""

    metrics: list[dict[str, Any]]  # name, value, higher_is_better, split
    protocol: dict[str, Any] = field(default_factory=dict)
    layer_stats: list[tuple[int, str, float]] = field(default_factory=list)  # (layer, name, value)
    neuron_stats: list[tuple[int, int, float | None, float | None]] = field(default_factory=list)
    curves: list[tuple[int, str, float]] = field(default_factory=list)  # (step, name, value)
    samples: list[dict[str, str]] = field(default_factory=list)  # task, prompt, reference, prediction


class Store:
    def __init__(self, url: str | None = None, create: bool = True):
        self.url = database_url(url)
        try:
            parsed = make_url(self.url)
        except ArgumentError:
            raise StoreError(f"--db: not a valid SQLAlchemy URL: {self.url}") from None
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        database = parsed.database
        self.path = Path(database) if self.is_sqlite and database and database != ":memory:" else None
        self.exists = self.path is None or self.path.exists()
        if self.path is not None and not self.exists and not create:
            self.engine = None  # read-only use of a database that does not exist yet: empty
            return
        self.engine = self._make_engine(parsed)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._check_or_create(create)

    def _make_engine(self, parsed) -> Engine:
        if self.is_sqlite:
            if self.path is not None and self.path.exists():
                _check_sqlite_header(self.path)
            engine = create_engine(parsed, connect_args={"timeout": 60})

            @event.listens_for(engine, "connect")
            def _pragmas(connection, _record):  # WAL: readers never block the writer
                cursor = connection.cursor()
                cursor.execute("PRAGMA busy_timeout=60000")
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.close()

            return engine
        try:
            return create_engine(parsed, pool_pre_ping=True)
        except Exception as error:  # a missing driver, for example
            raise StoreError(f"--db: cannot open {parsed.render_as_string(hide_password=True)}: {error}") from None

    def _check_or_create(self, create: bool) -> None:
        try:
            tables = set(inspect(self.engine).get_table_names())
            if "meta" in tables:
                with self.session() as session:
                    row = session.get(Meta, "schema_version")
                version = int(row.value) if row else 0
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"database {self.url} has schema version {version}, newer than this harness supports "
                        f"({SCHEMA_VERSION}); upgrade the harness"
                    )
                if version < SCHEMA_VERSION:
                    from results.migrations import migrate

                    migrate(self.engine, version)
            elif tables and "jobs" not in tables:
                raise StoreError(f"database {self.url} holds other tables ({', '.join(sorted(tables)[:3])}, ...), not harness results")
            elif create:
                Base.metadata.create_all(self.engine)
                with self.session() as session, session.begin():
                    session.merge(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
        except DatabaseError as error:
            raise StoreError(f"database {self.url} cannot be read: {str(error.orig).splitlines()[0]}") from None

    def session(self) -> Session:
        return self._sessions()

    # -- runs and attempts ----------------------------------------------------------------
    def start_run(self, matrix_name: str, matrix_path: str, matrix_hash: str) -> int:
        with self.session() as session, session.begin():
            run = Run(matrix_name=matrix_name, matrix_path=str(matrix_path), matrix_hash=matrix_hash,
                      host=socket.gethostname(), started_at=now())
            session.add(run)
            session.flush()
            return run.id

    def finish_run(self, run_id: int) -> None:
        with self.session() as session, session.begin():
            session.execute(update(Run).where(Run.id == run_id).values(finished_at=now()))

    def latest_statuses(self, spec_hashes: list[str] | None = None) -> dict[str, str]:
        """spec hash -> status of its latest attempt ('done' if any attempt is done)."""
        if self.engine is None:
            return {}
        with self.session() as session:
            rows = session.execute(select(Job.spec_hash, Job.status, Job.attempt).order_by(Job.attempt)).all()
        statuses: dict[str, str] = {}
        for spec_hash, status, _ in rows:
            if statuses.get(spec_hash) != "done":
                statuses[spec_hash] = status
        if spec_hashes is not None:
            return {h: statuses[h] for h in spec_hashes if h in statuses}
        return statuses

    def add_pending(self, run_id: int, spec: dict[str, Any], spec_hash: str, group_hash: str,
                    labels: dict[str, Any], versions: dict[str, Any], harness_version: str) -> int:
        """A new attempt for ``spec_hash``, status pending. Returns the job id."""
        with self.session() as session, session.begin():
            attempt = session.scalar(select(func.max(Job.attempt)).where(Job.spec_hash == spec_hash)) or 0
            job = Job(spec_hash=spec_hash, group_hash=group_hash, attempt=attempt + 1, run_id=run_id,
                      status="pending", spec_json=json.dumps(spec, sort_keys=True), created_at=now(),
                      harness_version=harness_version, versions_json=json.dumps(versions, sort_keys=True),
                      **labels)
            session.add(job)
            session.flush()
            return job.id

    def set_status(self, job_id: int, status: str, error: str | None = None, traceback: str | None = None) -> None:
        assert status in STATUSES, status
        values: dict[str, Any] = {"status": status}
        if status == "running":
            values["started_at"] = now()
        elif status in ("failed", "interrupted"):
            values.update(finished_at=now(), error=error, traceback=traceback)
        with self.session() as session, session.begin():
            session.execute(update(Job).where(Job.id == job_id).values(**values))

    def finish_job(self, job_id: int, result: JobResult) -> None:
        """All of a job's results and its 'done' status, in one transaction."""
        with self.session() as session, session.begin():
            session.add_all(
                MetricRow(job_id=job_id, name=m["name"], split=m.get("split", "test"), value=float(m["value"]),
                          higher_is_better=bool(m["higher_is_better"])) for m in result.metrics
            )
            session.add_all(LayerStat(job_id=job_id, layer=l, name=n, value=float(v)) for l, n, v in result.layer_stats)
            session.add_all(
                NeuronStat(job_id=job_id, layer=l, neuron=i, sensitivity=s, max_abs_cos=c)
                for l, i, s, c in result.neuron_stats
            )
            session.add_all(CurvePoint(job_id=job_id, step=s, name=n, value=float(v)) for s, n, v in result.curves)
            session.add_all(
                Sample(job_id=job_id, index=i, task=s.get("task", ""), prompt=s["prompt"], reference=s["reference"],
                       prediction=s["prediction"]) for i, s in enumerate(result.samples)
            )
            session.execute(
                update(Job).where(Job.id == job_id).values(
                    status="done", finished_at=now(), protocol_json=json.dumps(result.protocol, sort_keys=True, default=str)
                )
            )

    def resolve_job(self, prefix: str) -> Job:
        """The latest attempt of the job whose spec hash starts with ``prefix`` (unique)."""
        if self.engine is None:
            raise StoreError(f"no database at {self.url}")
        with self.session() as session:
            hashes = session.scalars(select(Job.spec_hash).where(Job.spec_hash.like(f"{prefix}%")).distinct()).all()
            if not hashes:
                raise StoreError(f"JOB_ID: no job whose spec hash starts with '{prefix}'")
            if len(hashes) > 1:
                raise StoreError(f"JOB_ID: '{prefix}' is ambiguous ({len(hashes)} jobs); give more characters")
            return session.scalars(
                select(Job).where(Job.spec_hash == hashes[0]).order_by(Job.attempt.desc())
            ).first()


def _check_sqlite_header(path: Path) -> None:
    """Refuse a non-database file before SQLite touches it (it would stay untouched)."""
    if path.is_dir():
        raise StoreError(f"--db: {path} is a directory, not a database file")
    with open(path, "rb") as handle:
        header = handle.read(16)
    if header and header != b"SQLite format 3\x00":
        raise StoreError(f"--db: {path} is not a SQLite database (unrecognized file header); nothing was changed")
