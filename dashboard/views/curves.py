"""Page 2: a metric against sparsity per method, and against measured speed-up."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import charts, data
from dashboard.data import Selection
from dashboard.stats import pareto_front

SPEED_SUFFIX = "speedup"  # e.g. prefill_speedup, decode_speedup: dense time / pruned time


def render(selection: Selection) -> None:
    st.header("Curves")
    data.task_note(selection.url, selection.task)
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
    speeds = speeds[keys + ["mean", "std"]].rename(columns={"mean": "speedup", "std": "speedup_std"})
    points = frame[keys + ["mean"]].merge(speeds, on=keys)
    if points.empty:
        st.info(f"No job has both {metric} and {speed_metric}.")
        return
    points = with_spread(points, metrics, speed_metric, speed_split)
    points["front"] = pareto_front(points, "speedup", "mean", higher)
    st.caption("Each point: one method at one sparsity (means over seeds). Large points joined by the dashed "
               "line form the Pareto front: no other point is both faster and better. Horizontal bars: the "
               "speed-up's stored spread, the interquartile range of its per-repeat ratios (mean over seeds), "
               "centred on the point; the tooltip also gives the std over seeds.")
    chart = charts.pareto(points, "speedup", "mean", speed_metric, metric)
    st.altair_chart(alt.layer(chart, spread_bars(points, speed_metric)), width="stretch")
    st.dataframe(points[points["front"]].sort_values("speedup")[
        ["method_label", "sparsity", "speedup", "speedup_iqr", "speedup_std", "mean"]], hide_index=True)


def with_spread(points: pd.DataFrame, metrics: pd.DataFrame, speed_metric: str, split: str) -> pd.DataFrame:
    """``points`` plus ``speedup_iqr`` (the stored spread of the speed-up, mean over the
    group's seeds; NaN where none was stored) and the bar ends ``speedup_low``/``_high``."""
    rows = metrics[(metrics["metric"] == speed_metric) & (metrics["split"] == split)]
    if "spread" in rows:
        spread = rows.groupby(["group_hash", "sparsity"])["spread"].mean().rename("speedup_iqr").reset_index()
        points = points.merge(spread, on=["group_hash", "sparsity"], how="left")
    else:  # results read without the column
        points = points.assign(speedup_iqr=float("nan"))
    half = points["speedup_iqr"].astype(float) / 2
    return points.assign(speedup_low=points["speedup"] - half, speedup_high=points["speedup"] + half)


def spread_bars(points: pd.DataFrame, speed_metric: str) -> alt.Chart:
    """Horizontal error bars: speed-up ± IQR/2 per point (none where no spread was stored)."""
    shown = points.dropna(subset=["speedup_iqr"])
    return alt.Chart(shown).mark_errorbar(ticks=True).encode(
        x=alt.X("speedup_low:Q", title=speed_metric, scale=alt.Scale(zero=False)), x2="speedup_high:Q",
        y=alt.Y("mean:Q"), color=alt.Color("method_label:N", title="method"),
        tooltip=["method_label", "sparsity", alt.Tooltip("speedup:Q", format=".3g", title=speed_metric),
                 alt.Tooltip("speedup_iqr:Q", format=".3g", title="IQR over repeats (mean over seeds)"),
                 alt.Tooltip("speedup_std:Q", format=".3g", title="std over seeds")])
