"""The results store: open (and check) a database, record runs and job attempts, write a
job's results in one transaction. Any SQLAlchemy URL; SQLite by default, in WAL mode."""

from __future__ import annotations

import json
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import Connection, create_engine, event, inspect, or_, select, text, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError
from sqlalchemy.orm import Session, sessionmaker

from harness.types import JobResult
from results.liveness import STALE_AFTER, run_alive
from results.migrations import migrate
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
UNFINISHED = ("pending", "running")
_PG_LOCK_KEY = 0x6861726E  # pg_advisory_xact_lock key serializing schema changes and claims


class StoreError(RuntimeError):
    """A database that cannot be used; the message is one line."""


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def database_url(url: str | None = None) -> str:
    """``--db`` > ``HARNESS_DB`` > ``harness.db`` in the current directory. A bare file
    path is accepted as SQLite."""
    url = url or os.environ.get("HARNESS_DB") or DEFAULT_DB
    if "://" not in url:
        return f"sqlite:///{url}"
    scheme, rest = url.split("://", 1)
    if scheme in ("postgresql", "postgres"):  # SQLAlchemy would pick psycopg2; the extra installs psycopg 3
        return f"postgresql+psycopg://{rest}"
    return url


@dataclass(frozen=True)
class PendingJob:
    """A job the runner wants to run: what a new attempt row records."""

    spec: dict[str, Any]
    spec_hash: str
    group_hash: str
    labels: dict[str, Any]  # model, task, method, method_label, sparsity, seed, spec_version


