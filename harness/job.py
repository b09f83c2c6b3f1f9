"""One job: load -> fine-tune while pruning -> shrink -> evaluate -> analyse -> time -> save.

``run_job`` is a pure function of its spec (plus where to run it) returning a
``JobResult``; it writes nothing but the job's saved model. Three kinds of job share the
path: a pruning method, ``dense`` (fine-tuned, nothing pruned) and ``pretrained`` (no
training: the reference row).
"""

from __future__ import annotations

import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch

from harness.adapters import context_length, ffn_layers
from harness.analysis import AnalysisSettings, analyze_task
from harness.compute import autocast, check_precision, configure_cuda, resolve_device
from harness.distill import DistillSettings, distillation_loss_fn
from harness.export import artifact_dir, load_saved, save_model
from harness.hub import resolve_revisions
from harness.models import load_model
from harness.pruning import FFNPruner, NoPruning
from harness.registry import METHODS, TASKS
from harness.selection import CubicSchedule
from harness.spec import JobSpec, teacher_spec
from harness.speed import SpeedSettings, measure_pair, speed_metrics
from harness.task import MissingSplitError
from harness.train import train
from harness.types import SPLIT_COST, SPLIT_MODEL, SPLIT_TRAIN, JobResult, Metric


@dataclass(frozen=True)
class Execution:
    """Where jobs run; not part of a job's identity."""

    device: str = "auto"
    threads: int | None = None
    artifacts: str | None = None  # folder of saved models, one per spec hash (None: nothing saved)
    save_models: bool = True  # False: save dense models only (distillation teachers)

    def torch_device(self) -> torch.device:
        return resolve_device(self.device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # tied weights counted once


class _Stopwatch:
    """Wall time per phase of a job, stored as cost metrics (``load_seconds``, ...)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - started

    def metrics(self) -> list[Metric]:
        return [Metric(f"{phase}_seconds", value, False, SPLIT_COST) for phase, value in self.seconds.items()]


def run_job(spec: JobSpec, execution: Execution = Execution(),
            on_step: Callable[[int, float, float], None] | None = None) -> JobResult:
    if execution.threads:
        torch.set_num_threads(execution.threads)
    device = execution.torch_device()
    configure_cuda()
    precision = spec.train.get("precision", "fp32")
    check_precision(precision, device)
    seed_everything(spec.seed)
    clock = _Stopwatch()

    dtype = getattr(torch, spec.train.get("dtype", "float32"))
    resolved = resolve_revisions(spec.to_dict())  # hub commits, recorded (offline: none)
    model_identity = {**spec.model, "revision": resolved.get(f"model:{spec.model['name']}", spec.model.get("revision"))}
    with clock("load"):
        model, tokenizer = load_model(model_identity, device, dtype)
    task = TASKS.get(spec.task["name"])(spec.task["name"], _pinned_task_params(spec, resolved))
    context = context_length(model.config)
    max_length = min(spec.train["max_length"], context) if context else spec.train["max_length"]
    original_widths = _ffn_widths(model)
    params_dense = parameter_count(model)
    protocol: dict[str, Any] = {"train_max_length": max_length, "device": str(device), "threads": torch.get_num_threads(),
                                "precision": precision, "kind": spec.kind, "task_facts": _task_facts(task)}
    metrics: list[Metric] = []
    curves: list[tuple[int, str, float]] = []
    keep = None

    if spec.trains:
        examples = task.train_examples(tokenizer, max_length)
        protocol["train_examples"] = len(examples)
        pruner, extra_groups = NoPruning(), []
        if spec.prunes:
            method = METHODS.get(spec.method["name"])(spec.method["params"], spec.seed)
            schedule = CubicSchedule(spec.train["steps"], 1.0 - spec.sparsity, spec.train["warmup_frac"])
            pruner = FFNPruner(model, method, schedule, spec.train["min_width"], spec.train["mask_update_every"])
            extra_groups = pruner.attach()
        loss_fn = _distillation(spec, execution, device, dtype)
        with clock("train"):
            log = train(model, examples, pruner, spec.train, spec.seed, tokenizer.pad_token_id, device, extra_groups,
                        precision, on_step, loss_fn)
        del loss_fn  # frees the teacher
        curves = log.curves
        metrics.append(Metric("train_loss_final", log.final_loss, False, SPLIT_TRAIN))
        if spec.prunes:
            keep = pruner.finalize()
            kept_total = sum(len(k) for k in keep)
            if method.exact_counts and kept_total != pruner.expected_kept():
                raise AssertionError(f"selection kept {kept_total} neurons, the counting conventions give "
                                     f"{pruner.expected_kept()}")
            pruner.shrink(keep)

    with clock("eval"), autocast(precision, device):
        evaluation = task.evaluate(model, tokenizer, spec.eval, device, "test", max_length)
        metrics += evaluation.metrics
        protocol["task"] = evaluation.protocol
        protocol["validation"] = _validate(task, model, tokenizer, spec, device, max_length, metrics)
        for extra in spec.eval.get("extra_tasks", []):
            extra_task = TASKS.get(extra["name"])(extra["name"], extra["params"])
            extra_result = extra_task.evaluate(model, tokenizer, spec.eval, device)
            metrics += [Metric(f"{extra['name']}/{m.name}", m.value, m.higher_is_better, m.split) for m in extra_result.metrics]
            protocol[f"extra:{extra['name']}"] = extra_result.protocol
    samples = [dict(s, task=spec.task["name"]) for s in evaluation.samples[: spec.eval["num_samples"]]]

    widths = _ffn_widths(model)
    kept_total, params_shrunk = sum(widths), parameter_count(model)
    metrics += [
        Metric("ffn_sparsity", 1.0 - kept_total / sum(original_widths), True, SPLIT_MODEL),
        Metric("ffn_neurons", kept_total, False, SPLIT_MODEL),
        Metric("params", params_shrunk, False, SPLIT_MODEL),
        Metric("params_removed_fraction", 1.0 - params_shrunk / params_dense, True, SPLIT_MODEL),
    ]
    layer_stats = [(i, "original_neurons", float(w)) for i, w in enumerate(original_widths)]
    layer_stats += [(i, "kept_neurons", float(w)) for i, w in enumerate(widths)]

    # Redundancy of the neurons the final (shrunk, dense or pretrained) model holds, over the test split.
    with clock("analysis"), autocast(precision, device):
        neuron_ids = [k.tolist() for k in keep] if keep is not None else None
        analysis = analyze_task(model, tokenizer, task, AnalysisSettings.from_section(spec.eval), max_length, neuron_ids)
    neuron_stats = analysis.neuron_stats() if analysis else []
    if analysis:
        metrics += analysis.metrics()
        layer_stats += analysis.layer_stats()
        protocol["analysis"] = analysis.protocol()

    speed = SpeedSettings.from_section(spec.eval)
    if speed.enabled and spec.trains:  # a pretrained row is its own dense reference: nothing to time
        with clock("speed"):
            # The dense reference is loaded again just for timing (no second copy of the
            # weights is held through training), then timed interleaved with the job's model.
            reference, _ = load_model(model_identity, device, dtype)
            dense_speed, shrunk_speed = measure_pair(reference, model, speed, device, precision)
            del reference
        metrics += speed_metrics(dense_speed, shrunk_speed)
        protocol["speed"] = dense_speed.protocol
    if execution.artifacts and spec.trains and (execution.save_models or not spec.prunes):  # dense: a teacher
        with clock("save"):
            saved = save_model(model, tokenizer, artifact_dir(execution.artifacts, spec.spec_hash))
        protocol["artifacts"] = str(saved.resolve())
    metrics += clock.metrics()
    result = JobResult(metrics=metrics, protocol=protocol, layer_stats=layer_stats, neuron_stats=neuron_stats,
                       curves=curves, samples=samples, resolved_revisions=resolved)
    bad = result.non_finite()
    if bad:  # a NaN or infinite number is never stored as a result
        raise FloatingPointError(f"metric {bad[0]} is not finite" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
    return result


def _task_facts(task: Any) -> dict[str, Any]:
    """What readers of the results need to know about the task (recorded with each job, so
    the dashboard needs no registry): its headline metric, whether its data is generated."""
    generated = bool(task.generated_data and not task.params.get("data_files"))
    return {"headline_metric": task.headline_metric, "headline_metrics": list(task.headline_metrics),
            "generated_data": generated, "description": task.describe()}


def _pinned_task_params(spec: JobSpec, resolved: dict[str, str]) -> dict[str, Any]:
    """The task's parameters, a hub dataset's revision pinned to the commit recorded for this
    job (as the model is): the data read is the data the recorded commit names."""
    data = spec.task.get("data") or {}
    commit = resolved.get(f"dataset:{data.get('hub_id')}") if data.get("source") == "hub" else None
    return {**spec.task["params"], "revision": commit} if commit else spec.task["params"]


def _ffn_widths(model: torch.nn.Module) -> list[int]:
    return [layer.width for layer in ffn_layers(model)]


def _validate(task: Any, model: torch.nn.Module, tokenizer: Any, spec: JobSpec, device: torch.device,
              max_length: int, metrics: list[Metric]) -> dict[str, Any]:
    """Evaluate on the validation split (what choices read); returns its protocol entry."""
    split, test_split = task.split_for("validation"), task.split_for("test")
    if not spec.eval.get("validation_examples"):
        return {"skipped": "eval.validation_examples is 0"}
    if split is None:
        return {"skipped": f"task '{spec.task['name']}' has no validation split"}
    if split == test_split:
        return {"skipped": f"validation_split is the test split '{split}': choices would read the test split"}
    try:
        result = task.evaluate(model, tokenizer, spec.eval, device, "validation", max_length)
    except MissingSplitError as error:
        return {"skipped": str(error)}
    metrics += result.metrics
    return result.protocol


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
    return distillation_loss_fn(teacher_model, DistillSettings.from_section(spec.train))
