"""Page 1: methods x sparsities, mean ± std over seeds, best per column marked."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import data
from dashboard.data import Selection
from dashboard.stats import best_rows
from results.queries import VALIDATION, pivot

STAR = " ★"


def leaderboard_table(frame: pd.DataFrame, higher_is_better: bool, stars_from: pd.DataFrame | None = None) -> pd.DataFrame:
    """Cells 'mean ± std (seeds)' (the terminal leaderboard's format), the best method of
    each sparsity column marked with a star: best in ``stars_from`` (the same metric on
    the validation split, where choices are made) when given, else in ``frame``."""
    _, table = next(pivot(frame))
    source = frame if stars_from is None or stars_from.empty else stars_from
    for sparsity, labels in best_rows(source, higher_is_better).items():
        column = f"s={sparsity:g}"
        for label in labels:
            if column in table.columns and label in table.index and table.loc[label, column]:
                table.loc[label, column] += STAR
    return table


def star_source(selection: Selection, metric: str, split: str) -> pd.DataFrame | None:
    """The rows the ★ reads: the chosen metric on split validation when it has validation
    rows (choosing the best on the split being reported would be choosing on the test set),
    else None (the shown split itself)."""
    if split == VALIDATION:
        return None
    validation = data.leaderboard(selection.url, selection.task, selection.model, metric, VALIDATION)
    return None if validation.empty else validation


def status_table(jobs: pd.DataFrame) -> pd.DataFrame:
    """Jobs per method and sparsity by status of their latest attempt, e.g. '3 done, 1 failed'."""
    counts = jobs.groupby(["method_label", "sparsity", "status"]).size().rename("n").reset_index()
    counts["cell"] = counts["n"].astype(str) + " " + counts["status"]
    cells = counts.groupby(["method_label", "sparsity"])["cell"].agg(", ".join).reset_index()
    table = cells.pivot(index="method_label", columns="sparsity", values="cell").fillna("")
    table.columns = [f"s={c:g}" for c in table.columns]
    table.index.name = "method"
    return table


def render(selection: Selection) -> None:
    st.header("Leaderboard")
    data.task_note(selection.url, selection.task)
    jobs = data.latest_jobs(selection.url, selection.task, selection.model)
    statuses = jobs["status"].value_counts()
    columns = st.columns(4)
    for column, status in zip(columns, ("done", "failed", "running", "pending")):
        column.metric(f"jobs {status}", int(statuses.get(status, 0)))

    results_table(selection)

    st.subheader("Jobs")
    st.dataframe(status_table(jobs), width="stretch")
    failed = jobs[jobs["status"].isin(["failed", "interrupted"])]
    if not failed.empty:
        st.error(f"{len(failed)} job(s) failed or were interrupted; open one on the **Job** page for its traceback.")
        shown = failed.assign(job=failed["spec_hash"].str[:12])[["job", "method_label", "sparsity", "seed", "status", "error"]]
        st.dataframe(shown, hide_index=True, width="stretch")


def results_table(selection: Selection) -> None:
    """The chosen metric's methods x sparsities table, the dense baseline and the CSV."""
    picked = data.pick_metric(selection, key="leaderboard_metric", empty="No job of this task and model has finished yet; the table fills in as jobs finish.")
    if picked is None:
        return
    metrics, (metric, split, higher) = picked
    frame = data.leaderboard(selection.url, selection.task, selection.model, metric, split)
    if frame.empty:  # the cached metric names outlived a database that changed under them
        st.info("No finished job has this metric any more; press Refresh.")
        return
    stars = star_source(selection, metric, split)
    if stars is not None:
        star_note = (f"★ best mean per sparsity column **on split `{VALIDATION}`** (the same metric; choices are "
                     f"made on validation, never on the `{split}` numbers shown)")
    elif split == VALIDATION:
        star_note = f"★ best mean per sparsity column on split `{VALIDATION}`"
    else:
        star_note = (f"★ best mean per sparsity column on the split shown (`{split}`: this metric has no "
                     f"validation rows)")
    st.caption(f"**{metric}** on split `{split}` ({data.direction(higher)}): mean ± std over seeds "
               f"(number of seeds); {star_note}. Dense = the fine-tuned, unpruned baseline.")
    st.dataframe(leaderboard_table(frame, higher, stars), width="stretch")
    dense = frame[frame["method"] == "dense"]
    if not dense.empty:
        row = dense.iloc[0]
        st.metric("dense baseline", f"{row['mean']:.4g} ± {row['std']:.2g}", help=f"{int(row['n_seeds'])} seeds")
    st.download_button("Download CSV", frame.to_csv(index=False).encode(), mime="text/csv",
                       file_name=f"leaderboard-{selection.task}-{metric}.csv".replace("/", "_"))
