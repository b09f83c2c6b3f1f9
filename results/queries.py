"""Read-only queries returning DataFrames: what the terminal leaderboard and the
dashboard show. Filters reach SQL only as bound parameters."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from sqlalchemy import inspect, select

from results.schema import CurvePoint, Job, LayerStat, MetricRow, NeuronStat, Sample
from results.store import Store

_JOB_COLUMNS = ["job_id", "spec_hash", "group_hash", "attempt", "status", "model", "task", "method",
                "method_label", "sparsity", "seed"]


def jobs(store: Store, task: str | None = None, model: str | None = None) -> pd.DataFrame:
    """Every attempt of every job."""
    if store.engine is None:
        return pd.DataFrame(columns=_JOB_COLUMNS + ["error", "started_at", "finished_at"])
    query = select(Job.id.label("job_id"), Job.spec_hash, Job.group_hash, Job.attempt, Job.status, Job.model,
                   Job.task, Job.method, Job.method_label, Job.sparsity, Job.seed, Job.error, Job.started_at,
                   Job.finished_at)
    if task:
        query = query.where(Job.task == task)
    if model:
        query = query.where(Job.model == model)
    with store.engine.connect() as connection:
        return pd.read_sql(query, connection)


def latest_jobs(store: Store, task: str | None = None, model: str | None = None) -> pd.DataFrame:
    """One row per spec: its latest done attempt if any, else its latest attempt."""
    frame = jobs(store, task, model)
    if frame.empty:
        return frame
    frame = frame.assign(_done=frame["status"] == "done").sort_values(["_done", "attempt"])
    return frame.groupby("spec_hash").tail(1).drop(columns="_done").reset_index(drop=True)


def done_metrics(store: Store, task: str | None = None, model: str | None = None) -> pd.DataFrame:
    """Metric rows of each spec's latest done attempt, with the job's labels. ``spread``: the
    interquartile range over a measurement's repeats where one was stored (speed), else None."""
    latest = latest_jobs(store, task, model)
    columns = _JOB_COLUMNS + ["metric", "split", "value", "higher_is_better", "spread"]
    if latest.empty:
        return pd.DataFrame(columns=columns)
    done = latest[latest["status"] == "done"]
    if done.empty:
        return pd.DataFrame(columns=columns)
    query = select(MetricRow.job_id, MetricRow.name.label("metric"), MetricRow.split, MetricRow.value,
                   MetricRow.higher_is_better, MetricRow.spread).where(MetricRow.job_id.in_(done["job_id"].tolist()))
    with store.engine.connect() as connection:
        metrics = pd.read_sql(query, connection)
    return done[_JOB_COLUMNS].merge(metrics, on="job_id")


def leaderboard(store: Store, task: str | None = None, model: str | None = None,
                metric: str | None = None) -> pd.DataFrame:
    """Mean, std and seed count per (task, model, metric, split, method variant, sparsity),
    every variant (``board`` is the terminal's view: headline metrics, variants chosen on
    validation).

    Jobs are grouped by every spec field except the seed (``group_hash``), so a method
    with other parameters or other train settings is another row; labels that would
    collide get the group hash appended. Baselines (dense, then pretrained) come first.
    """
    frame = done_metrics(store, task, model)
    if metric:
        frame = frame[frame["metric"] == metric]
    return aggregate(frame)


LEADERBOARD_COLUMNS = ["task", "model", "metric", "split", "higher_is_better", "method", "method_label", "sparsity",
                       "mean", "std", "n_seeds", "group_hash"]
