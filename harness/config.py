"""Matrix YAML -> validated, fully resolved job specs.

Every error is a ConfigError with one line naming the field and what is allowed; the
CLI turns it into exit code 2 before anything touches the database.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.params import ConfigError, resolve_params, unknown_key_error
from harness.distill import DISTILL_DEFAULTS, without_distill
from harness.distill import check_settings as check_distill_settings
from harness.registry import METHODS, TASKS, UnknownNameError
from harness.spec import JobSpec
from harness.speed import SPEED_DEFAULTS
from harness.speed import check_settings as check_speed_settings

TRAIN_DEFAULTS: dict[str, Any] = {
    "steps": 200,
    "batch_size": 8,
    "lr": 5e-4,
    "weight_decay": 0.1,
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "adam_eps": 1e-4,
    "grad_clip": 1.0,
    "warmup_frac": 0.1,  # LR warm-up and dense phase of the sparsity schedule
    "max_length": 0,  # 0 = the task's default, capped by the model's context
    "min_width": 1,  # a layer never loses all its neurons
    "mask_update_every": 1,
    "dtype": "float32",
    **DISTILL_DEFAULTS,  # distill: true -> knowledge distillation from the dense job (harness/distill.py)
}
EVAL_DEFAULTS: dict[str, Any] = {
    "max_examples": 200,
    "batch_size": 8,
    "decoding": "greedy",  # or "beam"
    "num_beams": 10,  # beam settings: the authors' code
    "length_penalty": 0.9,
    "no_repeat_ngram_size": 4,
    "max_new_tokens": 0,  # 0 = the task's default
    "num_samples": 5,  # sample generations stored per job
    "extra_tasks": [],  # evaluation-only tasks (e.g. "lmeval:<task>") run on the shrunk model
    # Neuron-redundancy analysis (harness/analysis.py) over the eval split; 0 examples = off.
    "analysis_examples": 64,
    "uniqueness_threshold": 0.8,  # cos at or above which a neuron has a surviving twin
    "sensitivity": "reference",  # |Σ θ·∂L/∂θ| (the authors'); or "activation": |Σ a·∂L/∂a|
    # Physical speed of the dense and the shrunk model (harness/speed.py); speed_repeats 0 = off.
    **SPEED_DEFAULTS,
}
MATRIX_KEYS = {"name", "description", "models", "tasks", "methods", "sparsities", "seeds", "train", "eval", "dense_baseline"}
_TASK_ENTRY_KEYS = {"name", "train", "eval"}  # plus the task's own parameters
_METHOD_ENTRY_KEYS = {"name", "params"}


@dataclass
class Matrix:
    name: str
    path: Path
    content_hash: str
    jobs: list[JobSpec]


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"matrix: file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        where = getattr(error, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"matrix: {path} is not valid YAML{line}: {getattr(error, 'problem', None) or error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"matrix: {path} must be a YAML mapping with keys {', '.join(sorted(MATRIX_KEYS))}")
    return data


def _as_list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if value is None:
        raise ConfigError(f"{key}: required, a non-empty list")
    if not isinstance(value, list):
        value = [value]
    if not value:
        raise ConfigError(f"{key}: must not be empty")
    return value


def _sparsities(data: dict[str, Any]) -> list[float]:
    values = []
    for i, value in enumerate(_as_list(data, "sparsities")):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"sparsities[{i}]: expected a number in [0, 1), got {value!r}")
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"sparsities[{i}]: {value} is outside [0, 1) (fraction of FFN neurons removed)")
        values.append(float(value))
    return sorted(set(values))


def _seeds(data: dict[str, Any]) -> list[int]:
    seeds = _as_list(data, "seeds") if "seeds" in data else [0]
    for i, seed in enumerate(seeds):
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seeds[{i}]: expected a non-negative integer, got {seed!r}")
    return sorted(set(seeds))


def _method_variants(entry: Any, field: str) -> list[dict[str, Any]]:
    """One resolved {name, params} per combination of list-valued parameters (sweeps)."""
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or "name" not in entry:
        raise ConfigError(f"{field}: expected a method name or {{name: ..., params: {{...}}}}, got {entry!r}")
    for key in entry:
        if key not in _METHOD_ENTRY_KEYS:
            raise unknown_key_error(field, key, sorted(_METHOD_ENTRY_KEYS))
    try:
        cls = METHODS.get(entry["name"])
    except UnknownNameError as error:
        raise ConfigError(f"{field}.name: {error}") from None
    given = entry.get("params") or {}
    if not isinstance(given, dict):
        raise ConfigError(f"{field}.params: expected a mapping, got {given!r}")
    keys = sorted(given)
    grids = [given[k] if isinstance(given[k], list) else [given[k]] for k in keys]
    if any(len(grid) == 0 for grid in grids):
        raise ConfigError(f"{field}.params: a swept parameter has an empty list")
    variants = [
        {"name": entry["name"], "params": resolve_params(f"{field}.params", dict(zip(keys, combo)), cls.defaults, cls.required)}
        for combo in itertools.product(*grids)
    ]
    for variant in variants:
        try:
            cls.check_params(variant["params"])
        except ValueError as error:
            raise ConfigError(f"{field}.params.{error}") from None
    return variants


def _task(entry: Any, field: str, base_dir: Path, train: dict[str, Any], evaluation: dict[str, Any]):
    """(task dict for the spec, resolved train settings, resolved eval settings)."""
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or "name" not in entry:
        raise ConfigError(f"{field}: expected a task name or {{name: ..., <task parameters>}}, got {entry!r}")
    cls, task = _task_instance(entry, field, base_dir)
    if cls.task_type == "evaluation_only":
        raise ConfigError(f"{field}.name: '{entry['name']}' is evaluation-only; list it under eval.extra_tasks")
    task_train = resolve_params(f"{field}.train", entry.get("train"), train)
    task_eval = resolve_params(f"{field}.eval", entry.get("eval"), evaluation)
    for key, value in cls.train_defaults.items():
        if task_train.get(key) in (0, None):
            task_train[key] = value
    for key, value in cls.eval_defaults.items():
        if task_eval.get(key) in (0, None):
            task_eval[key] = value
    if task_eval["decoding"] not in ("greedy", "beam"):
        raise ConfigError(f"{field}.eval.decoding: '{task_eval['decoding']}' is not allowed; allowed: greedy, beam")
    if task_eval["decoding"] == "greedy":  # beam settings do not apply and must not split jobs
        for key in ("num_beams", "length_penalty", "no_repeat_ngram_size"):
            task_eval.pop(key)
    from harness.analysis import check_settings as check_analysis_settings

    check_analysis_settings(task_eval, f"{field}.eval")
    try:
        check_speed_settings(task_eval, f"{field}.eval")
        check_distill_settings(task_train, f"{field}.train")
    except ValueError as error:
        raise ConfigError(str(error)) from None
    task_eval["extra_tasks"] = [_extra_task(e, f"{field}.eval.extra_tasks[{i}]", base_dir) for i, e in enumerate(task_eval["extra_tasks"])]
    return _task_dict(entry["name"], task, field), task_train, task_eval


def _task_instance(entry: dict[str, Any], field: str, base_dir: Path):
    try:
        cls = TASKS.get(entry["name"])
    except UnknownNameError as error:
        raise ConfigError(f"{field}.name: {error}") from None
    params_given = {k: v for k, v in entry.items() if k not in _TASK_ENTRY_KEYS}
    for key in params_given:
        if key not in cls.defaults and key not in cls.required:
            raise unknown_key_error(field, key, sorted(set(cls.defaults) | _TASK_ENTRY_KEYS))
    params = resolve_params(field, params_given, cls.defaults, cls.required)
    if params.get("data_files"):
        params["data_files"] = _data_files(params["data_files"], f"{field}.data_files", base_dir)
    return cls, cls(entry["name"], params)


def _task_dict(name: str, task: Any, field: str) -> dict[str, Any]:
    try:
        data = task.data_identity()
    except (FileNotFoundError, ValueError) as error:
        raise ConfigError(f"{field}: {error}") from None
    return {"name": name, "params": task.params, "data": data}


def _extra_task(entry: Any, field: str, base_dir: Path) -> dict[str, Any]:
    """An evaluation-only task run on each job's shrunk model after its own evaluation."""
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or "name" not in entry:
        raise ConfigError(f"{field}: expected a task name or {{name: ..., <task parameters>}}, got {entry!r}")
    if set(entry) & {"train", "eval"}:
        raise ConfigError(f"{field}: evaluation-only tasks take task parameters only, not train/eval")
    cls, task = _task_instance(entry, field, base_dir)
    if cls.task_type != "evaluation_only":
        raise ConfigError(f"{field}.name: '{entry['name']}' is a training task; list it under tasks")
    return _task_dict(entry["name"], task, field)


