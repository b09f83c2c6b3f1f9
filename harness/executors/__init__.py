"""Executors: where a matrix's jobs run -- in this process, in N worker processes, or as Ray
tasks. ``harness.orchestrate.run_matrix`` keeps the books (store, progress); an executor
only runs jobs and reports each one's start and end (``base.execute`` is the scheduling
loop they share)."""

from __future__ import annotations

import torch

from harness.executors.base import Executor, JobEvent, cpu_cores
from harness.executors.local import LocalExecutor
from harness.executors.processes import ProcessExecutor
from harness.executors.ray import RayExecutor  # imports Ray only when one is made
from harness.job import Execution

EXECUTORS = ("local", "processes", "ray")


def make_executor(kind: str, execution: Execution, jobs: int | None = None, ray_address: str | None = None,
                  cpus_per_job: float | None = None, gpus_per_job: float | None = None) -> Executor | None:
    """The executor the CLI's run options name (None: the local one, which ``run_matrix``
    builds with its step progress). Raises ValueError for options that do not go
    together (the CLI prints it as a usage error)."""
    if kind not in EXECUTORS:
        raise ValueError(f"--executor: '{kind}' is not one of {', '.join(EXECUTORS)}")
    if jobs is not None and kind != "processes":
        raise ValueError("--jobs: only with --executor processes (Ray sizes itself from the cluster)")
    if kind != "ray" and (ray_address or cpus_per_job is not None or gpus_per_job is not None):
        raise ValueError("--ray-address, --cpus-per-job, --gpus-per-job: only with --executor ray")
    if kind == "local":
        return None
    if kind == "processes":
        if jobs is None:  # one worker per visible GPU, else per core
            jobs = (torch.cuda.device_count() if execution.device in ("auto", "cuda") else 0) or cpu_cores()
        return ProcessExecutor(jobs, execution)
    return RayExecutor(execution, ray_address, cpus_per_job, gpus_per_job)


__all__ = ["EXECUTORS", "Executor", "JobEvent", "LocalExecutor", "ProcessExecutor", "RayExecutor", "make_executor"]
