"""The Ray executor: each job a Ray task with declared resources, on one machine or a cluster."""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections import deque
from dataclasses import replace
from typing import Sequence

from harness.executors.base import Executor, JobEvent, cpu_cores, run_one
from harness.job import Execution
from harness.spec import JobSpec


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
