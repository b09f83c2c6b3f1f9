"""Everything the pages read, through ``results.queries`` only, cached for a few seconds.

A matrix may be writing the database while the dashboard reads it (SQLite in WAL mode:
readers never block the writer), so caches are short-lived and a refresh re-reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from results import claims as claims_module
from results import compare, queries
from results.store import Store, database_url

TTL_SECONDS = 5
RESULT_SPLITS_LAST = ("analysis", "model", "speed", "train")  # metric splits that are not the task's own results


@dataclass(frozen=True)
class Selection:
    """What the sidebar chose; every page renders for one task and one model."""

    url: str
    task: str
    model: str


def configured_url() -> str:
    """``harness dashboard --db URL`` passes the URL in HARNESS_DB; else harness.db here."""
    return database_url(os.environ.get("HARNESS_DB"))


@st.cache_resource(show_spinner=False)
def _open(url: str) -> Store:
    return Store(url, create=False)


def store(url: str) -> Store:
    opened = _open(url)
    if not queries.has_results(opened):
        _open.clear()  # `harness run` may create it any moment: look again on the next rerun
    return opened


def has_results(url: str) -> bool:
    return queries.has_results(store(url))


def refresh() -> None:
    st.cache_data.clear()


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def latest_jobs(url: str, task: str | None = None, model: str | None = None) -> pd.DataFrame:
    return queries.latest_jobs(store(url), task, model)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def done_metrics(url: str, task: str, model: str) -> pd.DataFrame:
    return queries.done_metrics(store(url), task, model)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def leaderboard(url: str, task: str, model: str, metric: str, split: str) -> pd.DataFrame:
    frame = queries.leaderboard(store(url), task, model, metric)
    return frame[frame["split"] == split].reset_index(drop=True)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def layer_stats(url: str, task: str, model: str, name: str) -> pd.DataFrame:
    return queries.layer_stats(store(url), task, model, name)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def neuron_stats(url: str, task: str, model: str, sparsity: float) -> pd.DataFrame:
    return queries.neuron_stats(store(url), task, model, sparsity)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def comparisons(url: str, task: str, model: str, metric: str, split: str, baseline: str) -> pd.DataFrame:
    """One family of paired comparisons: exactly what ``harness compare`` prints."""
    return compare.comparisons(store(url), task, model, metric, split, baseline)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def claims(url: str, task: str, model: str, margin: float) -> pd.DataFrame:
    """The claims table of one model and task: exactly what ``harness claims`` prints."""
    return claims_module.claims(store(url), task, model, margin)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def headline(url: str, task: str, model: str) -> tuple[str, str] | None:
    """The (metric, split) verdicts use by default: the task's headline metric on its
    evaluation split (or its first task metric)."""
    metrics = done_metrics(url, task, model)
    if metrics.empty:
        return None
    specs = compare.job_specs(store(url), metrics["job_id"].drop_duplicates().tolist())
    try:
        metric, split, _ = compare.resolve_metric(metrics, task, specs=specs,
                                                  headline=compare.headline_metric(store(url), task))
    except compare.CompareError:
        return None
    return metric, split


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def job_record(url: str, job_id: int) -> dict[str, Any] | None:
    return queries.job_record(store(url), job_id)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def job_rows(url: str, job_id: int, table: str) -> pd.DataFrame:
    return queries.job_rows(store(url), job_id, table)


# -- helpers the pages share -----------------------------------------------------------------
def metric_choices(metrics: pd.DataFrame, splits: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
    """(metric, split) pairs; the task's own results first, bookkeeping splits last."""
    pairs = metrics[["metric", "split"]].drop_duplicates()
    if splits is not None:
        pairs = pairs[pairs["split"].isin(splits)]
    ranked = sorted(pairs.itertuples(index=False), key=lambda r: (r.split in RESULT_SPLITS_LAST, r.split, r.metric))
    return [(r.metric, r.split) for r in ranked]


def choose_metric(metrics: pd.DataFrame, key: str, splits: tuple[str, ...] | None = None,
                  label: str = "Metric", default: tuple[str, str] | None = None) -> tuple[str, str, bool] | None:
    """A metric select box (``default`` preselected when offered); returns (metric,
    split, higher_is_better)."""
    choices = metric_choices(metrics, splits)
    if not choices:
        return None
    index = choices.index(default) if default in choices else 0
    metric, split = st.selectbox(label, choices, index=index, key=key, format_func=lambda c: f"{c[0]} [{c[1]}]")
    higher = bool(metrics.loc[(metrics["metric"] == metric) & (metrics["split"] == split), "higher_is_better"].iloc[0])
    return metric, split, higher


def pick_metric(selection: Selection, key: str, empty: str = "No job of this task and model has finished yet.",
                default: tuple[str, str] | None = None) -> tuple[pd.DataFrame, tuple[str, str, bool]] | None:
    """The selection's finished metrics and the user's choice among them (a select box,
    ``default`` preselected); None, with ``empty`` shown, while nothing has finished."""
    metrics = done_metrics(selection.url, selection.task, selection.model)
    choice = choose_metric(metrics, key=key, default=default)
    if choice is None:
        st.info(empty)
        return None
    return metrics, choice


def direction(higher_is_better: bool) -> str:
    return "higher is better" if higher_is_better else "lower is better"


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def task_facts(url: str, task: str) -> dict[str, Any]:
    return queries.task_facts(store(url), task)


def task_note(url: str, task: str) -> None:
    """The task's description as its jobs recorded it; generated data is labelled as such on every page."""
    facts = task_facts(url, task)
    description = facts.get("description", "")
    if facts.get("generated_data"):
        st.warning(f"**Generated data** — {description} "
                   "These numbers come from a data set this project generated, not from a published benchmark.",
                   icon="⚠️")
    elif description:
        st.caption(f"Task `{task}`: {description}")


def empty_state(url: str, message: str = "No results yet") -> None:
    st.info(f"{message} in `{url}`.")
    st.markdown(
        "Produce some with a matrix, then reload this page:\n\n"
        "```bash\n"
        f"harness run --matrix examples/quickstart.yaml --db {url}\n"
        f"harness dashboard --db {url}\n"
        "```\n"
        "`harness run --dry-run --matrix FILE` lists the jobs a matrix would run."
    )
