"""The statistics behind every verdict the harness prints or shows: paired t tests with
simultaneous intervals, Holm's step-down correction, two one-sided tests (TOST) for
equivalence, and the settings in which groups of jobs differ.

Pure functions on numbers and DataFrames (no Streamlit, no database); quantiles and
p-values come from ``scipy.stats``. ``results.compare`` and ``results.claims`` read the
database and call these; the CLI and the dashboard call those.

Conventions
-----------
* A *paired difference* is method − baseline over jobs that differ only in the method
  (same model, task, data, sparsity, seed, train and eval settings: the same
  ``pair_key``). Its test is the two-sided one-sample t test of the differences against 0,
  with n − 1 degrees of freedom.
* A *family* is everything one call compares (one table, one page). Its m p-values are
  adjusted with Holm's step-down method, which controls the family-wise error rate at α
  under any dependence between the tests. Intervals are Bonferroni-simultaneous: each is
  a two-sided (1 − α/m) t interval, so all m cover their true differences together with
  probability ≥ 1 − α.
* Holm is uniformly more powerful than Bonferroni, so a difference can be declared
  significant by Holm (adjusted p < α) while its Bonferroni interval still touches 0.
  The reverse cannot happen: an interval that excludes 0 means p < α/m, hence Holm's
  adjusted p ≤ m·p < α. Verdicts are decided by the Holm-adjusted p and say so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as _scipy

ALPHA = 0.05


# -- multiplicity ---------------------------------------------------------------------------
def holm(pvalues: Sequence[float] | Iterable[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order.

    With the m finite p-values sorted ascending, p_(1) ≤ … ≤ p_(m), the adjusted value of
    p_(i) is max_{j ≤ i} min(1, (m − j + 1)·p_(j)). NaN entries (tests that could not be
    made) stay NaN and do not count towards m. Reject H_i at level α iff adjusted p_i < α.

    >>> holm([0.01, 0.04, 0.03, 0.005]).round(6).tolist()
    [0.03, 0.06, 0.06, 0.02]
    """
    p = np.asarray(list(pvalues), dtype=float)
    adjusted = np.full(p.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    m = len(finite)
    if m == 0:
        return adjusted
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def family_size(pvalues: Sequence[float] | Iterable[float]) -> int:
    """m: the number of tests in a family that have a p-value."""
    return int(np.sum(~np.isnan(np.asarray(list(pvalues), dtype=float))))


# -- t intervals and tests -------------------------------------------------------------------
def t_quantile(q: float, df: float) -> float:
    """The q-quantile of Student's t with ``df`` degrees of freedom (``scipy.stats.t.ppf``)."""
    if not 0.0 < q < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < q < 1 and df > 0, got q={q}, df={df}")
    return float(_scipy.t.ppf(q, df))


def half_width(std: float, n: int, level: float) -> float:
    """Half-width of the two-sided ``level`` t interval of a mean of n values with sample
    standard deviation ``std``: t_{(1+level)/2, n−1} · std / √n (NaN for n < 2)."""
    if n < 2:
        return float("nan")
    return t_quantile(0.5 + level / 2.0, n - 1) * std / math.sqrt(n)


@dataclass(frozen=True)
class PairedTest:
    """A one-sample t test of paired differences against 0 and its interval."""

    n: int
    mean: float
    std: float
    p: float  # two-sided; NaN for n < 2
    level: float  # confidence level of [low, high]
    low: float
    high: float


def paired_t(diffs: Sequence[float], level: float = 1.0 - ALPHA) -> PairedTest:
    """Two-sided one-sample t test of ``diffs`` against 0 and the two-sided ``level``
    interval of their mean. Zero spread: p is 0 (mean ≠ 0) or 1 (mean = 0), the interval
    a point. Fewer than two values: no test (p, std and the interval are NaN)."""
    values = np.asarray(list(diffs), dtype=float)
    n = len(values)
    mean = float(values.mean()) if n else float("nan")
    if n < 2:
        return PairedTest(n, mean, float("nan"), float("nan"), level, float("nan"), float("nan"))
    std = float(values.std(ddof=1))
    if std == 0.0:
        return PairedTest(n, mean, 0.0, 1.0 if mean == 0.0 else 0.0, level, mean, mean)
    se = std / math.sqrt(n)
    p = float(2.0 * _scipy.t.sf(abs(mean) / se, n - 1))
    half = half_width(std, n, level)
    return PairedTest(n, mean, std, p, level, mean - half, mean + half)


@dataclass(frozen=True)
class TostResult:
    """Two one-sided tests of H0: |mean| ≥ margin against H1: |mean| < margin."""

    n: int
    mean: float
    std: float
    margin: float
    p_lower: float  # H0: mean ≤ −margin
    p_upper: float  # H0: mean ≥ +margin
    p: float  # max of the two: equivalence is shown at level α iff p < α
    low: float  # the (1 − 2α) interval: inside (−margin, margin) iff p < α
    high: float
    p_below: float  # one-sided p of H1: mean < −margin (a difference beyond the margin)
    p_above: float  # one-sided p of H1: mean > +margin


def tost(diffs: Sequence[float], margin: float, alpha: float = ALPHA) -> TostResult:
    """Schuirmann's two one-sided t tests for equivalence within ±``margin``.

    t_L = (mean + margin)/se tests H0: mean ≤ −margin (p_lower = P(T ≥ t_L)); t_U =
    (mean − margin)/se tests H0: mean ≥ margin (p_upper = P(T ≤ t_U)); T ~ t_{n−1}.
    Equivalence at level α iff max(p_lower, p_upper) < α, which is the same as the
    (1 − 2α) t interval lying inside (−margin, margin). ``p_below`` and ``p_above`` are
    the complementary one-sided tests that the mean lies *beyond* the margin.
    """
    values = np.asarray(list(diffs), dtype=float)
    n = len(values)
    nan = float("nan")
    mean = float(values.mean()) if n else nan
    if n < 2 or not margin >= 0:
        return TostResult(n, mean, nan, margin, nan, nan, nan, nan, nan, nan, nan)
    std = float(values.std(ddof=1))
    df = n - 1
    if std == 0.0:  # no spread: the mean is known exactly
        inside_low, inside_high = mean > -margin, mean < margin
        p_lower, p_upper = (0.0 if inside_low else 1.0), (0.0 if inside_high else 1.0)
        return TostResult(n, mean, 0.0, margin, p_lower, p_upper, max(p_lower, p_upper), mean, mean,
                          0.0 if mean < -margin else 1.0, 0.0 if mean > margin else 1.0)
    se = std / math.sqrt(n)
    p_lower = float(_scipy.t.sf((mean + margin) / se, df))
    p_upper = float(_scipy.t.cdf((mean - margin) / se, df))
    half = t_quantile(1.0 - alpha, df) * se
    return TostResult(n, mean, std, margin, p_lower, p_upper, max(p_lower, p_upper), mean - half, mean + half,
                      1.0 - p_lower, 1.0 - p_upper)


# -- settings of groups --------------------------------------------------------------------
def flatten(spec: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a nested spec: {"train": {"steps": 80}} -> {"train.steps": 80}.
    Lists and other values are kept as they are."""
    flat: dict[str, Any] = {}
    for key, value in spec.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


ABSENT = "(absent)"


def _show(value: Any) -> str:
    if value is ABSENT:
        return ABSENT
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def settings_diff(specs: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """For groups that share a label (e.g. one method at one sparsity): each group's
    ``key=value`` for the dotted spec keys in which the groups do not all agree, sorted by
    key and joined by ", "; a key a group lacks reads ``key=(absent)``. One group, or
    groups that agree everywhere: "".

    ``specs`` maps a group id to its spec (nested or flat); pass specs without the keys
    that vary by construction (the seed)."""
    flat = {group: flatten(spec) for group, spec in specs.items()}
    if len(flat) < 2:
        return {group: "" for group in flat}
    keys = sorted(set().union(*(f.keys() for f in flat.values())))
    differing = [k for k in keys if len({_show(f.get(k, ABSENT)) for f in flat.values()}) > 1]
    return {group: ", ".join(f"{k}={_show(f.get(k, ABSENT))}" for k in differing) for group, f in flat.items()}


# -- a family of paired comparisons -------------------------------------------------------
BASELINE_METHODS = ("dense", "pretrained")  # reference points, never methods to compare
COMPARISON_COLUMNS = ["method", "method_label", "sparsity", "group_hash", "settings", "n", "mean_diff", "std_diff",
                      "ci_low", "ci_high", "ci_level", "p_raw", "p_holm", "m", "verdict", "method_mean",
                      "baseline_mean", "seeds"]


def verdict(n: int, mean: float, p_holm: float, low: float, high: float, higher_is_better: bool, baseline: str,
            alpha: float = ALPHA) -> str:
    """Plain language for one comparison, decided by the Holm-adjusted p at ``alpha``."""
    if n < 2 or math.isnan(p_holm):
        return "fewer than 2 pairs: no interval"
    if p_holm >= alpha:
        return f"not distinguishable from {baseline} with {n} seeds (Holm-adjusted p ≥ {alpha:g})"
    better = (mean > 0) == higher_is_better
    text = f"{'better' if better else 'worse'} than {baseline} (Holm-adjusted p < {alpha:g}, {n} seeds)"
    if low <= 0.0 <= high:
        text += "; the simultaneous interval still touches 0 (Holm is more powerful than Bonferroni)"
    return text


def paired_differences(frame: pd.DataFrame, baseline: str = "random", higher_is_better: bool = True,
                       alpha: float = ALPHA, settings: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One family of paired comparisons: method − ``baseline`` per (method_label,
    sparsity, group_hash), never pooled across groups.

    ``frame`` holds one metric (one split) of one model and task: columns method_label,
    sparsity, pair_key, value, and optionally method, group_hash (default: one group per
    label and sparsity) and seed. A method job pairs with the ``baseline`` job (by
    method_label) of the same pair_key; baselines (``dense``, ``pretrained``) and sparsity
    0 are not compared. ``settings`` maps group_hash -> its settings diff
    (``settings_diff``).

    Columns: n pairs, mean/std of the differences, the Bonferroni-simultaneous interval
    [ci_low, ci_high] at level ci_level = 1 − α/m, the raw two-sided paired-t p, the
    Holm-adjusted p, the family size m and the verdict (from the Holm p; see the module
    docstring for why Holm can reject while the interval touches 0).
    """
    frame = frame.copy()
    if "method" not in frame:
        frame["method"] = frame["method_label"]
    if "group_hash" not in frame:
        frame["group_hash"] = frame["method_label"].astype(str) + "@" + frame["sparsity"].astype(str)
    if "seed" not in frame:
        frame["seed"] = np.nan
    base = frame[frame["method_label"] == baseline][["pair_key", "value"]].drop_duplicates("pair_key")
    base = base.rename(columns={"value": "baseline_value"})
    others = frame[(frame["method_label"] != baseline) & (frame["sparsity"] > 0)
                   & ~frame["method"].isin(BASELINE_METHODS)]
    pairs = others.merge(base, on="pair_key")
    rows = []
    for (method, label, sparsity, group), group_rows in pairs.groupby(
            ["method", "method_label", "sparsity", "group_hash"], sort=True, dropna=False):
        diffs = (group_rows["value"] - group_rows["baseline_value"]).to_numpy()
        test = paired_t(diffs)
        seeds = ",".join(str(int(s)) for s in sorted(group_rows["seed"].dropna().unique()))
        rows.append({"method": method, "method_label": label, "sparsity": float(sparsity), "group_hash": group,
                     "settings": (settings or {}).get(group, ""), "n": test.n, "mean_diff": test.mean,
                     "std_diff": test.std, "p_raw": test.p, "method_mean": float(group_rows["value"].mean()),
                     "baseline_mean": float(group_rows["baseline_value"].mean()), "seeds": seeds, "diffs": diffs})
    if not rows:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    result = pd.DataFrame(rows)
    result["p_holm"] = holm(result["p_raw"])
    m = family_size(result["p_raw"])
    result["m"] = m
    level = 1.0 - alpha / max(m, 1)
    result["ci_level"] = level
    lows, highs, verdicts = [], [], []
    for row in result.itertuples(index=False):
        interval = paired_t(row.diffs, level=level)
        lows.append(interval.low)
        highs.append(interval.high)
        verdicts.append(verdict(row.n, row.mean_diff, row.p_holm, interval.low, interval.high, higher_is_better,
                                baseline, alpha))
    result["ci_low"], result["ci_high"], result["verdict"] = lows, highs, verdicts
    return result[COMPARISON_COLUMNS].sort_values(["method_label", "sparsity", "settings"]).reset_index(drop=True)
