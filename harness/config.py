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

from harness import sections
from harness.models import resolve_model
from harness.params import ConfigError, check_values, resolve_params, unknown_key_error
from harness.registry import METHODS, TASKS, UnknownNameError
from harness.spec import BASELINES, DENSE, PRETRAINED, JobSpec, baseline_method, dense_train, pretrained_spec

MATRIX_KEYS = {"name", "description", "models", "tasks", "methods", "sparsities", "seeds", "train", "eval",
               "dense_baseline", "pretrained_baseline"}
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
    if entry["name"] in BASELINES:
        if entry.get("params"):
            raise ConfigError(f"{field}.params: '{entry['name']}' is a baseline and takes no parameters")
        return [baseline_method(entry["name"])]
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
        {"name": entry["name"], "version": cls.version,
         "params": resolve_params(f"{field}.params", dict(zip(keys, combo)), cls.defaults, cls.required)}
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
    task_train = {**train, **check_values(f"{field}.train", entry.get("train"), sections.declared("train"))}
    task_eval = {**evaluation, **check_values(f"{field}.eval", entry.get("eval"), sections.declared("eval"))}
    for key, value in cls.train_defaults.items():
        if task_train.get(key) in (0, None):
            task_train[key] = value
    for key, value in cls.eval_defaults.items():
        if task_eval.get(key) in (0, None):
            task_eval[key] = value
    task_train = sections.finish("train", task_train, f"{field}.train")
    task_eval = sections.finish("eval", task_eval, f"{field}.eval")
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
    """All jobs of a parsed matrix: models x tasks x methods x sparsities x seeds, plus the
    baselines: a ``dense`` job per (model, task, seed, train settings) (``dense_baseline``)
    and a ``pretrained`` row per (model, task, eval settings) (``pretrained_baseline``).
    Sparsity 0 becomes the dense job.
    """
    _check_top_level(data)
    train = resolve_params("train", data.get("train"), sections.declared("train"))
    evaluation = resolve_params("eval", data.get("eval"), sections.declared("eval"))
    models = [resolve_model(m, f"models[{i}]", base_dir) for i, m in enumerate(_as_list(data, "models"))]
    tasks = [_task(t, f"tasks[{i}]", base_dir, train, evaluation) for i, t in enumerate(_as_list(data, "tasks"))]
    methods = [v for i, m in enumerate(_as_list(data, "methods")) for v in _method_variants(m, f"methods[{i}]")]
    sparsities, seeds = _sparsities(data), _seeds(data)
    include = {}
    for key in ("dense_baseline", "pretrained_baseline"):
        include[key] = data.get(key, True)
        if not isinstance(include[key], bool):
            raise ConfigError(f"{key}: expected true or false, got {include[key]!r}")

    jobs: dict[str, JobSpec] = {}
    for model, (task, task_train, task_eval), seed in itertools.product(models, tasks, seeds):
        dense = JobSpec(model, task, baseline_method(DENSE), 0.0, seed, dense_train(task_train), task_eval)
        candidates = [pretrained_spec(dense)] if include["pretrained_baseline"] else []
        if include["dense_baseline"]:
            candidates.append(dense)
        for method in methods:
            for sparsity in sparsities:
                if method["name"] == PRETRAINED:
                    candidates.append(pretrained_spec(dense))
                elif sparsity == 0.0 or method["name"] == DENSE:
                    candidates.append(dense)
                else:  # only pruned jobs distill; the dense job (their teacher) never does
                    candidates.append(JobSpec(model, task, method, sparsity, seed, task_train, task_eval))
        for spec in candidates:
            jobs.setdefault(spec.spec_hash, spec)
    return list(jobs.values())


def load_matrix(path: str | Path) -> Matrix:
    path = Path(path)
    data = load_yaml(path)
    jobs = expand(data, path.resolve().parent)
    content_hash = hashlib.sha256(path.read_bytes()).hexdigest()
    return Matrix(name=data["name"], path=path, content_hash=content_hash, jobs=jobs)