BASELINE_ORDER = {"dense": 0, "pretrained": 1}  # reference rows first, then the methods by label


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """``done_metrics`` rows -> one row per (task, model, metric, split, group, sparsity)."""
    columns = LEADERBOARD_COLUMNS
    if frame.empty:
        return pd.DataFrame(columns=columns)
    keys = ["task", "model", "metric", "split", "higher_is_better", "method", "method_label", "sparsity", "group_hash"]
    grouped = frame.groupby(keys, dropna=False)["value"].agg(mean="mean", std="std", n_seeds="count").reset_index()
    grouped["std"] = grouped["std"].fillna(0.0)
    collide = grouped.duplicated(["task", "model", "metric", "split", "method_label", "sparsity"], keep=False)
    grouped.loc[collide, "method_label"] = grouped.loc[collide, "method_label"] + " [" + grouped.loc[collide, "group_hash"].str[:6] + "]"
    order = grouped["method"].map(BASELINE_ORDER).fillna(len(BASELINE_ORDER))
    return grouped.assign(_order=order).sort_values(
        ["task", "model", "metric", "split", "_order", "method_label", "sparsity"]).drop(columns="_order")[columns].reset_index(drop=True)


# -- the terminal leaderboard: headline metrics, method variants chosen on validation ------------
VALIDATION = "validation"
SELECT_ON = ("validation", "all")
# Shown for every task by default, on their own splits: what pruning buys and what it leaves.
DEFAULT_EXTRAS: tuple[tuple[str, str], ...] = (("prefill_speedup", "speed"), ("uniqueness", "analysis"))


def headline_metric(store: Store, task: str) -> str:
    """The task's ``headline_metric``, as its jobs recorded it (``task_facts``; "" for jobs
    that did not record one)."""
    return str(task_facts(store, task).get("headline_metric") or "")


def headline_metrics(store: Store, task: str) -> tuple[str, ...]:
    """The metrics of ``task``'s headline family, in display order, as its jobs recorded them:
    its ``headline_metric`` first, then the others of its kind (e.g. ROUGE-1/2/L); () for jobs
    that recorded none."""
    facts = task_facts(store, task)
    declared = tuple(facts.get("headline_metrics") or ())
    headline = str(facts.get("headline_metric") or "")
    if headline and headline not in declared:
        declared = (headline, *declared)
    return declared


