"""Page 3: uniqueness and sensitivity of the kept neurons, per-layer widths, max |cos|."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data
from dashboard.data import Selection

ANALYSIS_METRICS = (("uniqueness", "uniqueness (1 − redundant / surviving)"),
                    ("sensitivity_total", "sensitivity (sum over surviving neurons)"))


def render(selection: Selection) -> None:
    st.header("Redundancy")
    data.task_note(selection.url, selection.task)
    url, task, model = selection.url, selection.task, selection.model
    metrics = data.done_metrics(url, task, model)
    analysed = metrics[metrics["split"] == "analysis"]
    if analysed.empty:
        st.info("No redundancy analysis in these results: jobs ran with `eval.analysis_examples: 0` or have not "
                "finished. The analysis runs by default on every job.")
    else:
        st.caption("Computed on each final model over the task's evaluation split; dashed line = dense baseline. "
                   "A neuron is redundant when a later neuron of its layer has cosine ≥ the threshold.")
        columns = st.columns(len(ANALYSIS_METRICS))
        for column, (name, title) in zip(columns, ANALYSIS_METRICS):
            frame = data.leaderboard(url, task, model, name, "analysis")
            if frame.empty:
                continue
            dense = frame.loc[frame["method"] == "dense", "mean"]
            column.altair_chart(charts.metric_vs_sparsity(frame[frame["method"] != "dense"], title,
                                                          float(dense.iloc[0]) if not dense.empty else None),
                                width="stretch")

    st.subheader("Surviving neurons per layer")
    kept = data.layer_stats(url, task, model, "kept_neurons")
    original = data.layer_stats(url, task, model, "original_neurons")
    if kept.empty:
        st.info("No finished job yet.")
        return
    keys = ["job_id", "layer"]
    widths = kept.merge(original[keys + ["value"]].rename(columns={"value": "original"}), on=keys)
    widths = widths.groupby(["method_label", "sparsity", "layer"], as_index=False)[["value", "original"]].mean()
    widths = widths.sort_values(["sparsity", "method_label"])
    widths = widths.assign(row=widths["method_label"] + " · s=" + widths["sparsity"].map("{:g}".format),
                           kept=widths["value"], fraction=widths["value"] / widths["original"])
    st.caption("Mean over seeds. Local methods keep the same width in every layer; global selection (GUM) does not.")
    st.altair_chart(charts.widths_heatmap(widths[["row", "layer", "kept", "fraction"]]), width="stretch")

    st.subheader("Each neuron's max |cos| to the other survivors")
    sparsities = sorted(kept["sparsity"].unique())
    default = next((i for i, s in enumerate(sparsities) if s > 0), 0)
    sparsity = st.selectbox("Sparsity", sparsities, index=default, key="redundancy_sparsity", format_func="{:g}".format)
    neurons = data.neuron_stats(url, task, model, float(sparsity)).dropna(subset=["max_abs_cos"])
    if neurons.empty:
        st.info("No per-neuron analysis at this sparsity.")
        return
    dense = data.neuron_stats(url, task, model, 0.0).dropna(subset=["max_abs_cos"]) if sparsity > 0 else None
    shown = neurons if dense is None or dense.empty else pd.concat([neurons, dense], ignore_index=True)
    st.caption("Pooled over seeds and layers; dense = the unpruned fine-tuned model, for reference.")
    st.altair_chart(charts.histogram(shown[["method_label", "max_abs_cos"]], "max_abs_cos", "max |cos|"))
    summary = shown.groupby("method_label").agg(neurons=("neuron", "size"), mean_max_abs_cos=("max_abs_cos", "mean"),
                                                mean_sensitivity=("sensitivity", "mean"))
    st.dataframe(summary, width="stretch")
