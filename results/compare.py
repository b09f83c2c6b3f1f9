"""Paired comparisons against a baseline, read from the results database: what
``harness compare`` prints and what the dashboard's "Is it better than random?" page
shows. Both call ``comparisons`` (one family) — the page through a cached wrapper in
``dashboard/data.py`` — so they cannot disagree.

Grouping rule: jobs are grouped by every spec field except the seed (``group_hash``).
A method job is paired with the baseline job of the same ``pair_key`` (its spec without
the method: same model, task, data, sparsity, seed, train and eval settings). Two groups
of one method label and sparsity that differ in any setting (train.steps 40 vs 80,
distillation on or off, greedy vs beam decoding, ...) are two rows, each with its own n
and its settings diff; nothing is averaged across groups.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import select

from results import queries
from results.schema import Job
from results.stats import ALPHA, COMPARISON_COLUMNS, paired_differences, settings_diff
from results.store import Store

BOOKKEEPING_SPLITS = ("analysis", "cost", "model", "speed", "train")  # metric splits that are not task results
DISTILL_PREFIX = "distill"  # train keys distill, distill_alpha_kd, ... (harness/distill.py)
FAMILY_COLUMNS = ["task", "model", "metric", "split", "higher_is_better", "baseline"]


class CompareError(ValueError):
    """Bad input (an unknown task, model or metric): one line naming what exists."""


@dataclass(frozen=True)
class Family:
    """One family of tests: one table, one page."""

    task: str
    model: str
    metric: str
    split: str
    higher_is_better: bool
    baseline: str


# -- specs ------------------------------------------------------------------------------------
def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def without_distill(train: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in train.items() if not k.startswith(DISTILL_PREFIX)}


def distills(spec: dict[str, Any]) -> bool:
    return bool((spec.get("train") or {}).get("distill", False))


def setting_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec without its seed: what a group shares."""
    return {k: v for k, v in spec.items() if k != "seed"}


def context_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec without method and seed: what the groups compared with each other share."""
    return {k: v for k, v in spec.items() if k not in ("seed", "method")}


def job_specs(store: Store, job_ids: list[int]) -> dict[int, dict[str, Any]]:
    """job_id -> its resolved spec (``jobs.spec_json``)."""
    if store.engine is None or not job_ids:
        return {}
    specs: dict[int, dict[str, Any]] = {}
    ids = [int(i) for i in job_ids]
    with store.engine.connect() as connection:
        for start in range(0, len(ids), 500):
            for job_id, spec_json in connection.execute(
                    select(Job.id, Job.spec_json).where(Job.id.in_(ids[start:start + 500]))):
                specs[int(job_id)] = json.loads(spec_json)
    return specs


def with_specs(store: Store, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (rows with job_id) plus pair_key and the keys the claims need:
    ``context`` (spec without method and seed), ``base_context`` (that, without the
    distillation keys), ``dense_key`` (what a job shares with its dense baseline: no
    method, sparsity, seed or distillation keys), ``distill`` and ``spec`` (the spec)."""
    frame = frame.reset_index(drop=True)
    if frame.empty:
        return frame.assign(pair_key=[], context=[], base_context=[], dense_key=[], distill=[], spec=[])
    keys = queries.pairing_keys(store, frame["job_id"].drop_duplicates().tolist())
    frame = frame.merge(keys, on="job_id", how="left")
    specs = job_specs(store, frame["job_id"].drop_duplicates().tolist())
    derived = {}
    for job_id, spec in specs.items():
        context = context_spec(spec)
        base = dict(context, train=without_distill(context.get("train") or {}))
        dense = {k: v for k, v in base.items() if k != "sparsity"}
        derived[job_id] = (_digest(context), _digest(base), _digest(dense), distills(spec), spec)
    columns = list(zip(*(derived.get(int(j), (None, None, None, False, {})) for j in frame["job_id"])))
    for name, values in zip(("context", "base_context", "dense_key", "distill", "spec"), columns):
        frame[name] = list(values)
    return frame


# -- which metric ------------------------------------------------------------------------------
headline_metric = queries.headline_metric


