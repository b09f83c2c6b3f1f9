"""Runs jobs: one job = load -> fine-tune while pruning -> shrink -> evaluate -> store.

``run_job`` is a pure function of its spec (plus where to run it) returning a
``JobResult``; ``run_matrix`` decides which jobs run, records their lifecycle and
writes each job's results in one transaction.
"""

from __future__ import annotations

import fnmatch
import hashlib
import platform
import random
import time
import traceback as tb
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any, Callable

import numpy as np
import torch

from harness.config import Matrix
from harness.models import load_model
from harness.pruning import FFNPruner
from harness.registry import METHODS, TASKS
from harness.selection import CubicSchedule
from harness.spec import JobSpec, canonical_json
from harness.train import train
from results.store import JobResult, Store

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
    started = time.perf_counter()

    dtype = getattr(torch, spec.train["dtype"])
    model, tokenizer = load_model(spec.model, device, dtype)
    task = TASKS.get(spec.task["name"])(spec.task["name"], spec.task["params"])
    context = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    max_length = min(spec.train["max_length"], context) if context else spec.train["max_length"]
    examples = task.train_examples(tokenizer, max_length)

    method = METHODS.get(spec.method["name"])(spec.method["params"], spec.seed)
    schedule = CubicSchedule(spec.train["steps"], 1.0 - spec.sparsity, spec.train["warmup_frac"])
    pruner = FFNPruner(model, method, schedule, spec.train["min_width"], spec.train["mask_update_every"])
    original_widths = pruner.widths
    params_dense = parameter_count(model)
    extra_groups = method.attach(pruner)
    log = train(model, examples, pruner, spec.train, spec.seed, tokenizer.pad_token_id, device, extra_groups, on_step)
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
    return JobResult(metrics=metrics, protocol=protocol, layer_stats=layer_stats, curves=log.curves, samples=samples)


def select_jobs(jobs: list[JobSpec], only: str | None) -> list[JobSpec]:
    """``--only``: a glob over the job label (model/task/method/s=../seed=..) or a hash prefix."""
    if not only:
        return jobs
    return [j for j in jobs if j.spec_hash.startswith(only) or fnmatch.fnmatch(j.label, f"*{only}*")]


def run_matrix(matrix: Matrix, store: Store, jobs: list[JobSpec], force: bool = False,
               execution: Execution = Execution(), reporter: Any = None) -> int:
    """Run every job of ``jobs`` not already done (all of them with ``force``).
    Returns the exit code: 0 all done, 1 some failed, 130 interrupted."""
    from harness.progress import Reporter

    reporter = reporter or Reporter()
    statuses = store.latest_statuses([j.spec_hash for j in jobs])
    todo = [j for j in jobs if force or statuses.get(j.spec_hash) != "done"]
    reporter.matrix_start(len(jobs), len(jobs) - len(todo))
    run_id = store.start_run(matrix.name, str(matrix.path), matrix.content_hash)
    versions, version = library_versions(), harness_version()
    job_ids = {
        spec: store.add_pending(run_id, spec.to_dict(), spec.spec_hash, group_hash(spec), job_labels(spec), versions, version)
        for spec in todo
    }
    failures = 0
    try:
        for spec in todo:
            job_id = job_ids[spec]
            store.set_status(job_id, "running")
            reporter.job_start(spec)
            try:
                result = run_job(spec, execution, reporter.step_callback(spec))
            except KeyboardInterrupt:
                store.set_status(job_id, "interrupted", error="interrupted by the user (Ctrl-C)")
                reporter.job_end(spec, "interrupted")
                raise
            except Exception as error:  # a failing job is recorded and the matrix goes on
                failures += 1
                message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                store.set_status(job_id, "failed", error=message, traceback=tb.format_exc())
                reporter.job_end(spec, "failed", message)
                continue
            store.finish_job(job_id, result)
            reporter.job_end(spec, "done", summary(result))
    except KeyboardInterrupt:
        store.finish_run(run_id)
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
