"""Executors: where a matrix's jobs run: in this process, in N worker processes, or as Ray
tasks. ``harness.runner.run_matrix`` keeps the books (store, progress); an executor only
runs jobs and reports each one's start and end. ``execute`` is the one scheduling loop
all executors share: a job is dispatched once the jobs it depends on are done.

Workers run ``run_job`` and send its ``JobResult`` back; only the driver writes to the
store, so each job's results are written once, in one transaction.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
import traceback as tb
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence

from harness.spec import JobSpec

if TYPE_CHECKING:
    from harness.runner import Execution
    from results.store import JobResult

DependsOn = Callable[[JobSpec], list[JobSpec]]
StepCallback = Callable[[int, float, float], None]
EXECUTORS = ("local", "processes", "ray")


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


def cpu_cores() -> int:
    """Cores this process may use (its affinity mask, e.g. a container's share)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_identity(execution: Execution) -> str:
    threads = f" threads={execution.threads}" if execution.threads else ""
    return f"{socket.gethostname()}:{os.getpid()} {execution.device}{threads}"


def run_one(spec: JobSpec, execution: Execution, on_step: StepCallback | None = None) -> JobEvent:
    """Run one job where this is called; a failing job is an event, not an exception
    (KeyboardInterrupt still propagates)."""
    from harness.runner import run_job

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


def with_dependencies(jobs: list[JobSpec], depends_on: DependsOn) -> list[JobSpec]:
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


def execute(executor: Executor, jobs: list[JobSpec], depends_on: DependsOn, satisfied: Iterable[str],
            on_event: Callable[[JobEvent], None], blocked: Mapping[str, str] = {}) -> None:
    """Run ``jobs`` on ``executor`` in order, each once every job it depends on is done
    (done before: ``satisfied`` spec hashes, or done in this run). A job whose dependency
    failed, or is neither done nor in ``jobs`` (``blocked`` says why), fails unrun.
    ``on_event`` gets every start and end, in this process. On KeyboardInterrupt the
    running jobs end 'interrupted' and the interrupt propagates."""
    done, ended = set(satisfied), {}  # ended: spec hash -> status, this run
    ours = {job.spec_hash for job in jobs}
    needs = {job.spec_hash: depends_on(job) for job in jobs}  # asked once: it may be costly
    waiting, running = list(jobs), {}  # running: spec hash -> spec

    def unrunnable(spec: JobSpec) -> str | None:
        for dependency in needs[spec.spec_hash]:
            key = dependency.spec_hash
            if ended.get(key, "done") != "done":
                return f"dependency {dependency.short_hash} ({dependency.label}) {ended[key]}; not run"
            if key not in done and key not in ours:
                why = blocked.get(key, "neither done nor part of this run")
                return f"dependency {dependency.short_hash} ({dependency.label}) is {why}; not run"
        return None

    try:
        while waiting or running:
            still_waiting = []
            for spec in waiting:
                reason = unrunnable(spec)
                if reason:
                    ended[spec.spec_hash] = "failed"
                    on_event(JobEvent("end", spec, status="failed", error=reason))
                elif executor.free_slots() > 0 and all(d.spec_hash in done for d in needs[spec.spec_hash]):
                    running[spec.spec_hash] = spec
                    executor.submit(spec)
                else:
                    still_waiting.append(spec)
            waiting = still_waiting
            if not running:
                for spec in waiting:  # nothing runs and nothing can start: a dependency cycle
                    on_event(JobEvent("end", spec, status="failed", error="dependency cycle; not run"))
                return
            event = executor.wait()
            if event.kind == "end":
                running.pop(event.spec.spec_hash)
                ended[event.spec.spec_hash] = event.status
                if event.status == "done":
                    done.add(event.spec.spec_hash)
            on_event(event)
    except KeyboardInterrupt:
        executor.abort()
        for spec in running.values():
            on_event(JobEvent("end", spec, status="interrupted", error="interrupted (Ctrl-C or SIGTERM)"))
        raise


# -- local -------------------------------------------------------------------------------
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


# -- processes ---------------------------------------------------------------------------
@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    connection: Connection
    spec: JobSpec | None = None  # the job it runs now


def _worker_main(connection: Connection, execution: Execution, preload: Sequence[str], parent: int) -> None:
    """A worker process: run the jobs the driver sends until it sends None or goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the driver decides

    def exit_with_parent() -> None:  # a SIGKILLed driver must not leave workers computing
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=exit_with_parent, daemon=True).start()
    for module in preload:
        importlib.import_module(module)
    import harness.runner  # noqa: F401  (torch, transformers: imported while the driver waits)

    identity = worker_identity(execution)
    while True:
        try:
            payload = connection.recv()
        except EOFError:
            return
        if payload is None:
            return
        spec = JobSpec.from_dict(payload)
        connection.send(("start", identity))
        connection.send(("end", run_one(spec, execution)))


def worker_executions(jobs: int, execution: Execution) -> list[Execution]:
    """One Execution per worker: visible GPUs round-robin (device auto/cuda), and CPU
    threads split so that the workers together use each core once (unless --threads)."""
    import torch

    threads = execution.threads or max(1, cpu_cores() // jobs)
    gpus = torch.cuda.device_count() if execution.device in ("auto", "cuda") else 0
    if gpus:
        return [replace(execution, device=f"cuda:{i % gpus}", threads=threads) for i in range(jobs)]
    device = "cpu" if execution.device == "auto" else execution.device
    return [replace(execution, device=device, threads=threads) for _ in range(jobs)]


class ProcessExecutor(Executor):
    """N worker processes on this machine (spawned: each imports the harness fresh), each
    with its own device. A worker that dies fails its job; a new one takes its place.
    ``preload``: modules workers import first, e.g. ones registering test-only methods."""

    name = "processes"

    def __init__(self, jobs: int, execution: Execution, preload: Sequence[str] = ()):
        if jobs < 1:
            raise ValueError(f"--jobs: expected at least 1, got {jobs}")
        self.executions = worker_executions(jobs, execution)
        self.preload = tuple(preload)
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker | None] = [None] * jobs
        self._events: deque[JobEvent] = deque()

    def describe(self) -> str:
        return f"processes({len(self._workers)}: {', '.join(sorted({str(e.device) for e in self.executions}))})"

    def _start(self, slot: int) -> _Worker:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=_worker_main, name=f"harness-worker-{slot}", daemon=True,
                                        args=(theirs, self.executions[slot], self.preload, os.getpid()))
        process.start()
        theirs.close()
        return _Worker(process, ours)

    def free_slots(self) -> int:
        return sum(1 for w in self._workers if w is None or w.spec is None)

    def submit(self, spec: JobSpec) -> None:
        slot = next(i for i, w in enumerate(self._workers) if w is None or w.spec is None)
        worker = self._workers[slot]
        if worker is None or not worker.process.is_alive():  # first job, or it died while idle
            worker = self._workers[slot] = self._start(slot)
        worker.spec = spec
        worker.connection.send(spec.to_dict())

    def wait(self) -> JobEvent:
        while not self._events:
            busy = [w for w in self._workers if w is not None and w.spec is not None]
            ready = set(wait([w.connection for w in busy] + [w.process.sentinel for w in busy]))
            for worker in busy:
                if worker.connection in ready or worker.process.sentinel in ready:
                    self._collect(worker)
        return self._events.popleft()

    def _collect(self, worker: _Worker) -> None:
        """Read what ``worker`` sent; if it died mid-job, fail the job and retire it."""
        try:
            while worker.spec is not None and worker.connection.poll():
                kind, payload = worker.connection.recv()
                if kind == "start":
                    self._events.append(JobEvent("start", worker.spec, payload))
                else:
                    self._events.append(payload)
                    worker.spec = None
        except (EOFError, OSError):
            pass  # the pipe closed: the worker is gone
        if worker.spec is not None and not worker.process.is_alive():
            worker.process.join()
            code = worker.process.exitcode or 0
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            error = (f"worker process {worker.process.pid} {how} while running this job "
                     f"(out of memory? a crash in native code?)")
            self._events.append(JobEvent("end", worker.spec, f"{socket.gethostname()}:{worker.process.pid}",
                                         "failed", error=error))
            worker.connection.close()
            self._workers[self._workers.index(worker)] = None

    def abort(self) -> None:
        for worker in self._workers:
            if worker is not None and worker.process.is_alive():
                worker.process.terminate()
        self.close()

    def close(self) -> None:
        for worker in self._workers:
            if worker is not None and worker.process.is_alive():
                try:
                    worker.connection.send(None)
                except OSError:
                    pass
        for slot, worker in enumerate(self._workers):
            if worker is not None:
                worker.process.join(timeout=10)
                if worker.process.is_alive():
                    worker.process.kill()
                    worker.process.join()
                worker.connection.close()
                self._workers[slot] = None


# -- Ray ---------------------------------------------------------------------------------
def _ray_job(payload: dict, execution: Execution, preload: Sequence[str]) -> JobEvent:
    """A Ray task: one job on the worker Ray chose (Ray sets CUDA_VISIBLE_DEVICES)."""
    for module in preload:
        importlib.import_module(module)
    return run_one(JobSpec.from_dict(payload), execution)


class RayExecutor(Executor):
    """Each job a Ray task with declared resources. ``address``: "auto", "ray://host:10001",
    or None for a local Ray instance on this machine's cores. Tasks are never retried by
    Ray (``max_retries=0``): a rerun of the matrix retries what failed. At most as many
    tasks are in flight as the cluster can run at once, so 'running' means running."""

    name = "ray"

    def __init__(self, execution: Execution, address: str | None = None, cpus_per_job: float | None = None,
                 gpus_per_job: float | None = None, preload: Sequence[str] = ()):
        try:
            import ray
        except ImportError:
            raise ValueError("--executor ray: Ray is not installed; pip install 'prune-harness[ray]'") from None
        self._ray, self.preload = ray, tuple(preload)
        self._owner = not ray.is_initialized()
        if self._owner:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline: no usage-stats prompt or upload
            if address:
                ray.init(address=address, log_to_driver=False)
            else:  # workers find what the driver imports (e.g. a checkout that is not installed)
                ray.init(num_cpus=cpu_cores(), include_dashboard=False, log_to_driver=False,
                         runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}})
        resources = ray.cluster_resources()
        wants_gpu = execution.device in ("auto", "cuda") or execution.device.startswith("cuda")
        self.gpus = gpus_per_job if gpus_per_job is not None else (1.0 if wants_gpu and resources.get("GPU") else 0.0)
        self.cpus = cpus_per_job or float(execution.threads or 1)
        device = "cuda" if self.gpus else ("cpu" if execution.device == "auto" else execution.device)
        self.execution = replace(execution, device=device, threads=execution.threads or max(1, int(self.cpus)))
        self._task = ray.remote(_ray_job).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0)
        self._running: dict[object, JobSpec] = {}  # object ref -> spec
        self._events: deque[JobEvent] = deque()
        self._capacity, self._capacity_at = 1, 0.0

    def describe(self) -> str:
        return f"ray(cpus={self.cpus:g}, gpus={self.gpus:g} per job)"

    def free_slots(self) -> int:
        if time.monotonic() - self._capacity_at > 10:  # the cluster may grow or shrink
            resources = self._ray.cluster_resources()
            fits = [resources.get("CPU", 0) / self.cpus] + ([resources.get("GPU", 0) / self.gpus] if self.gpus else [])
            self._capacity, self._capacity_at = max(1, int(min(fits))), time.monotonic()
        return self._capacity - len(self._running)

    def submit(self, spec: JobSpec) -> None:
        self._running[self._task.remote(spec.to_dict(), self.execution, self.preload)] = spec
        self._events.append(JobEvent("start", spec, "ray"))

    def wait(self) -> JobEvent:
        if self._events:
            return self._events.popleft()
        (ref,), _ = self._ray.wait(list(self._running), num_returns=1)
        spec = self._running.pop(ref)
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayError as error:  # the worker died (OOM kill, segfault), or Ray did
            first = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
            return JobEvent("end", spec, "ray", "failed", error=f"{type(error).__name__}: {first}",
                            traceback=str(error))

    def abort(self) -> None:
        for ref in self._running:
            self._ray.cancel(ref, force=True)
        self._running.clear()
        self.close()

    def close(self) -> None:
        if self._owner and self._ray.is_initialized():
            self._ray.shutdown()


def make_executor(kind: str, execution: Execution, jobs: int | None = None, ray_address: str | None = None,
                  cpus_per_job: float | None = None, gpus_per_job: float | None = None,
                  step_callback: Callable[[JobSpec], StepCallback] | None = None) -> Executor:
    """The executor the CLI's run options name. Raises ValueError for options that do
    not go together (the CLI prints it as a usage error)."""
    if kind not in EXECUTORS:
        raise ValueError(f"--executor: '{kind}' is not one of {', '.join(EXECUTORS)}")
    if jobs is not None and kind != "processes":
        raise ValueError("--jobs: only with --executor processes (Ray sizes itself from the cluster)")
    if kind != "ray" and (ray_address or cpus_per_job is not None or gpus_per_job is not None):
        raise ValueError("--ray-address, --cpus-per-job, --gpus-per-job: only with --executor ray")
    if kind == "local":
        return LocalExecutor(execution, step_callback)
    if kind == "processes":
        if jobs is None:  # one worker per visible GPU, else per core
            import torch

            jobs = (torch.cuda.device_count() if execution.device in ("auto", "cuda") else 0) or cpu_cores()
        return ProcessExecutor(jobs, execution)
    return RayExecutor(execution, ray_address, cpus_per_job, gpus_per_job)
