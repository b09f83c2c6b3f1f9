"""The processes executor: N worker processes on this machine, each with its own device.

Workers start from a fixed entry point (``python -m harness.executors.worker``) and talk
to the driver over a private socket pair, so what the parent's ``__main__`` is never
matters. A worker that dies fails its job; a new one takes its place.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from typing import Sequence

import torch

from harness.executors.base import Executor, JobEvent, cpu_cores
from harness.job import Execution
from harness.spec import JobSpec


@dataclass
class _Worker:
    process: subprocess.Popen
    connection: Connection
    spec: JobSpec | None = None  # the job it runs now


def worker_executions(jobs: int, execution: Execution) -> list[Execution]:
    """One Execution per worker: visible GPUs round-robin (device auto/cuda), and CPU
    threads split so that the workers together use each core once (unless --threads)."""
    threads = execution.threads or max(1, cpu_cores() // jobs)
    gpus = torch.cuda.device_count() if execution.device in ("auto", "cuda") else 0
    if gpus:
        return [replace(execution, device=f"cuda:{i % gpus}", threads=threads) for i in range(jobs)]
    device = "cpu" if execution.device == "auto" else execution.device
    return [replace(execution, device=device, threads=threads) for _ in range(jobs)]


class ProcessExecutor(Executor):
    """N worker processes on this machine, each with its own device. ``preload``: modules
    workers import first, e.g. ones registering test-only methods."""

    name = "processes"

    def __init__(self, jobs: int, execution: Execution, preload: Sequence[str] = ()):
        if jobs < 1:
            raise ValueError(f"--jobs: expected at least 1, got {jobs}")
        self.executions = worker_executions(jobs, execution)
        self.preload = tuple(preload)
        self._workers: list[_Worker | None] = [None] * jobs
        self._events: deque[JobEvent] = deque()

    def describe(self) -> str:
        return f"processes({len(self._workers)}: {', '.join(sorted({str(e.device) for e in self.executions}))})"

    def _start(self, slot: int) -> _Worker:
        ours, theirs = socket.socketpair()
        # The worker finds what this process imports (a checkout that is not installed, a
        # user's plugin folder) without running any of this process's own code.
        path = os.pathsep.join(p for p in sys.path if p)
        env = dict(os.environ, PYTHONPATH=path)
        process = subprocess.Popen([sys.executable, "-m", "harness.executors.worker", str(theirs.fileno())],
                                   pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL)
        theirs.close()
        connection = Connection(ours.detach())
        connection.send((self.executions[slot], self.preload, os.getpid()))
        return _Worker(process, connection)

    def free_slots(self) -> int:
        return sum(1 for w in self._workers if w is None or w.spec is None)

    def submit(self, spec: JobSpec) -> None:
        slot = next(i for i, w in enumerate(self._workers) if w is None or w.spec is None)
        worker = self._workers[slot]
        if worker is None or worker.process.poll() is not None:  # first job, or it died while idle
            worker = self._workers[slot] = self._start(slot)
        worker.spec = spec
        worker.connection.send(spec.to_dict())

    def wait(self) -> JobEvent:
        while not self._events:
            busy = [w for w in self._workers if w is not None and w.spec is not None]
            ready = set(wait([w.connection for w in busy]))
            for worker in busy:
                if worker.connection in ready:
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
        except (EOFError, OSError):  # the socket closed: the worker is gone
            code = worker.process.wait()
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            error = (f"worker process {worker.process.pid} {how} while running this job "
                     f"(out of memory? a crash in native code?)")
            if worker.spec is not None:
                self._events.append(JobEvent("end", worker.spec, f"{socket.gethostname()}:{worker.process.pid}",
                                             "failed", error=error))
            worker.connection.close()
            self._workers[self._workers.index(worker)] = None

    def abort(self) -> None:
        for worker in self._workers:
            if worker is not None and worker.process.poll() is None:
                worker.process.terminate()
        self.close()

    def close(self) -> None:
        for worker in self._workers:
            if worker is not None and worker.process.poll() is None:
                try:
                    worker.connection.send(None)
                except OSError:
                    pass
        for slot, worker in enumerate(self._workers):
            if worker is not None:
                try:
                    worker.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    worker.process.kill()
                    worker.process.wait()
                worker.connection.close()
                self._workers[slot] = None
