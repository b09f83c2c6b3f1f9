"""Dashboard-only arithmetic, free of Streamlit: Pareto fronts and best-cell marks.

The statistics behind verdicts (paired t tests, Holm, simultaneous intervals, TOST) live
in ``results.stats``, shared with ``harness compare`` and ``harness claims``."""

from __future__ import annotations

import pandas as pd

from results.stats import BASELINE_METHODS


# -- fronts and marks ----------------------------------------------------------------------------
def pareto_front(frame: pd.DataFrame, x: str, y: str, y_higher_is_better: bool) -> pd.Series:
    """True for points no other point beats in both ``x`` (higher is better: a speed-up)
    and ``y`` (in its own direction)."""
    sign = 1.0 if y_higher_is_better else -1.0
    xs, ys = frame[x].to_numpy(), sign * frame[y].to_numpy()
    front = [
        not any((xs[j] >= xs[i] and ys[j] >= ys[i]) and (xs[j] > xs[i] or ys[j] > ys[i]) for j in range(len(xs)))
        for i in range(len(xs))
    ]
    return pd.Series(front, index=frame.index)


def best_rows(frame: pd.DataFrame, higher_is_better: bool) -> dict[float, set[str]]:
    """Per sparsity, the method label(s) with the best mean (ties all marked); only where
    a column has more than one method to compare. Baselines (dense, pretrained) are
    reference points, never marked."""
    best: dict[float, set[str]] = {}
    if "method" in frame:
        frame = frame[~frame["method"].isin(BASELINE_METHODS)]
    for sparsity, column in frame.groupby("sparsity"):
        if len(column) < 2:
            continue
        target = column["mean"].max() if higher_is_better else column["mean"].min()
        best[sparsity] = set(column.loc[column["mean"] == target, "method_label"])
    return best
