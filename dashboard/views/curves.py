"""Page 2: a metric against sparsity per method, and against measured speed-up."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data
from dashboard.data import Selection
from dashboard.stats import pareto_front

SPEED_SUFFIX = "speedup"  # e.g. prefill_speedup, decode_speedup: dense time / pruned time


def render(selection: Selection) -> None:
    st.header("Curves")
    data.task_note(selection.task)
    picked = data.pick_metric(selection, key="curves_metric")
    if picked is None:
        return
    metrics, (metric, split, higher) = picked
    frame = data.leaderboard(selection.url, selection.task, selection.model, metric, split)
    dense = frame.loc[frame["method"] == "dense", "mean"]
    st.subheader(f"{metric} vs sparsity")
    st.caption(f"{data.direction(higher)}; points = mean over seeds, bars = ±1 std, dashed line = dense baseline.")
    chart = charts.metric_vs_sparsity(frame[frame["method"] != "dense"], f"{metric} [{split}]",
                                      float(dense.iloc[0]) if not dense.empty else None)
    st.altair_chart(chart, width="stretch")

    st.subheader(f"{metric} vs measured speed-up")
    speed = sorted({m for m in metrics["metric"] if m.endswith(SPEED_SUFFIX)})
    if not speed:
        st.info("These results hold no speed-up metrics (such as `prefill_speedup`); they appear once jobs "
                "measure the shrunk model's speed.")
        return
    speed_metric = st.selectbox("Speed-up", speed, key="curves_speed")
    speed_split = metrics.loc[metrics["metric"] == speed_metric, "split"].iloc[0]
    speeds = data.leaderboard(selection.url, selection.task, selection.model, speed_metric, speed_split)
    keys = ["method_label", "sparsity", "group_hash"]
    points = frame[keys + ["mean"]].merge(speeds[keys + ["mean"]].rename(columns={"mean": "speedup"}), on=keys)
    if points.empty:
        st.info(f"No job has both {metric} and {speed_metric}.")
        return
    points["front"] = pareto_front(points, "speedup", "mean", higher)
    st.caption("Each point: one method at one sparsity (means over seeds). Large points joined by the dashed "
               "line form the Pareto front: no other point is both faster and better.")
    st.altair_chart(charts.pareto(points, "speedup", "mean", speed_metric, metric), width="stretch")
    st.dataframe(points[points["front"]].sort_values("speedup")[["method_label", "sparsity", "speedup", "mean"]],
                 hide_index=True)
