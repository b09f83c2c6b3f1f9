"""Read-only queries returning DataFrames: what the terminal leaderboard and the
dashboard show. Filters reach SQL only as bound parameters."""

from __future__ import annotations

import hashlib
import json
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
    """Metric rows of each spec's latest done attempt, with the job's labels."""
    latest = latest_jobs(store, task, model)
    columns = _JOB_COLUMNS + ["metric", "split", "value", "higher_is_better"]
    if latest.empty:
        return pd.DataFrame(columns=columns)
    done = latest[latest["status"] == "done"]
    if done.empty:
        return pd.DataFrame(columns=columns)
    query = select(MetricRow.job_id, MetricRow.name.label("metric"), MetricRow.split, MetricRow.value,
                   MetricRow.higher_is_better).where(MetricRow.job_id.in_(done["job_id"].tolist()))
    with store.engine.connect() as connection:
        metrics = pd.read_sql(query, connection)
    return done[_JOB_COLUMNS].merge(metrics, on="job_id")


def leaderboard(store: Store, task: str | None = None, model: str | None = None,
                metric: str | None = None) -> pd.DataFrame:
    """Mean, std and seed count per (task, model, metric, method variant, sparsity).

    Jobs are grouped by every spec field except the seed (``group_hash``), so a method
    with other parameters or other train settings is another row; labels that would
    collide get the group hash appended.
    """
    frame = done_metrics(store, task, model)
    if metric:
        frame = frame[frame["metric"] == metric]
    columns = ["task", "model", "metric", "split", "higher_is_better", "method", "method_label", "sparsity",
               "mean", "std", "n_seeds", "group_hash"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    keys = ["task", "model", "metric", "split", "higher_is_better", "method", "method_label", "sparsity", "group_hash"]
    grouped = frame.groupby(keys, dropna=False)["value"].agg(mean="mean", std="std", n_seeds="count").reset_index()
    grouped["std"] = grouped["std"].fillna(0.0)
    collide = grouped.duplicated(["task", "model", "metric", "split", "method_label", "sparsity"], keep=False)
    grouped.loc[collide, "method_label"] = grouped.loc[collide, "method_label"] + " [" + grouped.loc[collide, "group_hash"].str[:6] + "]"
    dense_first = grouped["method"] != "dense"
    return grouped.assign(_order=dense_first).sort_values(
        ["task", "model", "metric", "_order", "method_label", "sparsity"]).drop(columns="_order")[columns].reset_index(drop=True)


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
