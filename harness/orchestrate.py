"""Running a matrix: which jobs run, the run's lifecycle, and the books.

Jobs are claimed one at a time, when this runner has a free slot (its executor's
workers), by an atomic claim in the store: several ``harness run`` processes -- a Slurm
job array, several machines -- share one database and one matrix, each job done once.
A job waits while a job it depends on (a distillation student's teacher) is not done,
wherever that one runs. Only this process writes to the store; workers return results.
"""

from __future__ import annotations

import fnmatch
import platform
import time
import traceback as tb
from dataclasses import replace
from datetime import datetime
from importlib import metadata
from typing import Callable

from harness.config import Matrix
from harness.executors import Executor, LocalExecutor
from harness.exit_codes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from harness.executors.base import Gate, JobEvent, execute, with_dependencies
from harness.export import artifacts_root
from harness.hub import drift, resolve_revisions
from harness.job import Execution
from harness.progress import Reporter
from harness.spec import JobSpec, job_dependencies
from harness.types import JobResult
from results.liveness import Heartbeat
from results.store import PendingJob, Store, StoreError, now



def harness_version() -> str:
    try:
        return metadata.version("prune-harness")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("torch", "transformers", "tokenizers", "datasets", "rouge-score", "sacrebleu", "lm-eval"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def select_jobs(jobs: list[JobSpec], only: str | None) -> list[JobSpec]:
    """``--only``: a glob over the job label (model/task/method/s=../seed=..) or a hash prefix."""
    if not only:
        return jobs
    return [j for j in jobs if j.spec_hash.startswith(only) or fnmatch.fnmatch(j.label, f"*{only}*")]


def pending(spec: JobSpec) -> PendingJob:
    return PendingJob(spec.to_dict(), spec.spec_hash, spec.group_hash, spec.labels())


def summary(result: JobResult) -> str:
    shown = [m for m in result.metrics if m.split not in ("model", "train", "cost")][:3]
    return ", ".join(f"{m.name}={m.value:.4g}" for m in shown)


class _Books:
    """This runner's view of its jobs: claims, what ended here, and the store writes."""

    def __init__(self, store: Store, run_id: int, reporter: Reporter, started: datetime, force: bool,
                 local_executor: bool, depends_on: Callable[[JobSpec], list[JobSpec]], jobs: list[JobSpec],
                 states: dict[str, str], poll_seconds: float):
        self.store, self.run_id, self.reporter = store, run_id, reporter
        self.depends_on, self.cyclic = depends_on, _in_cycles(jobs, depends_on)
        # What the start line counted: jobs done before this run (skipped silently) and the
        # jobs it said this runner would run.
        self.done_before = {s.spec_hash for s in jobs if not force and states.get(s.spec_hash) == "done"}
        self.counted = {s.spec_hash for s in jobs if s.spec_hash not in self.done_before
                        and states.get(s.spec_hash) != "running"}
        # Done counts from this run's start with --force; a failure counts (is not retried
        # here) from this run's start: another runner of the same sweep had it fail.
        self.done_since = started if force else datetime.min
        self.survey_done_since = started if force else None
        self.failed_since = started
        self.dependents: dict[str, list[str]] = {}  # spec hash -> jobs here that need it done first
        for job in jobs:
            for dependency in depends_on(job):
                self.dependents.setdefault(dependency.spec_hash, []).append(job.spec_hash)
        self.settled: set[str] = set()  # jobs the scheduler is done with here (claimed, failed or skipped)
        self.local = local_executor
        self.poll_seconds = poll_seconds
        self.versions, self.version = library_versions(), harness_version()
        self.job_ids: dict[str, int] = {}  # spec hash -> the attempt this runner claimed
        self.ended: dict[str, str] = {}  # spec hash -> status, for jobs that ended here
        self.failures = self.claims = 0
        self.abandoned: set[str] = set()  # jobs failed because recording them failed
        self.elsewhere: set[str] = set()  # jobs not done at the start that other runners took
        self._surveyed: dict[str, str] = {}  # dependency states, until the next event or idle

    def idle(self) -> None:
        self._surveyed.clear()
        time.sleep(self.poll_seconds)

    def dependency_state(self, dependency: JobSpec) -> str:
        if dependency.spec_hash in self.ended:
            return self.ended[dependency.spec_hash]
        if dependency.spec_hash not in self._surveyed:  # students of one teacher: one look per pass
            self._surveyed[dependency.spec_hash] = self.store.survey(
                [dependency.spec_hash], self.run_id, done_since=self.survey_done_since,
                failed_since=self.failed_since).get(dependency.spec_hash, "open")
        return self._surveyed[dependency.spec_hash]

    def _needed_here(self, spec: JobSpec) -> bool:
        return any(job not in self.settled for job in self.dependents.get(spec.spec_hash, ()))

    def gate(self, spec: JobSpec) -> Gate:
        if spec.spec_hash in self.cyclic:
            return self._fail_unrun(spec, "dependency cycle; not run")
        for dependency in self.depends_on(spec):
            state = self.dependency_state(dependency)
            if state in ("failed", "interrupted"):
                return self._fail_unrun(spec, f"dependency {dependency.short_hash} ({dependency.label}) {state}; not run")
            if state != "done":  # running here or elsewhere, or free: this runner's own entry for it claims it
                return Gate("wait")
        job_id, why = self._claim(spec)
        if job_id is None:
            if why.startswith("running") and self._needed_here(spec):
                # Jobs here wait for it: keep watching it, and take it over if its runner dies.
                return Gate("wait")
            self._skip(spec, why)
            return Gate("skip", why)
        self.settled.add(spec.spec_hash)
        self.job_ids[spec.spec_hash] = job_id
        self.claims += 1
        return Gate("run")

    def _claim(self, spec: JobSpec) -> tuple[int | None, str]:
        return self.store.claim_next(self.run_id, pending(spec), self.versions, self.version, self.done_since,
                                     failed_since=self.failed_since)

    def _skip(self, spec: JobSpec, why: str) -> None:
        """Another runner holds or finished ``spec``: say so once (the jobs done before this
        run started are the start line's 'already done')."""
        first = spec.spec_hash not in self.settled
        self.settled.add(spec.spec_hash)
        if spec.spec_hash in self.done_before or spec.spec_hash in self.elsewhere or not first:
            return
        self.elsewhere.add(spec.spec_hash)
        if spec.spec_hash in self.counted:
            self.reporter.taken_elsewhere(spec, why)
        else:
            self.reporter.note(f"  skipped {spec.short_hash} {spec.label}: {why}")

    def _fail_unrun(self, spec: JobSpec, reason: str) -> Gate:
        job_id, why = self._claim(spec)
        self.settled.add(spec.spec_hash)
        if job_id is not None:
            self.job_ids[spec.spec_hash] = job_id
            self.claims += 1
            return Gate("fail", reason)
        self._skip(spec, why)
        return Gate("skip", reason)

    def record(self, event: JobEvent) -> None:
        """Every start and end, in this process: the store's only writer. Whatever goes
        wrong while recording a job fails that job (with the traceback), never the run."""
        self._surveyed.clear()
        if event.spec.spec_hash in self.abandoned:  # failed while recording its start: its end changes nothing
            return
        try:
            self._record(event)
        except Exception as error:  # noqa: BLE001 -- the driver must outlive any one job's bookkeeping
            self.failures += 1
            self.abandoned.add(event.spec.spec_hash)
            self.ended[event.spec.spec_hash] = "failed"
            message = f"recording failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            job_id = self.job_ids.get(event.spec.spec_hash)
            if job_id is not None:
                try:
                    self.store.set_status(job_id, "failed", error=message, traceback=tb.format_exc())
                except Exception:  # noqa: BLE001 -- the database itself is gone: say so, go on
                    pass
            self.reporter.job_end(event.spec, "failed", message)

    def _record(self, event: JobEvent) -> None:
        spec, job_id = event.spec, self.job_ids[event.spec.spec_hash]
        if event.kind == "start":
            self.store.set_status(job_id, "running", worker=event.worker)
            self.reporter.job_start(spec, worker="" if self.local else event.worker, bar=self.local)
            return
        self.ended[spec.spec_hash] = event.status
        if event.status == "done":
            try:
                self.store.finish_job(job_id, event.result, worker=event.worker)
                self.reporter.job_end(spec, "done", summary(event.result))
            except StoreError as error:  # a later run judged this one dead and took the job
                self.failures += 1
                self.ended[spec.spec_hash] = "failed"
                self.reporter.job_end(spec, "lost", str(error))
        else:
            self.failures += event.status == "failed"
            self.store.set_status(job_id, event.status, error=event.error, traceback=event.traceback,
                                  worker=event.worker)
            self.reporter.job_end(spec, event.status, event.error or "")


def run_matrix(matrix: Matrix, store: Store, jobs: list[JobSpec], force: bool = False,
               execution: Execution = Execution(), reporter: Reporter | None = None,
               executor: Executor | None = None, wait: bool = False, poll_seconds: float = 2.0,
               depends_on: Callable[[JobSpec], list[JobSpec]] = job_dependencies) -> int:
    """Run every job of ``jobs`` (and, first, the jobs they depend on) that is not done
    (all of them with ``force``) and not held by another live run, on ``executor``
    (default: one at a time in this process), claiming each when a slot frees up. With
    ``wait``, keep watching until every job is finished, wherever it runs. Returns the
    exit code: 0 all done, 1 some failed here, 130 interrupted."""
    reporter = reporter or Reporter()
    if execution.artifacts is None:  # saved models go next to the database by default
        execution = replace(execution, artifacts=str(artifacts_root(store.path).resolve()))
    executor = executor or LocalExecutor(execution, reporter.step_callback)
    jobs = with_dependencies(jobs, depends_on)
    run_id = store.start_run(matrix.name, str(matrix.path), matrix.content_hash, executor.describe())
    started = now()
    states = store.survey([s.spec_hash for s in jobs], run_id)
    done = 0 if force else sum(states.get(s.spec_hash) == "done" for s in jobs)
    held = sum(states.get(s.spec_hash) == "running" for s in jobs)
    reporter.matrix_start(len(jobs), done, held)
    if not force:
        _report_drift(store, [s for s in jobs if states.get(s.spec_hash) == "done"], reporter)
    books = _Books(store, run_id, reporter, started, force, executor.name == "local", depends_on, jobs, states,
                   poll_seconds)
    try:
        with Heartbeat(store, run_id), executor:
            execute(executor, jobs, books.gate, books.record, books.idle)
            if wait:
                _wait_for_matrix(store, executor, jobs, books)
    except KeyboardInterrupt:
        store.finish_run(run_id, "interrupted")  # its jobs not started yet end 'interrupted' too
        reporter.matrix_end(interrupted=True)
        return EXIT_INTERRUPTED
    except BaseException:
        store.finish_run(run_id, "failed")
        raise
    store.finish_run(run_id)
    reporter.matrix_end(failures=books.failures, elsewhere=len(books.elsewhere), total=len(jobs),
                        done_before=len(books.done_before))
    return EXIT_FAILED if books.failures else EXIT_OK


def _in_cycles(jobs: list[JobSpec], depends_on: Callable[[JobSpec], list[JobSpec]]) -> set[str]:
    """Spec hashes of jobs on a dependency cycle (they can never start)."""
    edges = {job.spec_hash: [d.spec_hash for d in depends_on(job)] for job in jobs}
    cyclic: set[str] = set()
    for start in edges:
        frontier, seen = list(edges[start]), set()
        while frontier:
            node = frontier.pop()
            if node == start:
                cyclic.add(start)
                break
            if node not in seen:
                seen.add(node)
                frontier += edges.get(node, [])
    return cyclic


def _wait_for_matrix(store: Store, executor: Executor, jobs: list[JobSpec], books: _Books) -> None:
    """``--wait``: poll until no job of the matrix is running anywhere (a Slurm array task
    then ends with the matrix). A job that becomes free again meanwhile (its runner was
    killed, or interrupted) is taken over here."""
    hashes, said = [s.spec_hash for s in jobs], None
    while True:
        states = store.survey(hashes, books.run_id, done_since=books.survey_done_since,
                              failed_since=books.failed_since)
        if any(s.spec_hash not in states for s in jobs):
            # Free again: run it here, with the jobs others still hold (a teacher among them
            # is watched, and taken over too if its runner dies).
            again = [s for s in jobs if states.get(s.spec_hash) in (None, "running")]
            books.settled.difference_update(s.spec_hash for s in again)
            claims = books.claims
            execute(executor, again, books.gate, books.record, books.idle)
            if books.claims > claims:
                continue
            # Nothing could be taken (another runner was quicker, or this run may not claim).
            states = store.survey(hashes, books.run_id, done_since=books.survey_done_since,
                                  failed_since=books.failed_since)
        running = sum(state == "running" for state in states.values())
        if not running:
            return
        if running != said:
            books.reporter.note(f"waiting: {running} job{'s' if running != 1 else ''} still running in other runs")
            said = running
        books.idle()


def _report_drift(store: Store, done: list[JobSpec], reporter: Reporter) -> None:
    """One line per done job whose hub reference now resolves to another commit."""
    hub_jobs = [spec for spec in done if spec.model.get("source") == "hub" or spec.task["data"].get("source") == "hub"]
    if not hub_jobs:
        return
    recorded = store.resolved_revisions([spec.spec_hash for spec in hub_jobs])
    cache: dict = {}  # one hub call per (repo, revision), not per job; none for a job that recorded nothing
    for spec in hub_jobs:
        pinned = recorded.get(spec.spec_hash) or {}
        if not pinned:
            continue
        changes = drift(pinned, resolve_revisions(spec.to_dict(), cache, only=set(pinned)))
        for change in changes:
            reporter.note(f"  note {spec.short_hash} {spec.label}: {change}; its results are kept (rerun with --force "
                          f"--only {spec.short_hash} to redo it at the new commit)")