@dataclass
class Claim:
    """What ``Store.claim`` decided: new attempts, and why other jobs are not run."""

    job_ids: dict[str, int]  # spec hash -> id of its new 'pending' attempt
    skipped: dict[str, str]  # spec hash -> "done" or "running in run N on HOST (pid P)"


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
        # Writes go through this engine: see _make_engine for what it changes on SQLite.
        self._write_sessions = sessionmaker(self.engine.execution_options(harness_write=True), expire_on_commit=False)
        try:
            self._check_or_create(create)
        except StoreError:
            self.engine.dispose()  # close the file: SQLite removes the -wal/-shm files it made
            raise

    def _make_engine(self, parsed) -> Engine:
        if self.is_sqlite:
            if self.path is not None and self.path.exists():
                _check_sqlite_header(self.path)
            engine = create_engine(parsed, connect_args={"timeout": 60})

            @event.listens_for(engine, "connect")
            def _connect(connection, _record):
                connection.isolation_level = None  # the driver's implicit BEGIN off: _begin emits it
                cursor = connection.cursor()
                cursor.execute("PRAGMA busy_timeout=60000")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.close()

            @event.listens_for(engine, "begin")
            def _begin(connection):
                # A write transaction takes the write lock up front, waiting busy_timeout for
                # it. A deferred one that reads and then writes cannot wait (its snapshot may
                # be stale) and fails at once with "database is locked" when another process
                # writes concurrently.
                immediate = connection.get_execution_options().get("harness_write")
                connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

            return engine
        try:
            return create_engine(parsed, pool_pre_ping=True)
        except Exception as error:  # a missing driver, for example
            raise StoreError(f"--db: cannot open {parsed.render_as_string(hide_password=True)}: {error}") from None

    def _check_or_create(self, create: bool) -> None:
        """Check the schema; create or migrate it under the write lock when needed. A
        database this harness cannot use is left as it was."""
        try:
            with self.engine.connect() as connection:
                version = self._schema_version(connection)
            if version != SCHEMA_VERSION and (version is not None or create):
                with self._write_sessions() as session, session.begin():
                    connection = session.connection()
                    self._lock(connection)
                    version = self._schema_version(connection)  # another process may have done it meanwhile
                    if version is None:
                        Base.metadata.create_all(connection)
                        session.merge(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
                    elif version < SCHEMA_VERSION:
                        migrate(connection, version)
            if self.path is not None:  # persistent in the file: readers never block the writer
                raw = self.engine.raw_connection()
                try:
                    raw.cursor().execute("PRAGMA journal_mode=WAL")
                finally:
                    raw.close()
        except DatabaseError as error:
            raise StoreError(f"database {self.url} cannot be read: {str(error.orig).splitlines()[0]}") from None

    def _schema_version(self, connection: Connection) -> int | None:
        """The database's schema version; None if it holds no tables. Raises StoreError for
        a newer schema or someone else's tables."""
        tables = set(inspect(connection).get_table_names())
        if "meta" in tables:
            value = connection.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar()
            version = int(value) if value else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"database {self.url} has schema version {version}, newer than this harness supports "
                    f"({SCHEMA_VERSION}); upgrade the harness"
                )
            return version
        if tables and "jobs" not in tables:
            raise StoreError(f"database {self.url} holds other tables ({', '.join(sorted(tables)[:3])}, ...), not harness results")
        return None

    @staticmethod
    def _lock(connection: Connection) -> None:
        """Serialize schema changes and claims across processes and hosts until commit.
        SQLite's BEGIN IMMEDIATE already holds the database's write lock."""
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})

    def session(self) -> Session:
        return self._sessions()

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        """One write transaction: all or nothing, serialized with other writers."""
        with self._write_sessions() as session, session.begin():
            yield session

    # -- runs and their liveness ------------------------------------------------------------
    def start_run(self, matrix_name: str, matrix_path: str, matrix_hash: str, executor: str = "local") -> int:
        with self._writing() as session:
            run = Run(matrix_name=matrix_name, matrix_path=str(matrix_path), matrix_hash=matrix_hash,
                      host=socket.gethostname(), started_at=now(), executor=executor, pid=os.getpid(),
                      heartbeat_at=now(), status="running")
            session.add(run)
            session.flush()
            return run.id

    def heartbeat(self, run_id: int) -> None:
        with self._writing() as session:
            session.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=now()))

    def finish_run(self, run_id: int, status: str = "finished") -> None:
        """End a run; attempts it never started (an interrupted run) end 'interrupted'."""
        with self._writing() as session:
            session.execute(update(Run).where(Run.id == run_id).values(finished_at=now(), status=status))
            session.execute(update(Job).where(Job.run_id == run_id, Job.status.in_(UNFINISHED)).values(
                status="interrupted", finished_at=now(), error=f"not started: run {run_id} was {status}"))

    def _reap(self, session: Session, stale_after: float) -> None:
        """Mark runs whose driver is gone 'died', and every unfinished attempt of a run that
        is not running any more 'interrupted', so that it is rerun."""
        host, cutoff = socket.gethostname(), now() - timedelta(seconds=stale_after)
        for run in session.scalars(select(Run).where(Run.status == "running")).all():
            if not run_alive(run, host, cutoff):
                run.status, run.finished_at = "died", run.heartbeat_at or run.started_at
                session.execute(update(Job).where(Job.run_id == run.id, Job.status.in_(UNFINISHED)).values(
                    status="interrupted", finished_at=now(),
                    error=f"run {run.id} on {run.host} (pid {run.pid}) stopped during this job (killed?); rerun to retry"))
        live = select(Run.id).where(Run.status == "running")
        session.execute(update(Job).where(Job.status.in_(UNFINISHED), or_(Job.run_id.is_(None), Job.run_id.not_in(live)))
                        .values(status="interrupted", finished_at=now(), error="its run is no longer running"))

    def claim(self, run_id: int, jobs: list[PendingJob], versions: dict[str, Any], harness_version: str,
              force: bool = False, stale_after: float = STALE_AFTER) -> Claim:
        """Add a 'pending' attempt for each job not done (all with ``force``) and not held by
        another live run, after reaping dead runs; under the write lock, so runs that start
        together never both take a job."""
        claim = Claim({}, {})
        with self._writing() as session:
            self._lock(session.connection())
            self._reap(session, stale_after)
            states = self._states(session, [job.spec_hash for job in jobs], None if force else datetime.min)
            for job in jobs:
                why = states.get(job.spec_hash, {}).get("blocked")
                if why:
                    claim.skipped[job.spec_hash] = why
                else:
                    claim.job_ids[job.spec_hash] = self._add_attempt(session, run_id, job, states, versions,
                                                                     harness_version)
        return claim

    def claim_next(self, run_id: int, job: PendingJob, versions: dict[str, Any], harness_version: str,
                   done_since: datetime | None = datetime.min, stale_after: float = STALE_AFTER,
                   failed_since: datetime | None = None) -> tuple[int | None, str]:
        """Atomically take one job for ``run_id``: (id of its new 'pending' attempt, "") or
        (None, why not: "done", "running in run N ..." or "failed in run N ..."). Attempts
        that finished done before ``done_since`` do not count as done (``--force``: the runs
        of one forced sweep, started together, still share the work); a latest attempt that
        failed at or after ``failed_since`` (the claiming run's start: another runner of the
        same sweep failed it) is not retried. One write transaction under the store's lock
        (SQLite: BEGIN IMMEDIATE; PostgreSQL: a transaction-scoped advisory lock), so two
        runners never take the same job."""
        with self._writing() as session:
            self._lock(session.connection())
            self._reap(session, stale_after)
            claimant = session.get(Run, run_id)
            if claimant is not None and claimant.status != "running":
                # Judged dead by another runner (a heartbeat older than stale_after: suspended,
                # or a clock out of sync) while still going: its jobs are retaken elsewhere,
                # and a claim now would be marked interrupted at once.
                return None, (f"not claimed: this run ({run_id}) was marked {claimant.status} by another runner "
                              f"(no heartbeat for {stale_after:.0f}s; clocks in sync?)")
            states = self._states(session, [job.spec_hash], done_since, failed_since)
            why = states.get(job.spec_hash, {}).get("blocked")
            if why:
                return None, why
            return self._add_attempt(session, run_id, job, states, versions, harness_version), ""

    def _states(self, session: Session, hashes: list[str], done_since: datetime | None,
                failed_since: datetime | None = None) -> dict[str, dict[str, Any]]:
        """Per spec hash: its latest attempt number and, if it may not be taken, why."""
        states: dict[str, dict[str, Any]] = {}
        holder: dict[str, int] = {}  # spec hash -> live run holding an unfinished attempt
        latest: dict[str, tuple] = {}  # spec hash -> (attempt, status, run, finished) of its latest attempt
        for start in range(0, len(hashes), 500):  # bounded IN lists
            query = select(Job.spec_hash, Job.attempt, Job.status, Job.run_id, Job.created_at, Job.finished_at).where(
                Job.spec_hash.in_(hashes[start:start + 500]))
            for spec_hash, attempt, status, job_run, created, finished in session.execute(query):
                state = states.setdefault(spec_hash, {"latest": 0})
                state["latest"] = max(state["latest"], attempt)
                if attempt >= latest.get(spec_hash, (0,))[0]:
                    latest[spec_hash] = (attempt, status, job_run, finished)
                # When it finished, not when it was claimed: a forced sweep's job claimed by
                # a runner before this one started and done after is this sweep's.
                if status == "done" and done_since is not None and (finished or created) >= done_since:
                    state["done"] = True
                elif status in UNFINISHED:
                    holder[spec_hash] = job_run
        runs = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(set(holder.values())))).all()}
        for spec_hash, state in states.items():
            _, status, job_run, finished = latest[spec_hash]
            if spec_hash in holder:
                run = runs[holder[spec_hash]]
                state["blocked"] = f"running in run {run.id} on {run.host} (pid {run.pid})"
            elif state.get("done"):
                state["blocked"] = "done"
            elif (status == "failed" and failed_since is not None and finished is not None
                  and finished >= failed_since):
                state["blocked"] = f"failed in run {job_run}"
        return states

    @staticmethod
    def _add_attempt(session: Session, run_id: int, job: PendingJob, states: dict[str, dict[str, Any]],
                     versions: dict[str, Any], harness_version: str) -> int:
        row = Job(spec_hash=job.spec_hash, group_hash=job.group_hash,
                  attempt=states.get(job.spec_hash, {}).get("latest", 0) + 1, run_id=run_id, status="pending",
                  spec_json=json.dumps(job.spec, sort_keys=True), created_at=now(), harness_version=harness_version,
                  versions_json=json.dumps(versions, sort_keys=True), **job.labels)
        session.add(row)
        session.flush()
        return row.id

    def survey(self, spec_hashes: list[str], run_id: int | None = None, stale_after: float = STALE_AFTER,
               done_since: datetime | None = None, failed_since: datetime | None = None) -> dict[str, str]:
        """spec hash -> what its attempts say now: "done" (an attempt finished done, at or
        after ``done_since`` if given: ``--force``), "running" (held by a live run other than
        ``run_id``), "failed" (its latest attempt failed, at or after ``failed_since`` if
        given) or nothing (free to take). Dead runs are reaped first."""
        with self._writing() as session:
            self._reap(session, stale_after)
            live = set(session.scalars(select(Run.id).where(Run.status == "running")).all())
            found: dict[str, tuple[int, str, int | None, datetime | None]] = {}
            for start in range(0, len(spec_hashes), 500):
                query = select(Job.spec_hash, Job.attempt, Job.status, Job.run_id, Job.created_at,
                               Job.finished_at).where(Job.spec_hash.in_(spec_hashes[start:start + 500]))
                for spec_hash, attempt, status, job_run, created, finished in session.execute(query):
                    if status == "done" and (done_since is None or (finished or created) >= done_since):
                        found[spec_hash] = (10**9, "done", job_run, finished)
                    elif found.get(spec_hash, (0,))[0] < attempt:
                        found[spec_hash] = (attempt, status, job_run, finished)
        states = {}
        for spec_hash, (_, status, job_run, finished) in found.items():
            if status == "done" and found[spec_hash][0] == 10**9:
                states[spec_hash] = "done"
            elif status in UNFINISHED and job_run in live and job_run != run_id:
                states[spec_hash] = "running"
            elif status == "failed" and (failed_since is None or (finished is not None and finished >= failed_since)):
                states[spec_hash] = "failed"
        return states

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

    def resolved_revisions(self, spec_hashes: list[str]) -> dict[str, dict[str, str]]:
        """spec hash -> the hub commits its latest done attempt recorded."""
        if self.engine is None or not spec_hashes:
            return {}
        with self.session() as session:
            rows = session.execute(select(Job.spec_hash, Job.resolved_json).where(
                Job.spec_hash.in_(spec_hashes), Job.status == "done").order_by(Job.attempt)).all()
        return {spec_hash: json.loads(resolved) for spec_hash, resolved in rows if resolved}

    # -- job attempts ---------------------------------------------------------------------
    def set_status(self, job_id: int, status: str, error: str | None = None, traceback: str | None = None,
                   worker: str | None = None) -> None:
        """Move an unfinished attempt to ``status``; a finished attempt is never changed."""
        assert status in STATUSES and status != "done", status  # 'done' only with results: finish_job
        values: dict[str, Any] = {"status": status}
        if status == "running":
            values["started_at"] = now()
        elif status in ("failed", "interrupted"):
            values.update(finished_at=now(), error=error, traceback=traceback)
        if worker:
            values["worker"] = worker
        with self._writing() as session:
            session.execute(update(Job).where(Job.id == job_id, Job.status.in_(UNFINISHED)).values(**values))

    def finish_job(self, job_id: int, result: JobResult, worker: str | None = None) -> None:
        """All of a job's results and its 'done' status, in one transaction, exactly once:
        only a 'running' attempt takes results (a second write, or one for an attempt a
        later run has marked interrupted, raises StoreError and writes nothing)."""
        with self._writing() as session:
            values: dict[str, Any] = {"status": "done", "finished_at": now(),
                                      "protocol_json": json.dumps(result.protocol, sort_keys=True, default=str),
                                      "resolved_json": json.dumps(result.resolved_revisions, sort_keys=True)}
            if worker:
                values["worker"] = worker
            taken = session.execute(update(Job).where(Job.id == job_id, Job.status == "running").values(**values))
            if taken.rowcount != 1:
                raise StoreError(f"job {job_id} is not running (finished already, or marked by another run); "
                                 f"its results were not written")
            session.add_all(
                MetricRow(job_id=job_id, name=m.name, split=m.split, value=float(m.value),
                          higher_is_better=bool(m.higher_is_better), spread=m.spread) for m in result.metrics
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