def eval_split(metrics: pd.DataFrame, specs: dict[int, dict[str, Any]] | None = None) -> str:
    """The task's evaluation split: the jobs' ``task.params.eval_split`` (most common),
    else "test" when present, else the first result split that is not bookkeeping."""
    splits = [s for s in dict.fromkeys(metrics["split"]) if s not in BOOKKEEPING_SPLITS]
    declared = Counter()
    for spec in (specs or {}).values():
        value = ((spec.get("task") or {}).get("params") or {}).get("eval_split")
        if isinstance(value, str):
            declared[value] += 1
    for value, _ in declared.most_common():
        if value in splits or not splits:
            return value
    if "test" in splits:
        return "test"
    non_validation = [s for s in splits if s != "validation"]
    return (non_validation or splits or ["test"])[0]


def default_metric(metrics: pd.DataFrame, split: str, headline: str = "") -> str | None:
    """The task's headline metric if it has results on ``split``, else the first task
    metric stored on that split."""
    on_split = metrics[metrics["split"] == split]
    if headline and headline in set(on_split["metric"]):
        return headline
    return on_split["metric"].iloc[0] if not on_split.empty else None


def resolve_metric(metrics: pd.DataFrame, task: str, metric: str | None = None, split: str | None = None,
                   specs: dict[int, dict[str, Any]] | None = None, headline: str = "") -> tuple[str, str, bool]:
    """(metric, split, higher_is_better) for one task's done metric rows; by default the
    headline metric on the eval split. Raises CompareError naming what exists."""
    if metrics.empty:
        raise CompareError(f"no finished jobs with metrics for task '{task}'")
    task_split = eval_split(metrics, specs)
    if split is not None and split not in set(metrics["split"]):
        raise CompareError(f"--split: no metric of task '{task}' on split '{split}'; splits: "
                           + ", ".join(sorted(set(metrics["split"]))))
    if metric is None:
        split = split or task_split
        metric = default_metric(metrics, split, headline)
        if metric is None:
            raise CompareError(f"task '{task}' has no metric on split '{split}'")
    else:
        names = set(metrics["metric"])
        if metric not in names:
            raise CompareError(f"--metric: task '{task}' has no metric '{metric}'; metrics: {', '.join(sorted(names))}")
        splits = list(dict.fromkeys(metrics.loc[metrics["metric"] == metric, "split"]))
        if split is None:
            if task_split in splits:
                split = task_split
            elif len(splits) == 1:
                split = splits[0]
            else:
                raise CompareError(f"--metric: '{metric}' of task '{task}' is on splits {', '.join(splits)}; "
                                   "choose one with --split")
        elif split not in splits:
            raise CompareError(f"--split: '{metric}' of task '{task}' is on {', '.join(splits)}, not '{split}'")
    rows = metrics[(metrics["metric"] == metric) & (metrics["split"] == split)]
    return metric, split, bool(rows["higher_is_better"].iloc[0])


# -- one family -------------------------------------------------------------------------------
def metric_frame(store: Store, task: str, model: str, metric: str, split: str) -> pd.DataFrame:
    """One metric of every done job of (task, model), with pairing keys and specs."""
    frame = queries.done_metrics(store, task, model)
    frame = frame[(frame["metric"] == metric) & (frame["split"] == split)]
    return with_specs(store, frame)


def group_settings(frame: pd.DataFrame, by: tuple[str, ...] = ("method_label", "sparsity")) -> dict[str, str]:
    """group_hash -> the settings in which the group differs from the other groups of the
    same method label and sparsity ("" when it is the only one)."""
    result: dict[str, str] = {}
    for _, rows in frame.drop_duplicates("group_hash").groupby(list(by), sort=False):
        result.update(settings_diff({g: setting_spec(s) for g, s in zip(rows["group_hash"], rows["spec"])}))
    return result


