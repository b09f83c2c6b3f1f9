"""Runs jobs: one job = load -> fine-tune while pruning -> shrink -> evaluate -> store.

``run_job`` is a pure function of its spec (plus where to run it) returning a
``JobResult``; ``run_matrix`` decides which jobs run, records their lifecycle and
writes each job's results in one transaction.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import platform
import random
import time
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from harness.adapters import context_length
from harness.analysis import analyze_task
from harness.config import Matrix
from harness.distill import distillation_loss_fn, teacher_spec
from harness.export import artifact_dir, artifacts_root, load_saved, save_model
from harness.models import load_model
from harness.pruning import FFNPruner
from harness.registry import METHODS, TASKS
from harness.selection import CubicSchedule
from harness.spec import JobSpec, canonical_json
from harness.speed import SpeedSettings, speed_metrics
from harness.speed import measure as measure_speed
from harness.train import train
from results.store import JobResult, Store

if TYPE_CHECKING:
    from harness.executors import Executor

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


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


def group_hash(spec: JobSpec) -> str:
    """Hash of every spec field except the seed: the leaderboard's grouping key."""
    payload = spec.hash_payload()
    payload.pop("seed")
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


@dataclass(frozen=True)
class Execution:
    """Where jobs run; not part of a job's identity."""

    device: str = "auto"
    threads: int | None = None
    artifacts: str | None = None  # folder of saved models, one per spec hash (None: nothing saved)
    save_models: bool = True  # False: save dense models only (distillation teachers)

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # tied weights counted once