@dataclass
class Board:
    """What ``harness leaderboard`` prints: the aggregated rows shown (``chosen_on``: the
    metric a chosen variant won on, "" elsewhere), footnotes per table key (task, model,
    metric, split) and notes said once."""

    frame: pd.DataFrame
    footnotes: dict[tuple[str, str, str, str], str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _group_specs(store: Store, frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """group_hash -> the resolved spec of one of its jobs (a group's jobs differ only in the seed)."""
    if frame.empty:
        return {}
    firsts = frame.drop_duplicates("group_hash")
    ids = dict(zip(firsts["job_id"].astype(int), firsts["group_hash"]))
    specs: dict[str, dict[str, Any]] = {}
    with store.engine.connect() as connection:
        keys = list(ids)
        for start in range(0, len(keys), 500):
            for job_id, spec_json in connection.execute(
                    select(Job.id, Job.spec_json).where(Job.id.in_(keys[start:start + 500]))):
                specs[ids[int(job_id)]] = json.loads(spec_json)
    return specs


def _eval_split(spec: dict[str, Any]) -> str:
    value = ((spec.get("task") or {}).get("params") or {}).get("eval_split")
    return value if isinstance(value, str) and value else "test"


def variant_key(spec: dict[str, Any]) -> str:
    """What the variants of one method share: the spec without its seed and its method's
    parameters (same model, task, data, sparsity, method name and version, settings)."""
    method = {k: v for k, v in (spec.get("method") or {}).items() if k != "params"}
    payload = {k: v for k, v in spec.items() if k not in ("seed", "method")} | {"method": method}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def default_rows(frame: pd.DataFrame, eval_splits: dict[str, str],
                 families: dict[str, tuple[str, ...]]) -> pd.DataFrame:
    """Per task, its headline family (``families``) on its evaluation split (every metric of
    that split for a task without one), plus ``DEFAULT_EXTRAS``, in that order."""
    if frame.empty:
        return frame.assign(_rank=[])
    ranks = []
    for task, metric, split, group in zip(frame["task"], frame["metric"], frame["split"], frame["group_hash"]):
        family = families.get(task, ())
        rank = None
        if split == eval_splits.get(group, "test") and (metric in family or not family):
            rank = family.index(metric) if metric in family else len(family)
        elif (metric, split) in DEFAULT_EXTRAS:
            rank = len(family) + 1 + DEFAULT_EXTRAS.index((metric, split))
        ranks.append(rank)
    shown = frame.assign(_rank=ranks)
    return shown[shown["_rank"].notna()]


def choose_variants(shown: pd.DataFrame, full: pd.DataFrame, keys: dict[str, str],
                    families: dict[str, tuple[str, ...]]) -> Board:
    """Where one method has several variants in the same context (``variant_key``: e.g.
    gum(λ_u=0.1), gum(λ_u=1), gum(λ_u=10) at one sparsity), keep per table only the
    variant with the best mean of the same metric on split "validation" (ties: all of them;
    speed and analysis metrics, which have no validation counterpart: the variant chosen on
    the task's headline metric). Without validation numbers every variant stays, said once."""
    shown = shown.assign(chosen_on="")
    methods = full[~full["method"].isin(BASELINE_ORDER)]
    sets: dict[tuple[str, str, str], set[str]] = {}
    for task, model, group in zip(methods["task"], methods["model"], methods["group_hash"]):
        sets.setdefault((task, model, keys.get(group, group)), set()).add(group)
    sets = {key: groups for key, groups in sets.items() if len(groups) > 1}
    if not sets:
        return Board(shown)
    validation = full[full["split"] == VALIDATION]
    scores = {(t, m, metric, g): (mean, bool(higher)) for t, m, metric, g, mean, higher in zip(
        validation["task"], validation["model"], validation["metric"], validation["group_hash"], validation["mean"],
        validation["higher_is_better"])}
    decided: dict[tuple[str, str, str, str], set[str] | None] = {}

    def best(task: str, model: str, variant: str, metric: str) -> set[str] | None:
        """The variant(s) with the best validation mean of ``metric`` (ties: all of them)."""
        key = (task, model, variant, metric)
        if key not in decided:
            scored = {g: scores[(task, model, metric, g)] for g in sets[(task, model, variant)]
                      if (task, model, metric, g) in scores}
            if not scored:
                decided[key] = None
            else:
                higher = next(iter(scored.values()))[1]
                target = (max if higher else min)(mean for mean, _ in scored.values())
                decided[key] = {g for g, (mean, _) in scored.items() if mean == target}
        return decided[key]

    keep, chosen_on, unchosen = [], [], set()
    for task, model, metric, method, group in zip(shown["task"], shown["model"], shown["metric"], shown["method"],
                                                  shown["group_hash"]):
        variant = keys.get(group, group)
        if method in BASELINE_ORDER or (task, model, variant) not in sets:
            keep.append(True)
            chosen_on.append("")
            continue
        basis, pick = metric, best(task, model, variant, metric)
        has_own = any((task, model, metric, g) in scores for g in sets[(task, model, variant)])
        if pick is None and not has_own:  # speed, analysis: the variant the headline metric chose
            headline = (families.get(task) or ("",))[0]
            if headline:
                basis, pick = headline, best(task, model, variant, headline)
        if pick is None:
            unchosen.add((task, model, variant))
            keep.append(True)
            chosen_on.append("")
        else:
            keep.append(group in pick)
            chosen_on.append(f"{basis} [{VALIDATION}]")
    shown = shown.assign(chosen_on=chosen_on)[keep]
    footnotes = {}
    for key, table in shown[shown["chosen_on"] != ""].groupby(["task", "model", "metric", "split"], sort=False):
        bases = ", ".join(dict.fromkeys(table["chosen_on"]))
        footnotes[key] = (f"* variant chosen on validation: of a method's variants (other parameters), the one with "
                          f"the best mean {bases} (ties: all); --select-on all shows every variant")
    notes = []
    if unchosen:
        where = "this database has no validation metrics" if validation.empty else \
            f"{len(unchosen)} set(s) of method variants have no validation metrics to choose on"
        notes.append(f"note: {where}: every variant is shown (validation needs eval.validation_examples > 0 "
                     f"and a task with a validation split)")
    return Board(shown, footnotes, notes)


def board(store: Store, task: str | None = None, model: str | None = None, metric: str | None = None,
          select_on: str = "validation") -> Board:
    """The terminal leaderboard. ``metric``: None = per task its headline metrics on its
    evaluation split plus ``DEFAULT_EXTRAS``; "all" = every metric on every split; a name =
    that metric (on each split it has). ``select_on``: "validation" keeps, of several
    variants of one method, the one that is best on validation (``choose_variants``);
    "all" shows every variant."""
    if select_on not in SELECT_ON:
        raise ValueError(f"select_on: expected one of {', '.join(SELECT_ON)}, got {select_on!r}")
    frame = done_metrics(store, task, model)
    full = aggregate(frame)
    if full.empty:
        return Board(full.assign(chosen_on=""))
    specs = _group_specs(store, frame)
    families = {name: headline_metrics(store, name) for name in full["task"].unique()}
    if metric is None:
        shown = default_rows(full, {g: _eval_split(s) for g, s in specs.items()}, families)
    elif metric == "all":
        shown = full.assign(_rank=0)
    else:
        shown = full[full["metric"] == metric].assign(_rank=0)
    if select_on == "validation":
        result = choose_variants(shown, full, {g: variant_key(s) for g, s in specs.items()}, families)
    else:
        result = Board(shown.assign(chosen_on=""))
    order = result.frame["method"].map(BASELINE_ORDER).fillna(len(BASELINE_ORDER))
    result.frame = result.frame.assign(_order=order).sort_values(
        ["task", "model", "_rank", "metric", "split", "_order", "method_label", "sparsity"], kind="stable").drop(
        columns=["_order", "_rank"]).reset_index(drop=True)
    return result


def status_counts(store: Store) -> pd.DataFrame:
    """Jobs per task and status (latest attempt per spec)."""
    latest = latest_jobs(store)
    if latest.empty:
        return pd.DataFrame(columns=["task", "status", "jobs"])
    return latest.groupby(["task", "status"]).size().rename("jobs").reset_index()


def pivot(frame: pd.DataFrame):
    """Per (task, model, metric, split, higher_is_better): a table of method variants x
    sparsities with cells 'mean ± std (n)'."""
    for key, group in frame.groupby(["task", "model", "metric", "split", "higher_is_better"], sort=False):
        cells = group.assign(
            cell=[f"{m:.4g} ± {s:.2g} ({n})" for m, s, n in zip(group["mean"], group["std"], group["n_seeds"])]
        )
        order = list(dict.fromkeys(cells["method_label"]))
        table = cells.pivot(index="method_label", columns="sparsity", values="cell").reindex(order).fillna("")
        table.columns = [f"s={c:g}" for c in table.columns]
        table.index.name = "method"
        yield key, table


# -- the dashboard's queries --------------------------------------------------------------
def has_results(store: Store) -> bool:
    """Whether the database exists and holds the harness's tables (an empty file does not)."""
    return store.engine is not None and "jobs" in inspect(store.engine).get_table_names()


def _done_job_ids(store: Store, task: str | None, model: str | None, sparsity: float | None = None) -> pd.DataFrame:
    latest = latest_jobs(store, task, model)
    if latest.empty:
        return latest
    done = latest[latest["status"] == "done"]
    return done if sparsity is None else done[done["sparsity"] == sparsity]


def layer_stats(store: Store, task: str | None = None, model: str | None = None,
                name: str | None = None) -> pd.DataFrame:
    """Per-layer numbers (kept_neurons, uniqueness, ...) of each spec's latest done attempt."""
    done = _done_job_ids(store, task, model)
    columns = _JOB_COLUMNS + ["layer", "stat", "value"]
    if done.empty:
        return pd.DataFrame(columns=columns)
    query = select(LayerStat.job_id, LayerStat.layer, LayerStat.name.label("stat"), LayerStat.value).where(
        LayerStat.job_id.in_(done["job_id"].tolist()))
    if name:
        query = query.where(LayerStat.name == name)
    with store.engine.connect() as connection:
        stats = pd.read_sql(query, connection)
    return done[_JOB_COLUMNS].merge(stats, on="job_id")


def neuron_stats(store: Store, task: str | None = None, model: str | None = None,
                 sparsity: float | None = None) -> pd.DataFrame:
    """Per-neuron sensitivity and max |cos| of each spec's latest done attempt (optionally
    one sparsity only: a model has as many rows as neurons)."""
    done = _done_job_ids(store, task, model, sparsity)
    columns = _JOB_COLUMNS + ["layer", "neuron", "sensitivity", "max_abs_cos"]
    if done.empty:
        return pd.DataFrame(columns=columns)
    query = select(NeuronStat.job_id, NeuronStat.layer, NeuronStat.neuron, NeuronStat.sensitivity,
                   NeuronStat.max_abs_cos).where(NeuronStat.job_id.in_(done["job_id"].tolist()))
    with store.engine.connect() as connection:
        stats = pd.read_sql(query, connection)
    return done[_JOB_COLUMNS].merge(stats, on="job_id")


def pairing_keys(store: Store, job_ids: list[int]) -> pd.DataFrame:
    """job_id -> pair_key: a hash of the job's spec without its method. Two jobs with the
    same key differ only in the method (same model, task, data, sparsity, seed, train and
    eval settings), so their metrics can be compared pairwise."""
    if store.engine is None or not job_ids:
        return pd.DataFrame(columns=["job_id", "pair_key"])
    with store.engine.connect() as connection:
        rows = connection.execute(select(Job.id, Job.spec_json).where(Job.id.in_([int(i) for i in job_ids]))).all()
    keys = []
    for job_id, spec_json in rows:
        spec = json.loads(spec_json)
        spec.pop("method", None)
        keys.append((job_id, hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]))
    return pd.DataFrame(keys, columns=["job_id", "pair_key"])


def job_record(store: Store, job_id: int) -> dict[str, Any] | None:
    """One job attempt: labels, status, times, error and traceback, spec, protocol, versions."""
    if store.engine is None:
        return None
    with store.session() as session:
        job = session.get(Job, int(job_id))
        if job is None:
            return None
        record = {column: getattr(job, column) for column in
                  ("id", "spec_hash", "attempt", "status", "model", "task", "method", "method_label", "sparsity",
                   "seed", "created_at", "started_at", "finished_at", "error", "traceback", "harness_version")}
        record["spec"] = json.loads(job.spec_json)
        record["protocol"] = json.loads(job.protocol_json) if job.protocol_json else {}
        record["versions"] = json.loads(job.versions_json) if job.versions_json else {}
    return record


_JOB_TABLES = {
    "metrics": (MetricRow, ["name", "split", "value", "higher_is_better"]),
    "layer_stats": (LayerStat, ["layer", "name", "value"]),
    "curves": (CurvePoint, ["step", "name", "value"]),
    "samples": (Sample, ["index", "task", "prompt", "reference", "prediction"]),
}


def job_rows(store: Store, job_id: int, table: str) -> pd.DataFrame:
    """One job's rows of ``metrics``, ``layer_stats``, ``curves`` or ``samples``."""
    model, columns = _JOB_TABLES[table]
    if store.engine is None:
        return pd.DataFrame(columns=columns)
    query = select(*(getattr(model, c) for c in columns)).where(model.job_id == int(job_id)).order_by(model.id)
    with store.engine.connect() as connection:
        return pd.read_sql(query, connection)


def task_facts(store: Store, task: str) -> dict[str, Any]:
    """What a task's jobs recorded about it (protocol ``task_facts``: headline metric,
    generated data, description), from its newest done job; {} when none recorded it."""
    if store.engine is None:
        return {}
    query = (select(Job.protocol_json).where(Job.task == task, Job.status == "done", Job.protocol_json.is_not(None))
             .order_by(Job.id.desc()).limit(20))
    with store.engine.connect() as connection:
        for (protocol_json,) in connection.execute(query):
            facts = json.loads(protocol_json).get("task_facts")
            if facts:
                return facts
    return {}
