"""Page 4: is a method better than random? Paired differences over seeds, t intervals."""

from __future__ import annotations

import streamlit as st

from dashboard import data
from dashboard.data import Selection
from dashboard.stats import CONFIDENCE, paired_differences

BASELINE = "random"


def render(selection: Selection) -> None:
    st.header("Is it better than random?")
    data.task_note(selection.task)
    picked = data.pick_metric(selection, key="significance_metric")
    if picked is None:
        return
    metrics, (metric, split, higher) = picked
    frame = data.paired_metric(selection.url, selection.task, selection.model, metric, split)
    labels = sorted(set(frame.loc[frame["sparsity"] > 0, "method_label"]))
    if BASELINE not in set(frame["method"]):
        st.info("No `random` jobs to compare with: add `random` to the matrix's methods (same sparsities and seeds).")
        return
    random_labels = sorted(set(frame.loc[frame["method"] == BASELINE, "method_label"]))
    baseline = st.selectbox("Baseline", random_labels + [l for l in labels if l not in random_labels], key="significance_baseline")
    result = paired_differences(frame, baseline, higher)
    if result.empty:
        st.info(f"No job pairs with `{baseline}`: pairs need the same model, task, sparsity, seed and settings.")
        return
    st.caption(
        f"Difference = method − {baseline} in **{metric}** [{split}] ({data.direction(higher)}), paired by seed: "
        f"both jobs share model, task, sparsity, seed and all settings. Interval: two-sided {CONFIDENCE:.0%} "
        "Student-t over the paired differences. Seeds are few; an interval that includes 0 means the data cannot "
        "tell the method from the baseline.")
    for row in result.itertuples(index=False):
        interval = "" if row.n_pairs < 2 else f", {CONFIDENCE:.0%} CI [{row.ci_low:+.4g}, {row.ci_high:+.4g}]"
        st.markdown(f"- **{row.method_label}** at sparsity {row.sparsity:g}: {row.verdict} "
                    f"(mean difference {row.mean_diff:+.4g}{interval})")
    st.dataframe(result, hide_index=True, width="stretch")
