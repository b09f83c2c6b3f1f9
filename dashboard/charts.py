"""Altair charts the pages draw. Each takes a tidy DataFrame and returns a chart."""

from __future__ import annotations

import altair as alt
import pandas as pd


def metric_vs_sparsity(frame: pd.DataFrame, title: str, dense: float | None = None) -> alt.LayerChart:
    """Mean over seeds per method (one line each) with ±1 std error bars; the dense
    baseline as a dashed rule. ``frame``: method_label, sparsity, mean, std, n_seeds."""
    data = frame.assign(low=frame["mean"] - frame["std"], high=frame["mean"] + frame["std"])
    base = alt.Chart(data).encode(
        x=alt.X("sparsity:Q", title="FFN sparsity (fraction of neurons removed)"),
        color=alt.Color("method_label:N", title="method"),
        tooltip=["method_label", "sparsity", alt.Tooltip("mean:Q", format=".4g"), alt.Tooltip("std:Q", format=".3g"),
                 "n_seeds"],
    )
    line = base.mark_line(point=True).encode(y=alt.Y("mean:Q", title=title, scale=alt.Scale(zero=False)))
    bars = base.mark_errorbar(ticks=True).encode(y=alt.Y("low:Q", title=title), y2="high:Q")
    layers = [line, bars]
    if dense is not None:
        rule = alt.Chart(pd.DataFrame({"dense": [dense]})).mark_rule(strokeDash=[6, 4], color="gray").encode(
            y="dense:Q", tooltip=[alt.Tooltip("dense:Q", title="dense baseline", format=".4g")])
        layers.append(rule)
    return alt.layer(*layers).properties(height=360)


def pareto(frame: pd.DataFrame, x: str, y: str, x_title: str, y_title: str) -> alt.LayerChart:
    """Scatter of ``y`` against a speed-up ``x``; points on the Pareto front (column
    ``front``) joined by a line and drawn larger."""
    points = alt.Chart(frame).mark_point(filled=True).encode(
        x=alt.X(f"{x}:Q", title=x_title, scale=alt.Scale(zero=False)),
        y=alt.Y(f"{y}:Q", title=y_title, scale=alt.Scale(zero=False)),
        color=alt.Color("method_label:N", title="method"),
        size=alt.condition("datum.front", alt.value(160), alt.value(50)),
        shape=alt.Shape("front:N", title="Pareto front"),
        tooltip=["method_label", "sparsity", alt.Tooltip(f"{x}:Q", format=".3g"), alt.Tooltip(f"{y}:Q", format=".4g")],
    )
    front = alt.Chart(frame[frame["front"]].sort_values(x)).mark_line(color="black", strokeDash=[2, 2]).encode(
        x=f"{x}:Q", y=f"{y}:Q", order=f"{x}:Q")
    return alt.layer(front, points).properties(height=360)


def widths_heatmap(frame: pd.DataFrame) -> alt.LayerChart:
    """Rows = method @ sparsity, columns = layer, colour = kept fraction, text = width.
    ``frame``: row, layer, kept, fraction."""
    base = alt.Chart(frame).encode(x=alt.X("layer:O", title="layer"), y=alt.Y("row:N", title=None, sort=None))
    cells = base.mark_rect().encode(
        color=alt.Color("fraction:Q", title="kept fraction", scale=alt.Scale(domain=[0, 1], scheme="viridis")),
        tooltip=["row", "layer", alt.Tooltip("kept:Q", format=".1f"), alt.Tooltip("fraction:Q", format=".2f")])
    text = base.mark_text(fontSize=11).encode(
        text=alt.Text("kept:Q", format=".0f"),
        color=alt.condition("datum.fraction > 0.6", alt.value("black"), alt.value("white")))
    return alt.layer(cells, text).properties(height=alt.Step(24))  # one readable row per method @ sparsity


def histogram(frame: pd.DataFrame, field: str, title: str) -> alt.FacetChart:
    """Distribution of a per-neuron value, one panel per method (counts pooled over seeds)."""
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X(f"{field}:Q", bin=alt.Bin(extent=[0, 1], step=0.05), title=title),
        y=alt.Y("count():Q", title="neurons"),
        color=alt.Color("method_label:N", legend=None),
    ).properties(width=220, height=160).facet(facet=alt.Facet("method_label:N", title=None), columns=3)


def training_curves(frame: pd.DataFrame) -> alt.FacetChart:
    """One panel per curve (loss, sparsity, lr, ...), each with its own y scale."""
    return alt.Chart(frame).mark_line().encode(
        x=alt.X("step:Q"), y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
        tooltip=["name", "step", alt.Tooltip("value:Q", format=".4g")],
    ).properties(width=280, height=180).facet(facet=alt.Facet("name:N", title=None), columns=3).resolve_scale(y="independent")


def forest(frame: pd.DataFrame, baseline: str) -> alt.LayerChart:
    """Forest plot: one row per comparison (method @ sparsity [settings]), the mean paired
    difference as a point and its adjusted (simultaneous) interval as a bar; a vertical
    rule at 0 (no difference to ``baseline``). ``frame``: results.compare.comparisons."""
    rows = frame.assign(
        row=[f"{label} @ s={sparsity:g}" + (f" [{settings}]" if settings else "")
             for label, sparsity, settings in zip(frame["method_label"], frame["sparsity"], frame["settings"])],
        outcome=[v.split(" (")[0] for v in frame["verdict"]],
    )
    order = list(rows["row"])
    y = alt.Y("row:N", title=None, sort=order, axis=alt.Axis(labelLimit=420))
    tooltip = ["method_label", "sparsity", "settings", "n", alt.Tooltip("mean_diff:Q", format="+.4g"),
               alt.Tooltip("ci_low:Q", format="+.4g"), alt.Tooltip("ci_high:Q", format="+.4g"),
               alt.Tooltip("p_raw:Q", format=".3g"), alt.Tooltip("p_holm:Q", format=".3g"), "m", "verdict"]
    color = alt.Color("outcome:N", title="verdict (Holm)")
    bars = alt.Chart(rows).mark_rule(strokeWidth=2).encode(
        y=y, x=alt.X("ci_low:Q", title=f"difference to {baseline} (method − {baseline})"), x2="ci_high:Q",
        color=color, tooltip=tooltip)
    points = alt.Chart(rows).mark_point(filled=True, size=70).encode(y=y, x="mean_diff:Q", color=color,
                                                                     tooltip=tooltip)
    zero = alt.Chart(pd.DataFrame({"zero": [0.0]})).mark_rule(color="gray", strokeDash=[4, 3]).encode(x="zero:Q")
    return alt.layer(zero, bars, points).properties(height=alt.Step(26))
