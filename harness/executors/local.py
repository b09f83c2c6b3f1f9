"""The local executor: one job at a time, in this process (a step bar on the terminal)."""

from __future__ import annotations

from typing import Callable

from harness.executors.base import Executor, JobEvent, StepCallback, run_one, worker_identity
from harness.job import Execution
from harness.spec import JobSpec


class LocalExecutor(Executor):
    """One job at a time, in this process (step-by-step progress on the terminal)."""

    name = "local"

    def __init__(self, execution: Execution, step_callback: Callable[[JobSpec], StepCallback] | None = None):
        self.execution, self.step_callback = execution, step_callback
        self._spec: JobSpec | None = None
        self._started = False

    def free_slots(self) -> int:
        return 0 if self._spec else 1

    def submit(self, spec: JobSpec) -> None:
        self._spec, self._started = spec, False

    def wait(self) -> JobEvent:
        spec = self._spec
        assert spec is not None, "wait() with nothing submitted"
        if not self._started:  # report the start before the job blocks this process
            self._started = True
            return JobEvent("start", spec, worker_identity(self.execution))
        on_step = self.step_callback(spec) if self.step_callback else None
        event = run_one(spec, self.execution, on_step)
        self._spec = None
        return event