def _data_files(files: Any, field: str, base_dir: Path) -> dict[str, str]:
    if not isinstance(files, dict) or not files:
        raise ConfigError(f"{field}: expected a mapping split -> file, e.g. {{train: a.jsonl, test: b.jsonl}}")
    resolved = {}
    for split, name in files.items():
        if not isinstance(name, str):
            raise ConfigError(f"{field}.{split}: expected a file path, got {name!r}")
        path = Path(name).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if not path.is_file():
            raise ConfigError(f"{field}.{split}: file not found: {name}")
        resolved[split] = str(path.resolve())
    return resolved


def _check_top_level(data: dict[str, Any]) -> None:
    for key in data:
        if key not in MATRIX_KEYS:
            raise unknown_key_error("matrix", str(key), sorted(MATRIX_KEYS))
    if not isinstance(data.get("name"), str) or not data["name"].strip():
        raise ConfigError("name: required, a non-empty string naming the matrix")
    for key in ("train", "eval"):
        if key in data and not isinstance(data[key], dict):
            raise ConfigError(f"{key}: expected a mapping, got {data[key]!r}")


def expand(data: dict[str, Any], base_dir: Path) -> list[JobSpec]:
    """All jobs of a parsed matrix: models x tasks x methods x sparsities x seeds.

    Sparsity 0 becomes the ``dense`` method; one dense job per (model, task, seed,
    train settings) is added however many methods are listed (``dense_baseline``).
    """
    from harness.models import resolve_model

    _check_top_level(data)
    train = resolve_params("train", data.get("train"), TRAIN_DEFAULTS)
    evaluation = resolve_params("eval", data.get("eval"), EVAL_DEFAULTS)
    models = [resolve_model(m, f"models[{i}]", base_dir) for i, m in enumerate(_as_list(data, "models"))]
    tasks = [_task(t, f"tasks[{i}]", base_dir, train, evaluation) for i, t in enumerate(_as_list(data, "tasks"))]
    methods = [v for i, m in enumerate(_as_list(data, "methods")) for v in _method_variants(m, f"methods[{i}]")]
    sparsities, seeds = _sparsities(data), _seeds(data)
    dense_baseline = data.get("dense_baseline", True)
    if not isinstance(dense_baseline, bool):
        raise ConfigError(f"dense_baseline: expected true or false, got {dense_baseline!r}")
    dense = {"name": "dense", "params": {}}

    jobs: dict[str, JobSpec] = {}
    for model, (task, task_train, task_eval), seed in itertools.product(models, tasks, seeds):
        combos = [(method, s) for method in methods for s in sparsities]
        if dense_baseline:
            combos.insert(0, (dense, 0.0))
        for method, sparsity in combos:
            if sparsity == 0.0 or not METHODS.get(method["name"]).prunes:
                method, sparsity = dense, 0.0
            # Only pruned jobs distill (the dense job is their teacher); the distill keys
            # stay out of other jobs' specs, so their hashes do not depend on them.
            distills = task_train["distill"] and method is not dense
            train = task_train if distills else without_distill(task_train)
            spec = JobSpec(model, task, method, sparsity, seed, train, task_eval)
            jobs.setdefault(spec.spec_hash, spec)
    return list(jobs.values())


def load_matrix(path: str | Path) -> Matrix:
    path = Path(path)
    data = load_yaml(path)
    jobs = expand(data, path.resolve().parent)
    content_hash = hashlib.sha256(path.read_bytes()).hexdigest()
    return Matrix(name=data["name"], path=path, content_hash=content_hash, jobs=jobs)
