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

    def __init__(self, store: Store, run_id: int, reporter: Reporter, force_since: datetime | None,
                 local_executor: bool, depends_on: Callable[[JobSpec], list[JobSpec]], cyclic: set[str],
                 counted: set[str]):
        self.store, self.run_id, self.reporter = store, run_id, reporter
        self.counted = counted  # the jobs the start line said this runner would run
        self.depends_on, self.cyclic = depends_on, cyclic
        self.done_since = force_since or datetime.min
        self.local = local_executor
        self.versions, self.version = library_versions(), harness_version()
        self.job_ids: dict[str, int] = {}  # spec hash -> the attempt this runner claimed
        self.ended: dict[str, str] = {}  # spec hash -> status, for jobs that ended here
        self.failures = self.elsewhere = 0

    def dependency_state(self, dependency: JobSpec) -> str:
        if dependency.spec_hash in self.ended:
            return self.ended[dependency.spec_hash]
        state = self.store.survey([dependency.spec_hash], self.run_id).get(dependency.spec_hash, "open")
        return state if state != "failed" or dependency.spec_hash in self.job_ids else "open"

    def gate(self, spec: JobSpec) -> Gate:
        if spec.spec_hash in self.cyclic:
            return self._fail_unrun(spec, "dependency cycle; not run")
        for dependency in self.depends_on(spec):
            state = self.dependency_state(dependency)
            if state in ("failed", "interrupted"):
                return self._fail_unrun(spec, f"dependency {dependency.short_hash} ({dependency.label}) {state}; not run")
            if state != "done":
                return Gate("wait")
        job_id, why = self.store.claim_next(self.run_id, pending(spec), self.versions, self.version, self.done_since)
        if job_id is None:
            self.elsewhere += 1
            if spec.spec_hash in self.counted:
                self.reporter.taken_elsewhere(spec, why)
            else:
                self.reporter.note(f"  skipped {spec.short_hash} {spec.label}: {why}")
            return Gate("skip", why)
        self.job_ids[spec.spec_hash] = job_id
        return Gate("run")

    def _fail_unrun(self, spec: JobSpec, reason: str) -> Gate:
        job_id, _ = self.store.claim_next(self.run_id, pending(spec), self.versions, self.version, self.done_since)
        if job_id is not None:
            self.job_ids[spec.spec_hash] = job_id
            return Gate("fail", reason)
        self.ended[spec.spec_hash] = "failed"
        return Gate("skip", reason)

    def record(self, event: JobEvent) -> None:
        """Every start and end, in this process: the store's only writer. Whatever goes
        wrong while recording a job fails that job (with the traceback), never the run."""
        try:
            self._record(event)
        except Exception as error:  # noqa: BLE001 -- the driver must outlive any one job's bookkeeping
            self.failures += event.kind == "end"
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
    counted = {s.spec_hash for s in jobs if force and states.get(s.spec_hash) != "running"
               or states.get(s.spec_hash) not in ("done", "running")}
    books = _Books(store, run_id, reporter, started if force else None, executor.name == "local", depends_on,
                   _in_cycles(jobs, depends_on), counted)
    idle: Callable[[], None] = lambda: time.sleep(poll_seconds)  # noqa: E731
    try:
        with Heartbeat(store, run_id), executor:
            execute(executor, jobs, books.gate, books.record, idle)
            if wait:
                _wait_for_matrix(store, jobs, run_id, reporter, idle)
    except KeyboardInterrupt:
        store.finish_run(run_id, "interrupted")  # its jobs not started yet end 'interrupted' too
        reporter.matrix_end(interrupted=True)
        return EXIT_INTERRUPTED
    except BaseException:
        store.finish_run(run_id, "failed")
        raise
    store.finish_run(run_id)
    reporter.matrix_end(failures=books.failures, elsewhere=books.elsewhere)
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


def _wait_for_matrix(store: Store, jobs: list[JobSpec], run_id: int, reporter: Reporter,
                     idle: Callable[[], None]) -> None:
    """``--wait``: poll until no job of the matrix is running anywhere (a Slurm array task
    then ends with the matrix)."""
    hashes = [s.spec_hash for s in jobs]
    while True:
        states = store.survey(hashes, run_id)
        running = sum(state == "running" for state in states.values())
        if not running:
            return
        reporter.note(f"waiting: {running} jobs still running in other runs")
        idle()


def _report_drift(store: Store, done: list[JobSpec], reporter: Reporter) -> None:
    """One line per done job whose hub reference now resolves to another commit."""
    hub_jobs = [spec for spec in done if spec.model.get("source") == "hub" or spec.task["data"].get("source") == "hub"]
    if not hub_jobs:
        return
    recorded = store.resolved_revisions([spec.spec_hash for spec in hub_jobs])
    for spec in hub_jobs:
        changes = drift(recorded.get(spec.spec_hash, {}), resolve_revisions(spec.to_dict()))
        for change in changes:
            reporter.note(f"  note {spec.short_hash} {spec.label}: {change}; its results are kept (rerun with --force "
                          f"--only {spec.short_hash} to redo it at the new commit)")
