"""What this database supports of the paper's claims (Santacroce et al., 2023), per
(model, task, sparsity): what ``harness claims`` prints and the dashboard's "Claims" page
shows (both call ``claims``).

The claims, each tested on the task's headline metric on its evaluation split
(uniqueness, split ``analysis``, for c):

(a) random is comparable to the best of magnitude and movement — equivalence by two
    one-sided tests (TOST) of the paired difference random − best, where best is the one
    of {magnitude, movement} with the better mean at that sparsity (in the metric's
    direction), against ±margin with margin = ``margin`` × |dense mean| (the fine-tuned
    dense baseline of the same model, task and settings). The default 0.05 (5 % of the
    dense model's score) is about the smallest gap a reader of the paper's tables would
    call a difference: the methods the paper calls comparable are within a few per cent
    of each other, while pruning to high sparsity costs tens of per cent. Being relative
    to dense, one default serves perplexity, ROUGE, BLEU and exact match alike; pass
    another with ``--margin``. "does not hold" needs the converse evidence: the difference
    lies beyond the margin (one-sided t test on the side of the observed mean, doubled
    for the choice of side);
(b) movement can under-perform random or magnitude — holds when movement is
    significantly worse than random or than magnitude; does not hold when it is
    significantly better than both;
(c) GUM raises uniqueness over movement — gum − movement in uniqueness;
(d) GUM improves the task metric over movement and over global_movement — holds when
    gum is significantly better than both, does not hold when it is significantly worse
    than either;
(e) distillation narrows the gaps between methods — the spread (max − min over the
    methods, baselines excluded) with distillation against without, in groups that
    differ only in the distillation settings. The one claim that pairs *across* groups:
    per seed, the spread over the methods both groups ran (same method, sparsity and
    seed), spread(distilled) − spread(not distilled), paired t over seeds.

Statuses: ``holds``, ``does not hold``, ``cannot tell`` (with the reason). Paired tests
pair jobs that differ only in the method (``pair_key``) and are made per *group context*
(every spec field but method and seed): two groups of a method at one sparsity that
differ in settings are two rows with their settings diff, never pooled. Fewer than
three paired seeds is always ``cannot tell``; such tests are not made and do not count
in the family. Holm's correction runs over the family of every test one call makes (the
claims of one model and task); intervals are Bonferroni-simultaneous (paired t:
1 − α/m; TOST: 1 − 2α/m), decisions use the Holm-adjusted p at α (Holm can decide while
an interval touches 0 or the margin: it is more powerful than Bonferroni).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from results import queries
from results.compare import context_spec, families, headline_metric, job_specs, resolve_metric, with_specs
from results.stats import ALPHA, BASELINE_METHODS, holm, paired_t, settings_diff, tost
from results.store import Store

DEFAULT_MARGIN = 0.05
MIN_PAIRS = 3
UNIQUENESS = ("uniqueness", "analysis")
CLAIMS = {
    "a": "random is comparable to the best of magnitude and movement",
    "b": "movement can under-perform random or magnitude",
    "c": "GUM raises uniqueness over movement",
    "d": "GUM improves the task metric over movement and over global_movement",
    "e": "distillation narrows the gaps between methods",
}
HOLDS, FAILS, UNKNOWN = "holds", "does not hold", "cannot tell"
CLAIM_COLUMNS = ["task", "model", "sparsity", "claim", "statement", "status", "metric", "split", "settings", "compared",
                 "n", "estimate", "low", "high", "margin", "p_raw", "p_holm", "m", "evidence", "reason"]


@dataclass
class Test:
    """One hypothesis test a claim row makes."""

    name: str  # e.g. "movement − random"
    kind: str  # "paired t" | "TOST" | "beyond margin"
    diffs: np.ndarray
    sign: float = 1.0  # +1: a positive mean is "better" in the claim's sense
    margin: float = float("nan")
    p_raw: float = float("nan")
    p_holm: float = float("nan")
    low: float = float("nan")
    high: float = float("nan")
    level: float = float("nan")

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def mean(self) -> float:
        return float(np.mean(self.diffs)) if self.n else float("nan")

    @property
    def testable(self) -> bool:
        return self.n >= MIN_PAIRS and not math.isnan(self.p_raw)

    def significant(self, alpha: float) -> bool:
        return self.testable and self.p_holm < alpha

    def better(self) -> bool:
        return self.sign * self.mean > 0

    def describe(self) -> str:
        text = f"{self.name}: n={self.n}, mean {self.mean:+.4g}"
        if self.kind == "TOST":
            text += f", TOST vs ±{self.margin:.4g}"
        elif self.kind == "beyond margin":
            text += f", beyond ±{self.margin:.4g}"
        if not self.testable:
            return text + (f" (fewer than {MIN_PAIRS} pairs: not tested)" if self.n < MIN_PAIRS else "")
        if not math.isnan(self.low) and self.kind != "beyond margin":
            text += f", {self.level:.2%} simultaneous interval [{self.low:+.4g}, {self.high:+.4g}]"
        return text + f", p={self.p_raw:.3g}, Holm p={self.p_holm:.3g}"


@dataclass
class Row:
    claim: str
    sparsity: float
    metric: str
    split: str
    settings: str
    tests: list[Test] = field(default_factory=list)
    decide: Callable[[list[Test], float], tuple[str, str, Test | None]] | None = None
    reason: str = ""  # set when no test can be made
    note: str = ""  # extra evidence (which label was "best", the pairing across groups, ...)


# -- the data -----------------------------------------------------------------------------------
def _frame(store: Store, metrics: pd.DataFrame, metric: str, split: str) -> pd.DataFrame:
    return with_specs(store, metrics[(metrics["metric"] == metric) & (metrics["split"] == split)])


def _labels(rows: pd.DataFrame, method: str) -> list[str]:
    return sorted(set(rows.loc[rows["method"] == method, "method_label"]))


def _paired(rows: pd.DataFrame, a: str, b: str) -> tuple[np.ndarray, list[int]]:
    """a − b over jobs of one context sharing a pair key (same seed): diffs, seeds."""
    left = rows[rows["method_label"] == a][["pair_key", "seed", "value"]].drop_duplicates("pair_key")
    right = rows[rows["method_label"] == b][["pair_key", "value"]].drop_duplicates("pair_key")
    pairs = left.merge(right, on="pair_key", suffixes=("_a", "_b")).sort_values("seed")
    return (pairs["value_a"] - pairs["value_b"]).to_numpy(dtype=float), [int(s) for s in pairs["seed"]]


def _missing(claim: str, sparsity: float, metric: str, split: str, settings: str, reason: str) -> Row:
    return Row(claim, sparsity, metric, split, settings, reason=reason)


# -- the claims ------------------------------------------------------------------------------
def _decide_directional(claimed_better: bool) -> Callable:
    """One test: holds when significant in the claimed direction, does not hold when
    significant the other way."""
    def decide(tests: list[Test], alpha: float):
        test = tests[0]
        if not test.testable:
            return UNKNOWN, f"fewer than {MIN_PAIRS} paired seeds (n={test.n})", test
        if not test.significant(alpha):
            return UNKNOWN, f"not distinguishable with {test.n} seeds (Holm-adjusted p ≥ {alpha:g})", test
        if test.better() == claimed_better:
            return HOLDS, f"significant (Holm-adjusted p < {alpha:g})", test
        return FAILS, f"significant in the opposite direction (Holm-adjusted p < {alpha:g})", test
    return decide


def _claim_a(rows: pd.DataFrame, sign: float, dense: pd.DataFrame, margin: float, base: Row) -> Row:
    randoms = _labels(rows, "random")
    candidates = _labels(rows, "magnitude") + _labels(rows, "movement")
    if not randoms or not candidates:
        absent = [name for name, present in (("random", randoms), ("magnitude or movement", candidates)) if not present]
        base.reason = f"no {' and no '.join(absent)} jobs in this group"
        return base
    means = {label: float(rows.loc[rows["method_label"] == label, "value"].mean()) for label in candidates}
    best = max(candidates, key=lambda label: sign * means[label])
    dense_key = rows["dense_key"].iloc[0]
    dense_values = dense.loc[dense["dense_key"] == dense_key, "value"]
    if dense_values.empty:
        base.reason = "no dense baseline with these settings: the margin is relative to it"
        return base
    delta = margin * abs(float(dense_values.mean()))
    if delta == 0:
        base.reason = (f"the margin is 0 ({margin:g} × |dense mean {float(dense_values.mean()):.4g}|): "
                       "equivalence cannot be shown")
        return base
    diffs, seeds = _paired(rows, randoms[0], best)
    base.note = (f"best of magnitude/movement here: {best} (mean {means[best]:.4g}; "
                 + ", ".join(f"{label} {means[label]:.4g}" for label in candidates if label != best)
                 + f"); margin = {margin:g} × |dense mean {float(dense_values.mean()):.4g}| = {delta:.4g}"
                 + (f"; seeds {','.join(map(str, seeds))}" if seeds else ""))
    base.tests = [Test(f"{randoms[0]} − {best}", "TOST", diffs, sign, delta),
                  Test(f"{randoms[0]} − {best}", "beyond margin", diffs, sign, delta)]

    def decide(tests: list[Test], alpha: float):
        equivalence, beyond = tests
        if not equivalence.testable:
            return UNKNOWN, f"fewer than {MIN_PAIRS} paired seeds (n={equivalence.n})", equivalence
        if equivalence.significant(alpha):
            return HOLDS, f"equivalent within ±{delta:.4g} (TOST, Holm-adjusted p < {alpha:g})", equivalence
        if beyond.significant(alpha):
            side = "better" if beyond.better() else "worse"
            return FAILS, (f"random is {side} than {best} by more than the margin ±{delta:.4g} "
                           f"(Holm-adjusted p < {alpha:g})"), beyond
        return UNKNOWN, (f"neither equivalence within ±{delta:.4g} nor a difference beyond it is shown with "
                         f"{equivalence.n} seeds"), equivalence
    base.decide = decide
    return base


def _claim_b(rows: pd.DataFrame, sign: float, base: Row) -> list[Row]:
    movements = _labels(rows, "movement")
    others = _labels(rows, "random") + _labels(rows, "magnitude")
    if not movements or not others:
        base.reason = "no movement jobs in this group" if not movements else "no random or magnitude jobs in this group"
        return [base]
    result = []
    for label in movements:
        row = Row(base.claim, base.sparsity, base.metric, base.split, base.settings)
        row.tests = [Test(f"{label} − {other}", "paired t", _paired(rows, label, other)[0], sign) for other in others]
        complete = bool(_labels(rows, "random")) and bool(_labels(rows, "magnitude"))

        def decide(tests: list[Test], alpha: float, complete=complete):
            worse = [t for t in tests if t.significant(alpha) and not t.better()]
            if worse:
                return HOLDS, f"movement significantly worse (Holm-adjusted p < {alpha:g})", worse[0]
            untestable = [t for t in tests if not t.testable]
            if untestable:
                return UNKNOWN, f"fewer than {MIN_PAIRS} paired seeds (n={untestable[0].n})", untestable[0]
            if complete and all(t.significant(alpha) and t.better() for t in tests):
                return FAILS, f"movement significantly better than random and magnitude (Holm-adjusted p < {alpha:g})", \
                    max(tests, key=lambda t: t.p_holm)
            missing = "" if complete else "; only one of random and magnitude ran here"
            return UNKNOWN, f"no significant under-performance with these seeds{missing}", min(tests, key=lambda t: t.p_holm)
        row.decide = decide
        result.append(row)
    return result


def _pairwise(rows: pd.DataFrame, sign: float, base: Row, method: str, against: str) -> list[Row]:
    """One row per label of ``method`` and label of ``against``: method − against."""
    mine, theirs = _labels(rows, method), _labels(rows, against)
    if not mine or not theirs:
        base.reason = f"no {method if not mine else against} jobs in this group"
        return [base]
    result = []
    for label in mine:
        for other in theirs:
            row = Row(base.claim, base.sparsity, base.metric, base.split, base.settings)
            row.tests = [Test(f"{label} − {other}", "paired t", _paired(rows, label, other)[0], sign)]
            row.decide = _decide_directional(claimed_better=True)
            result.append(row)
    return result


def _claim_d(rows: pd.DataFrame, sign: float, base: Row) -> list[Row]:
    gums, movements, globals_ = _labels(rows, "gum"), _labels(rows, "movement"), _labels(rows, "global_movement")
    absent = [name for name, labels in (("gum", gums), ("movement", movements), ("global_movement", globals_)) if not labels]
    if absent:
        base.reason = f"no {' and no '.join(absent)} jobs in this group"
        return [base]
    result = []
    for label in gums:
        for movement in movements:
            for global_movement in globals_:
                row = Row(base.claim, base.sparsity, base.metric, base.split, base.settings)
                row.tests = [Test(f"{label} − {other}", "paired t", _paired(rows, label, other)[0], sign)
                             for other in (movement, global_movement)]

                def decide(tests: list[Test], alpha: float):
                    worse = [t for t in tests if t.significant(alpha) and not t.better()]
                    if worse:
                        return FAILS, f"gum significantly worse (Holm-adjusted p < {alpha:g})", worse[0]
                    untestable = [t for t in tests if not t.testable]
                    if untestable:
                        return UNKNOWN, f"fewer than {MIN_PAIRS} paired seeds (n={untestable[0].n})", untestable[0]
                    if all(t.significant(alpha) and t.better() for t in tests):
                        return HOLDS, f"gum significantly better than both (Holm-adjusted p < {alpha:g})", \
                            max(tests, key=lambda t: t.p_holm)
                    weakest = max(tests, key=lambda t: t.p_holm)
                    return UNKNOWN, f"not shown better than {weakest.name.split(' − ')[1]} with these seeds", weakest
                row.decide = decide
                result.append(row)
    return result


def _claim_e(frame: pd.DataFrame, sparsity: float, metric: str, split: str) -> list[Row]:
    """Distilled group vs the non-distilled group with the same other settings: per seed,
    spread over the methods both ran; paired across groups by (method, sparsity, seed)."""
    at = frame[(frame["sparsity"] == sparsity) & ~frame["method"].isin(BASELINE_METHODS)]
    distilled = at[at["distill"]]
    plain = at[~at["distill"]]
    if distilled.empty or plain.empty:
        which = "distilled" if distilled.empty else "non-distilled"
        return [_missing("e", sparsity, metric, split, "", f"no {which} group at this sparsity to compare with")]
    contexts = {c: s for c, s in zip(at["context"], at["spec"])}
    rows = []
    for d_context, d_rows in distilled.groupby("context", sort=True):
        partners = plain[plain["base_context"] == d_rows["base_context"].iloc[0]]
        if partners.empty:
            rows.append(_missing("e", sparsity, metric, split, "",
                                 "no non-distilled group with otherwise the same settings"))
            continue
        for n_context, n_rows in partners.groupby("context", sort=True):
            diff = settings_diff({c: context_spec(contexts[c]) for c in (d_context, n_context)})
            settings = f"with: {diff[d_context]} | without: {diff[n_context]}"
            methods = sorted(set(d_rows["method_label"]) & set(n_rows["method_label"]))
            row = Row("e", sparsity, metric, split, settings)
            if len(methods) < 2:
                row.reason = "fewer than 2 methods ran both with and without distillation"
                rows.append(row)
                continue
            table_d = d_rows.pivot_table(index="seed", columns="method_label", values="value",
                                         aggfunc="first").reindex(columns=methods)
            table_n = n_rows.pivot_table(index="seed", columns="method_label", values="value",
                                         aggfunc="first").reindex(columns=methods)
            seeds = sorted(set(table_d.dropna().index) & set(table_n.dropna().index))
            spread_d = (table_d.loc[seeds, methods].max(axis=1) - table_d.loc[seeds, methods].min(axis=1)).to_numpy()
            spread_n = (table_n.loc[seeds, methods].max(axis=1) - table_n.loc[seeds, methods].min(axis=1)).to_numpy()
            means_d = d_rows[d_rows["method_label"].isin(methods)].groupby("method_label")["value"].mean()
            means_n = n_rows[n_rows["method_label"].isin(methods)].groupby("method_label")["value"].mean()
            row.note = (f"pairs ACROSS groups (the distilled and the non-distilled group) by (method, sparsity, seed); "
                        f"methods {', '.join(methods)}; seeds {','.join(str(int(s)) for s in seeds) or 'none'}; "
                        f"spread of method means {means_d.max() - means_d.min():.4g} with distillation vs "
                        f"{means_n.max() - means_n.min():.4g} without")
            # a narrower spread is what the claim says: a negative difference is "better"
            row.tests = [Test("spread(distill) − spread(no distill)", "paired t", spread_d - spread_n, -1.0)]
            row.decide = _decide_directional(claimed_better=True)
            rows.append(row)
    return rows


# -- the table ---------------------------------------------------------------------------------
def claims(store: Store, task: str, model: str, margin: float = DEFAULT_MARGIN, alpha: float = ALPHA) -> pd.DataFrame:
    """The claims table of one (model, task): one row per claim, sparsity and group
    pairing; columns ``CLAIM_COLUMNS``. All the tests it makes form one Holm family."""
    if not margin >= 0:
        raise ValueError(f"--margin: expected a number >= 0, got {margin}")
    metrics = queries.done_metrics(store, task, model)
    if metrics.empty:
        return pd.DataFrame(columns=CLAIM_COLUMNS)
    specs = job_specs(store, metrics["job_id"].drop_duplicates().tolist())
    metric, split, higher = resolve_metric(metrics, task, specs=specs, headline=headline_metric(store, task))
    sign = 1.0 if higher else -1.0
    frame = _frame(store, metrics, metric, split)
    has_uniqueness = ((metrics["metric"] == UNIQUENESS[0]) & (metrics["split"] == UNIQUENESS[1])).any()
    unique = _frame(store, metrics, *UNIQUENESS) if has_uniqueness else frame.iloc[0:0]
    dense = frame[frame["method"] == "dense"]
    pruned = frame[(frame["sparsity"] > 0) & ~frame["method"].isin(BASELINE_METHODS)]

    rows: list[Row] = []
    sparsities = sorted(set(pruned["sparsity"]))
    if not sparsities:
        rows = [_missing(c, float("nan"), metric, split, "", "no pruned jobs have finished") for c in CLAIMS]
    for sparsity in sparsities:
        at = pruned[pruned["sparsity"] == sparsity]
        contexts = {c: s for c, s in zip(at["context"], at["spec"])}
        diffs = settings_diff({c: context_spec(s) for c, s in contexts.items()})
        for context in sorted(contexts, key=lambda c: diffs[c]):
            group = at[at["context"] == context]
            settings = diffs[context]
            rows.append(_claim_a(group, sign, dense, margin, Row("a", sparsity, metric, split, settings)))
            rows += _claim_b(group, sign, Row("b", sparsity, metric, split, settings))
            if has_uniqueness:
                u_group = unique[unique["context"] == context]
                rows += _pairwise(u_group, 1.0, Row("c", sparsity, *UNIQUENESS, settings), "gum", "movement")
            else:
                rows.append(_missing("c", sparsity, *UNIQUENESS, settings,
                                     "no uniqueness metric (the neuron analysis was off: eval.analysis_examples 0)"))
            rows += _claim_d(group, sign, Row("d", sparsity, metric, split, settings))
        rows += _claim_e(frame, sparsity, metric, split)

    # One Holm family over every test the table makes (those with enough pairs).
    tests = [t for row in rows for t in row.tests]
    for test in tests:
        if test.n >= MIN_PAIRS:
            if test.kind == "paired t":
                test.p_raw = paired_t(test.diffs).p
            else:
                result = tost(test.diffs, test.margin, alpha)
                test.p_raw = result.p if test.kind == "TOST" else min(1.0, 2.0 * min(result.p_below, result.p_above))
    family = [t for t in tests if t.testable]
    m = len(family)
    for test, adjusted in zip(family, holm([t.p_raw for t in family])):
        test.p_holm = float(adjusted)
        if test.kind == "paired t":
            interval = paired_t(test.diffs, level=1.0 - alpha / m)
            test.low, test.high, test.level = interval.low, interval.high, interval.level
        elif test.kind == "TOST":
            interval = tost(test.diffs, test.margin, alpha / m)
            test.low, test.high, test.level = interval.low, interval.high, 1.0 - 2.0 * alpha / m

    records = []
    for row in rows:
        if row.decide is None:
            status, reason, deciding = UNKNOWN, row.reason, None
        else:
            status, reason, deciding = row.decide(row.tests, alpha)
        evidence = "; ".join([t.describe() for t in row.tests] + ([row.note] if row.note else []))
        records.append({
            "task": task, "model": model, "sparsity": row.sparsity, "claim": row.claim, "statement": CLAIMS[row.claim],
            "status": status, "metric": row.metric, "split": row.split, "settings": row.settings,
            "compared": deciding.name if deciding else "", "n": deciding.n if deciding else 0,
            "estimate": deciding.mean if deciding else float("nan"),
            "low": deciding.low if deciding else float("nan"), "high": deciding.high if deciding else float("nan"),
            "margin": deciding.margin if deciding else float("nan"),
            "p_raw": deciding.p_raw if deciding else float("nan"), "p_holm": deciding.p_holm if deciding else float("nan"),
            "m": m, "evidence": evidence, "reason": reason,
        })
    return pd.DataFrame(records, columns=CLAIM_COLUMNS)


def claims_all(store: Store, task: str | None = None, model: str | None = None, margin: float = DEFAULT_MARGIN,
               alpha: float = ALPHA) -> pd.DataFrame:
    """``claims`` for each (task, model) with done jobs; each is its own Holm family (as
    on the dashboard page, which shows one model and task)."""
    frames = [claims(store, t, m, margin, alpha) for t, m in families(store, task, model)]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CLAIM_COLUMNS)


def display_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns the page and ``harness claims``'s table show."""
    def interval(row) -> str:
        if pd.isna(row.low):
            return "–"
        return f"[{row.low:+.4g}, {row.high:+.4g}]" + (f" vs ±{row.margin:.4g}" if not pd.isna(row.margin) else "")
    return pd.DataFrame({
        "claim": frame["claim"], "sparsity": frame["sparsity"], "status": frame["status"],
        "settings": frame["settings"], "compared": frame["compared"], "n": frame["n"], "estimate": frame["estimate"],
        "interval": [interval(r) for r in frame.itertuples(index=False)], "raw p": frame["p_raw"],
        "Holm p": frame["p_holm"], "m": frame["m"], "reason": frame["reason"], "evidence": frame["evidence"],
    })