def run_job(spec: JobSpec, execution: Execution = Execution(),
            on_step: Callable[[int, float, float], None] | None = None) -> JobResult:
    if execution.threads:
        torch.set_num_threads(execution.threads)
    device = execution.torch_device()
    seed_everything(spec.seed)

    dtype = getattr(torch, spec.train["dtype"])
    model, tokenizer = load_model(spec.model, device, dtype)
    speed_settings = SpeedSettings.from_eval(spec.eval)
    # The speed reference: an untouched copy of the dense model, timed next to the shrunk
    # one at the end of the job (same warm process, threads and device).
    dense_reference = copy.deepcopy(model) if speed_settings.enabled else None
    task = TASKS.get(spec.task["name"])(spec.task["name"], spec.task["params"])
    context = context_length(model.config)
    max_length = min(spec.train["max_length"], context) if context else spec.train["max_length"]
    examples = task.train_examples(tokenizer, max_length)

    method = METHODS.get(spec.method["name"])(spec.method["params"], spec.seed)
    schedule = CubicSchedule(spec.train["steps"], 1.0 - spec.sparsity, spec.train["warmup_frac"])
    pruner = FFNPruner(model, method, schedule, spec.train["min_width"], spec.train["mask_update_every"])
    original_widths = pruner.widths
    params_dense = parameter_count(model)
    extra_groups = method.attach(pruner)
    loss_fn = _distillation(spec, execution, device, dtype)
    started = time.perf_counter()
    log = train(model, examples, pruner, spec.train, spec.seed, tokenizer.pad_token_id, device, extra_groups, on_step,
                loss_fn)
    del loss_fn  # frees the teacher
    train_seconds = time.perf_counter() - started

    keep = pruner.finalize()
    kept_total = sum(len(k) for k in keep)
    if kept_total != pruner.expected_kept():
        raise AssertionError(f"selection kept {kept_total} neurons, the counting conventions give {pruner.expected_kept()}")
    widths = pruner.shrink(keep) if method.prunes else original_widths
    params_shrunk = parameter_count(model)

    evaluation = task.evaluate(model, tokenizer, spec.eval, device)
    metrics = [asdict(m) for m in evaluation.metrics]
    protocol: dict[str, Any] = {"task": evaluation.protocol, "train_max_length": max_length,
                                "train_examples": len(examples), "device": str(device),
                                "threads": torch.get_num_threads()}
    samples = [dict(s, task=spec.task["name"]) for s in evaluation.samples[: spec.eval["num_samples"]]]
    for extra in spec.eval.get("extra_tasks", []):
        extra_task = TASKS.get(extra["name"])(extra["name"], extra["params"])
        extra_result = extra_task.evaluate(model, tokenizer, spec.eval, device)
        metrics += [asdict(m) | {"name": f"{extra['name']}/{m.name}"} for m in extra_result.metrics]
        protocol[f"extra:{extra['name']}"] = extra_result.protocol

    total_neurons = sum(original_widths)
    metrics += [
        {"name": "ffn_sparsity", "value": 1.0 - kept_total / total_neurons, "higher_is_better": True, "split": "model"},
        {"name": "ffn_neurons", "value": kept_total, "higher_is_better": False, "split": "model"},
        {"name": "params", "value": params_shrunk, "higher_is_better": False, "split": "model"},
        {"name": "params_removed_fraction", "value": 1.0 - params_shrunk / params_dense, "higher_is_better": True,
         "split": "model"},
        {"name": "train_loss_final", "value": log.final_loss, "higher_is_better": False, "split": "train"},
        {"name": "train_seconds", "value": train_seconds, "higher_is_better": False, "split": "train"},
    ]
    layer_stats = [(i, "original_neurons", float(w)) for i, w in enumerate(original_widths)]
    layer_stats += [(i, "kept_neurons", float(w)) for i, w in enumerate(widths)]
    # Redundancy of the neurons the final (shrunk, or dense) model holds, over the eval split.
    analysis = analyze_task(model, tokenizer, task, spec.eval, max_length, [k.tolist() for k in keep])
    neuron_stats = analysis.neuron_stats() if analysis else []
    if analysis:
        metrics += analysis.metrics()
        layer_stats += analysis.layer_stats()
        protocol["analysis"] = analysis.protocol()
    if dense_reference is not None:
        dense_speed = measure_speed(dense_reference, speed_settings, device)
        del dense_reference
        metrics += speed_metrics(dense_speed, measure_speed(model, speed_settings, device))
        protocol["speed"] = dense_speed.protocol
    if execution.artifacts and (execution.save_models or not method.prunes):  # dense: a teacher
        saved = save_model(model, tokenizer, artifact_dir(execution.artifacts, spec.spec_hash))
        protocol["artifacts"] = str(saved.resolve())
    return JobResult(metrics=metrics, protocol=protocol, layer_stats=layer_stats, neuron_stats=neuron_stats,
                     curves=log.curves, samples=samples)


def _distillation(spec: JobSpec, execution: Execution, device: torch.device, dtype: torch.dtype):
    """The distillation loss_fn for a student (its teacher's saved model), else None."""
    teacher = teacher_spec(spec)
    if teacher is None:
        return None
    folder = artifact_dir(execution.artifacts, teacher.spec_hash) if execution.artifacts else None
    if folder is None or not (folder / "config.json").exists():
        raise RuntimeError(f"distillation teacher {teacher.short_hash} ({teacher.label}) has no saved model"
                           f"{f' at {folder}' if folder else ' (no artifacts folder)'}; rerun it: "
                           f"harness run --force --only {teacher.short_hash} ...")
    teacher_model, _ = load_saved(folder, device, dtype)
    return distillation_loss_fn(teacher_model, spec.train)


def select_jobs(jobs: list[JobSpec], only: str | None) -> list[JobSpec]:
    """``--only``: a glob over the job label (model/task/method/s=../seed=..) or a hash prefix."""
    if not only:
        return jobs
    return [j for j in jobs if j.spec_hash.startswith(only) or fnmatch.fnmatch(j.label, f"*{only}*")]


def job_dependencies(spec: JobSpec) -> list[JobSpec]:
    """Jobs that must be done before ``spec`` runs (a distillation student's dense
    teacher); every executor respects them."""
    teacher = teacher_spec(spec)
    return [teacher] if teacher is not None else []


