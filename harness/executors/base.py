"""What every executor shares: the job event, the executor interface, and the one
scheduling loop (``execute``) that dispatches a job when a slot is free and its gate
says so.

Workers run ``run_job`` and send its ``JobResult`` back; only the driver writes to the
store, so each job's results are written once, in one transaction.
"""

from __future__ import annotations

import os
import socket
import time
import traceback as tb
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

from harness.job import Execution, run_job
from harness.spec import JobSpec
from harness.types import JobResult

StepCallback = Callable[[int, float, float], None]


@dataclass
class JobEvent:
    """A job started (``kind='start'``) or ended with ``status`` done, failed or interrupted."""

    kind: str
    spec: JobSpec
    worker: str = ""  # "host:pid device" that runs it
    status: str | None = None
    result: JobResult | None = None
    error: str | None = None  # one line
    traceback: str | None = None


@dataclass(frozen=True)
class Gate:
    """What the scheduler may do with a waiting job now: ``run`` it (it was claimed),
    ``wait`` (a dependency is not done yet), ``skip`` it (another runner has it or did it),
    or ``fail`` it unrun (``reason``)."""

    action: str
    reason: str = ""


def cpu_cores() -> int:
    """Cores this process may use (its affinity mask, e.g. a container's share)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_identity(execution: Execution) -> str:
    threads = f" threads={execution.threads}" if execution.threads else ""
    return f"{socket.gethostname()}:{os.getpid()} {execution.device}{threads}"


def run_one(spec: JobSpec, execution: Execution, on_step: StepCallback | None = None) -> JobEvent:
    """Run one job where this is called; a failing job is an event, not an exception
    (KeyboardInterrupt still propagates)."""
    worker = worker_identity(execution)
    try:
        result = run_job(spec, execution, on_step)
    except Exception as error:
        message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        return JobEvent("end", spec, worker, "failed", error=message, traceback=tb.format_exc())
    return JobEvent("end", spec, worker, "done", result=result)


class Executor(ABC):
    """Runs submitted jobs; ``wait`` returns their start and end events one at a time."""

    name = "executor"

    @abstractmethod
    def free_slots(self) -> int:
        """How many more jobs may be submitted now."""

    @abstractmethod
    def submit(self, spec: JobSpec) -> None: ...

    @abstractmethod
    def wait(self) -> JobEvent:
        """The next event of a submitted job; blocks until there is one."""

    def abort(self) -> None:
        """Ctrl-C: stop the running jobs now."""

    def close(self) -> None:
        """Release workers (idempotent)."""

    def describe(self) -> str:
        return self.name

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def with_dependencies(jobs: list[JobSpec], depends_on: Callable[[JobSpec], list[JobSpec]]) -> list[JobSpec]:
    """``jobs`` plus, transitively and ahead of them, the jobs they depend on (a student
    selected with ``--only`` brings its teacher; one already done is skipped later)."""
    known = {job.spec_hash for job in jobs}
    added: list[JobSpec] = []
    frontier = list(jobs)
    while frontier:
        for dependency in depends_on(frontier.pop()):
            if dependency.spec_hash not in known:
                known.add(dependency.spec_hash)
                added.append(dependency)
                frontier.append(dependency)
    return added[::-1] + jobs


def execute(executor: Executor, jobs: list[JobSpec], gate: Callable[[JobSpec], Gate],
            on_event: Callable[[JobEvent], None], idle: Callable[[], None] = lambda: time.sleep(2.0)) -> None:
    """Run ``jobs`` on ``executor`` in order. Whenever a slot is free, the first waiting
    job whose ``gate`` says ``run`` is submitted (the gate claims it); ``fail`` ends it
    unrun, ``skip`` drops it, ``wait`` keeps it for later. With nothing running here and
    jobs still waiting (on jobs other runners hold), ``idle`` is called between looks.
    ``on_event`` gets every start and end, in this process. On KeyboardInterrupt the
    running jobs end 'interrupted' and the interrupt propagates."""
    waiting, running = list(jobs), {}  # running: spec hash -> spec
    try:
        while waiting or running:
            still_waiting = []
            for spec in waiting:
                if executor.free_slots() <= 0:
                    still_waiting.append(spec)
                    continue
                decision = gate(spec)
                if decision.action == "run":
                    running[spec.spec_hash] = spec
                    executor.submit(spec)
                elif decision.action == "fail":
                    on_event(JobEvent("end", spec, status="failed", error=decision.reason))
                elif decision.action == "wait":
                    still_waiting.append(spec)
            waiting = still_waiting
            if running:
                event = executor.wait()
                if event.kind == "end":
                    running.pop(event.spec.spec_hash)
                on_event(event)
            elif waiting:
                idle()
    except KeyboardInterrupt:
        executor.abort()
        for spec in running.values():
            on_event(JobEvent("end", spec, status="interrupted", error="interrupted (Ctrl-C or SIGTERM)"))
        raise
