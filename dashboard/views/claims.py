"""Page: which of the paper's claims this database supports, per sparsity
(``results.claims.claims``, the table ``harness claims`` prints)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import data
from dashboard.data import Selection
from results.claims import CLAIMS, DEFAULT_MARGIN, MIN_PAIRS, display_table
from results.compare import CompareError

ICONS = {"holds": "✅ holds", "does not hold": "❌ does not hold", "cannot tell": "❔ cannot tell"}


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Claims x sparsities; a cell lists the status of each group pairing at that sparsity."""
    frame = frame.assign(cell=frame["status"].map(ICONS).fillna(frame["status"]),
                         column=[f"s={s:g}" for s in frame["sparsity"]])
    table = frame.groupby(["claim", "column"], sort=False)["cell"].agg(" / ".join).unstack("column").fillna("")
    table.index = [f"({c}) {CLAIMS[c]}" for c in table.index]
    return table


def render(selection: Selection) -> None:
    st.header("Claims")
    data.task_note(selection.url, selection.task)
    margin = st.number_input("Equivalence margin for (a), as a fraction of the dense mean", min_value=0.0,
                             max_value=1.0, value=DEFAULT_MARGIN, step=0.01, format="%.3f", key="claims_margin")
    try:
        frame = data.claims(selection.url, selection.task, selection.model, float(margin))
    except CompareError as error:  # e.g. finished jobs without a task metric on the evaluation split
        st.info(f"No claims to evaluate: {error}.")
        return
    if frame.empty:
        st.info("No job of this task and model has finished yet.")
        return
    metric, split, m = frame["metric"].iloc[0], frame["split"].iloc[0], int(frame["m"].iloc[0])
    st.caption(
        f"Each claim on **{metric}** [{split}] (the task's headline metric on its evaluation split; (c) on "
        f"uniqueness [analysis]), per sparsity and group of settings — never pooled across groups. Paired by seed "
        f"within a group, except (e), which pairs the distilled and the non-distilled group by (method, sparsity, "
        f"seed). Holm over the page's m = {m} tests; fewer than {MIN_PAIRS} paired seeds is always *cannot tell*. "
        f"(a) is an equivalence test (TOST) within ±{margin:g} × |dense mean|. Same table as `harness claims`.")
    st.dataframe(summary(frame), width="stretch")
    st.dataframe(display_table(frame), hide_index=True, width="stretch")
    st.download_button("Download CSV", frame.to_csv(index=False).encode(), mime="text/csv",
                       file_name=f"claims-{selection.task}.csv".replace("/", "_"), key="claims_csv")