def run_matrix(matrix: Matrix, store: Store, jobs: list[JobSpec], force: bool = False,
               execution: Execution = Execution(), reporter: Any = None, executor: Executor | None = None,
               depends_on: Callable[[JobSpec], list[JobSpec]] = job_dependencies) -> int:
    """Run every job of ``jobs`` (and, first, the jobs they depend on) not already done (all
    of them with ``force``) and not held by another live run, on ``executor`` (default:
    one at a time in this process). Returns the exit code: 0 all done, 1 some failed,
    130 interrupted."""
    from harness.executors import LocalExecutor, execute, with_dependencies
    from harness.progress import Reporter
    from results.liveness import Heartbeat
    from results.store import PendingJob, StoreError

    reporter = reporter or Reporter()
    if execution.artifacts is None:  # saved models go next to the database by default
        execution = replace(execution, artifacts=str(artifacts_root(store.path).resolve()))
    executor = executor or LocalExecutor(execution, reporter.step_callback)
    jobs = with_dependencies(jobs, depends_on)
    run_id = store.start_run(matrix.name, str(matrix.path), matrix.content_hash, executor.describe())
    pending = [PendingJob(s.to_dict(), s.spec_hash, group_hash(s), job_labels(s)) for s in jobs]
    claim = store.claim(run_id, pending, library_versions(), harness_version(), force)
    todo = [spec for spec in jobs if spec.spec_hash in claim.job_ids]
    elsewhere = {h: why for h, why in claim.skipped.items() if why != "done"}
    reporter.matrix_start(len(jobs), len(jobs) - len(todo))
    for spec in jobs:
        if spec.spec_hash in elsewhere:
            reporter.note(f"  skipped {spec.short_hash} {spec.label}: {elsewhere[spec.spec_hash]}")
    failures = 0

    def record(event: Any) -> None:  # every start and end, in this process: the only writer
        nonlocal failures
        spec, job_id = event.spec, claim.job_ids[event.spec.spec_hash]
        if event.kind == "start":
            store.set_status(job_id, "running", worker=event.worker)
            local = executor.name == "local"  # one job at a time here: a step bar, no worker name
            reporter.job_start(spec, worker="" if local else event.worker, bar=local)
        elif event.status == "done":
            try:
                store.finish_job(job_id, event.result, worker=event.worker)
                reporter.job_end(spec, "done", summary(event.result))
            except StoreError as error:  # a later run judged this one dead and took the job
                failures += 1
                reporter.job_end(spec, "lost", str(error))
        else:
            failures += event.status == "failed"
            store.set_status(job_id, event.status, error=event.error, traceback=event.traceback, worker=event.worker)
            reporter.job_end(spec, event.status, event.error or "")

    satisfied = {h for h, why in claim.skipped.items() if why == "done"}
    try:
        with Heartbeat(store, run_id), executor:
            execute(executor, todo, depends_on, satisfied, record, blocked=elsewhere)
    except KeyboardInterrupt:
        store.finish_run(run_id, "interrupted")  # its jobs not started yet end 'interrupted' too
        reporter.matrix_end(interrupted=True)
        return EXIT_INTERRUPTED
    store.finish_run(run_id)
    reporter.matrix_end(failures=failures)
    return EXIT_FAILED if failures else EXIT_OK


def job_labels(spec: JobSpec) -> dict[str, Any]:
    return {"model": spec.model["name"], "task": spec.task["name"], "method": spec.method["name"],
            "method_label": spec.method_label, "sparsity": spec.sparsity, "seed": spec.seed}


def summary(result: JobResult) -> str:
    shown = [m for m in result.metrics if m["split"] not in ("model", "train")][:3]
    return ", ".join(f"{m['name']}={m['value']:.4g}" for m in shown)