def comparisons(store: Store, task: str, model: str, metric: str | None = None, split: str | None = None,
                baseline: str = "random", alpha: float = ALPHA) -> pd.DataFrame:
    """One family: every (method label, sparsity, group) of (task, model) against
    ``baseline`` (a method label) in one metric — by default the task's headline metric
    on its evaluation split. Holm over the family's m tests, Bonferroni (1 − α/m)
    intervals, verdicts from the Holm-adjusted p (``results.stats.paired_differences``).

    Columns: task, model, metric, split, higher_is_better, baseline, then
    ``results.stats.COMPARISON_COLUMNS``. Empty when nothing pairs. Raises CompareError
    for an unknown metric or split.
    """
    metrics = queries.done_metrics(store, task, model)
    if metrics.empty:
        return pd.DataFrame(columns=FAMILY_COLUMNS + COMPARISON_COLUMNS)
    if metric is None or split is None:
        specs = job_specs(store, metrics["job_id"].drop_duplicates().tolist())
        metric, split, higher = resolve_metric(metrics, task, metric, split, specs, headline_metric(store, task))
    else:
        metric, split, higher = resolve_metric(metrics, task, metric, split, headline=headline_metric(store, task))
    frame = with_specs(store, metrics[(metrics["metric"] == metric) & (metrics["split"] == split)])
    result = paired_differences(frame, baseline, higher, alpha=alpha, settings=group_settings(frame))
    family = {"task": task, "model": model, "metric": metric, "split": split, "higher_is_better": higher,
              "baseline": baseline}
    for position, (name, value) in enumerate(family.items()):
        result.insert(position, name, [value] * len(result))
    return result.reset_index(drop=True)


def families(store: Store, task: str | None = None, model: str | None = None) -> list[tuple[str, str]]:
    """(task, model) pairs with done jobs, checking --task and --model against them."""
    latest = queries.latest_jobs(store)
    done = latest[latest["status"] == "done"] if not latest.empty else latest
    if done.empty:
        return []
    tasks = sorted(set(done["task"]))
    if task is not None and task not in tasks:
        raise CompareError(f"--task: no finished jobs of task '{task}'; tasks: {', '.join(tasks)}")
    if task is not None:
        done = done[done["task"] == task]
    models = sorted(set(done["model"]))
    if model is not None and model not in models:
        raise CompareError(f"--model: no finished jobs of model '{model}'" + (f" on task '{task}'" if task else "")
                           + f"; models: {', '.join(models)}")
    if model is not None:
        done = done[done["model"] == model]
    return sorted(set(zip(done["task"], done["model"])))


def compare_all(store: Store, task: str | None = None, model: str | None = None, metric: str | None = None,
                split: str | None = None, baseline: str = "random", alpha: float = ALPHA) -> pd.DataFrame:
    """``comparisons`` for each (task, model) family (all of them when --task/--model are
    omitted), concatenated; each family is corrected on its own. A family without the
    requested metric is skipped; when none has it, its CompareError is raised."""
    frames, errors = [], []
    for t, m in families(store, task, model):
        try:
            frames.append(comparisons(store, t, m, metric, split, baseline, alpha))
        except CompareError as error:
            errors.append(error)
    if errors and not frames:
        raise errors[0]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=FAMILY_COLUMNS + COMPARISON_COLUMNS)
    return pd.concat(frames, ignore_index=True)


# -- text ------------------------------------------------------------------------------------
def interval_text(low: float, high: float, level: float) -> str:
    if pd.isna(low):
        return "–"
    return f"[{low:+.4g}, {high:+.4g}] ({level:.2%} simultaneous)"


def display_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns the page's table and ``harness compare``'s table show."""
    return pd.DataFrame({
        "method": frame["method_label"], "sparsity": frame["sparsity"], "settings diff": frame["settings"],
        "n": frame["n"], "mean diff": frame["mean_diff"],
        "adjusted interval": [interval_text(l, h, c) for l, h, c in zip(frame["ci_low"], frame["ci_high"], frame["ci_level"])],
        "raw p": frame["p_raw"], "Holm p": frame["p_holm"], "m": frame["m"], "verdict": frame["verdict"],
    })


def family_caption(metric: str, split: str, higher: bool, baseline: str, m: int, alpha: float = ALPHA) -> str:
    direction = "higher is better" if higher else "lower is better"
    return (f"difference = method − {baseline} in {metric} [{split}] ({direction}), paired by seed within a group "
            f"(same model, task, sparsity, seed and settings); m = {m} tests in this family; intervals are "
            f"Bonferroni-simultaneous (each at {1 - alpha / max(m, 1):.2%}); verdicts use Holm-adjusted p < {alpha:g}")
