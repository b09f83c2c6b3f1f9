"""The dashboard's arithmetic, free of Streamlit: paired comparisons with t intervals,
Pareto fronts and best-cell marks. Pure functions on DataFrames, tested directly."""

from __future__ import annotations

import math

import pandas as pd

CONFIDENCE = 0.95


# -- Student's t, without SciPy (not a dependency of the harness) -------------------------
def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Lentz's continued fraction for the incomplete beta function (Numerical Recipes 6.4)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _regularized_beta(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (bisection on the CDF)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        middle = (low + high) / 2.0
        low, high = (middle, high) if t_cdf(middle, df) < p else (low, middle)
    return (low + high) / 2.0


# -- paired differences to a baseline ----------------------------------------------------------
def verdict(n: int, low: float, high: float, mean: float, higher_is_better: bool, baseline: str) -> str:
    """Plain language for a paired difference (method − baseline) and its interval."""
    if n < 2:
        return f"{n} paired seed: no confidence interval (run more seeds)"
    if low <= 0.0 <= high:
        return f"not distinguishable from {baseline} with {n} seeds"
    better = (mean > 0) == higher_is_better
    return f"{'better' if better else 'worse'} than {baseline} ({CONFIDENCE:.0%} CI, {n} seeds)"


def paired_differences(frame: pd.DataFrame, baseline: str, higher_is_better: bool) -> pd.DataFrame:
    """Per (method_label, sparsity): method − baseline over pairs of jobs sharing a
    ``pair_key`` (same model, task, sparsity, seed and settings), with a two-sided t
    interval and a verdict. ``frame`` has method_label, sparsity, pair_key, value."""
    columns = ["method_label", "sparsity", "n_pairs", "mean_diff", "std_diff", "ci_low", "ci_high", "verdict"]
    base = frame[frame["method_label"] == baseline][["pair_key", "value"]].rename(columns={"value": "baseline"})
    others = frame[(frame["method_label"] != baseline) & (frame["sparsity"] > 0)]
    pairs = others.merge(base.drop_duplicates("pair_key"), on="pair_key")
    rows = []
    for (label, sparsity), group in pairs.groupby(["method_label", "sparsity"], sort=False):
        diffs = group["value"] - group["baseline"]
        n, mean = len(diffs), float(diffs.mean())
        std = float(diffs.std()) if n > 1 else float("nan")
        half = t_quantile(0.5 + CONFIDENCE / 2, n - 1) * std / math.sqrt(n) if n > 1 else float("nan")
        low, high = mean - half, mean + half
        rows.append((label, sparsity, n, mean, std, low, high, verdict(n, low, high, mean, higher_is_better, baseline)))
    return pd.DataFrame(rows, columns=columns).sort_values(["method_label", "sparsity"]).reset_index(drop=True)


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
    a column has more than one method to compare."""
    best: dict[float, set[str]] = {}
    for sparsity, column in frame.groupby("sparsity"):
        if len(column) < 2:
            continue
        target = column["mean"].max() if higher_is_better else column["mean"].min()
        best[sparsity] = set(column.loc[column["mean"] == target, "method_label"])
    return best
