"""results.stats and results.compare on known numbers: Holm, SciPy's t quantiles, TOST,
settings diffs, the grouping rule, and `harness compare` against the function the
significance page calls."""

from __future__ import annotations

import io
import json
import math
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from harness.cli import main
from harness.registry import TASKS
from results.compare import comparisons
from results.stats import holm, paired_differences, paired_t, settings_diff, t_quantile, tost
from results.store import Store
from tests.dashboard_fixture import SYNTHETIC_MODEL, SYNTHETIC_TASK, SYNTHETIC_TRAIN, synthetic_job, synthetic_results_db


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


# -- Holm ----------------------------------------------------------------------------------------
def test_holm_matches_a_hand_computed_example():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.01, 0.02, 0.03]) == pytest.approx([0.03, 0.04, 0.04])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.04]) == pytest.approx([0.04])  # m = 1: unchanged


def test_holm_ignores_missing_tests_and_never_lowers_a_p_value():
    adjusted = holm([0.01, float("nan"), 0.04])
    assert math.isnan(adjusted[1])
    assert adjusted[[0, 2]] == pytest.approx([0.02, 0.04])  # m = 2, not 3
    rng = np.random.default_rng(0)
    p = rng.uniform(size=20)
    adjusted = holm(p)
    assert np.all(adjusted >= p) and np.all(adjusted <= 1.0)
    order = np.argsort(p)
    assert np.all(np.diff(adjusted[order]) >= -1e-15)  # monotone in the raw p
    assert holm([]).size == 0


# -- t intervals from SciPy ------------------------------------------------------------------
@pytest.mark.parametrize("n", [3, 5])
def test_interval_half_width_uses_scipy_t_quantiles(n):
    diffs = np.linspace(-1.0, 2.0, n) ** 2  # any values with spread
    std = float(np.std(diffs, ddof=1))
    for level in (0.95, 1 - 0.05 / 4):
        test = paired_t(diffs, level=level)
        expected = scipy_stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n)
        assert (test.high - test.low) / 2 == pytest.approx(expected, rel=1e-12)
    assert t_quantile(0.975, n - 1) == pytest.approx(scipy_stats.t.ppf(0.975, n - 1), rel=1e-14)
    reference = scipy_stats.ttest_1samp(diffs, 0.0)
    assert paired_t(diffs).p == pytest.approx(reference.pvalue, rel=1e-12)
    low, high = reference.confidence_interval(0.95)
    assert (paired_t(diffs).low, paired_t(diffs).high) == pytest.approx((low, high), rel=1e-12)


def test_t_quantile_known_values():
    # df = 2 has a closed form: F(t) = 1/2 + t / (2·sqrt(2 + t²)), so t_0.975 = sqrt(2·0.95² / (1 − 0.95²))
    assert t_quantile(0.975, 2) == pytest.approx(math.sqrt(2 * 0.95**2 / (1 - 0.95**2)), rel=1e-13)
    assert t_quantile(0.975, 1) == pytest.approx(12.706204736, rel=1e-8)
    assert t_quantile(0.025, 5) == pytest.approx(-2.570581836, rel=1e-8)
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)


def test_paired_t_edge_cases():
    single = paired_t([1.0])
    assert single.n == 1 and math.isnan(single.p) and math.isnan(single.low)
    flat = paired_t([2.0, 2.0, 2.0])
    assert flat.p == 0.0 and flat.low == flat.high == 2.0
    assert paired_t([0.0, 0.0]).p == 1.0


# -- TOST -------------------------------------------------------------------------------------
def test_tost_on_a_hand_example_against_scipy():
    diffs = [0.1, -0.2, 0.3, 0.05, -0.1]
    margin = 0.5
    mean, se = np.mean(diffs), np.std(diffs, ddof=1) / math.sqrt(len(diffs))  # 0.03, 0.0867...
    result = tost(diffs, margin)
    # by hand: t_L = (0.03 + 0.5)/se, t_U = (0.03 − 0.5)/se, 4 degrees of freedom
    assert result.p_lower == pytest.approx(scipy_stats.t.sf((mean + margin) / se, 4), rel=1e-12)
    assert result.p_upper == pytest.approx(scipy_stats.t.cdf((mean - margin) / se, 4), rel=1e-12)
    # the same two one-sided tests as scipy's one-sample t test with a shifted null
    assert result.p_lower == pytest.approx(scipy_stats.ttest_1samp(diffs, -margin, alternative="greater").pvalue)
    assert result.p_upper == pytest.approx(scipy_stats.ttest_1samp(diffs, margin, alternative="less").pvalue)
    assert result.p == max(result.p_lower, result.p_upper) < 0.05
    # equivalence at α ⇔ the (1 − 2α) interval lies inside the margin
    low, high = scipy_stats.ttest_1samp(diffs, 0.0).confidence_interval(0.90)
    assert (result.low, result.high) == pytest.approx((low, high))
    assert -margin < result.low < result.high < margin
    # a narrow margin: not equivalent, and the interval crosses it
    narrow = tost(diffs, 0.1)
    assert narrow.p > 0.05 and narrow.high > 0.1
    # far outside: the one-sided test "beyond the margin" rejects
    far = tost([-3.0, -3.2, -2.9], 0.5)
    assert far.p > 0.5 and far.p_below < 0.01 and far.p_above > 0.99


# -- settings diff and grouping ----------------------------------------------------------------
def test_settings_diff_names_only_the_keys_that_differ():
    a = {"train": {"steps": 40, "lr": 5e-4}, "eval": {"decoding": "greedy"}}
    b = {"train": {"steps": 80, "lr": 5e-4}, "eval": {"decoding": "greedy"}}
    c = {"train": {"steps": 80, "lr": 5e-4, "distill": True}, "eval": {"decoding": "beam"}}
    assert settings_diff({"a": a, "b": b}) == {"a": "train.steps=40", "b": "train.steps=80"}
    three = settings_diff({"a": a, "b": b, "c": c})
    assert three["c"] == "eval.decoding=beam, train.distill=true, train.steps=80"
    assert three["a"] == "eval.decoding=greedy, train.distill=(absent), train.steps=40"
    assert settings_diff({"a": a}) == {"a": ""}


def _diffs_with_p(p: float, n: int = 3, scale: float = 1.0) -> np.ndarray:
    """n paired differences whose two-sided t test has exactly this p."""
    t = scipy_stats.t.isf(p / 2, n - 1)
    spread = np.linspace(-1.0, 1.0, n) * scale
    std = np.std(spread, ddof=1)
    return spread + t * std / math.sqrt(n)


def test_paired_differences_holm_bonferroni_and_verdicts():
    rows = []
    # two methods with raw p 0.01 and 0.04: Holm adjusts to 0.02 and 0.04 (both < 0.05),
    # Bonferroni's 97.5 % interval of the second still contains 0.
    for label, p in (("strong", 0.01), ("weak", 0.04)):
        for seed, d in enumerate(_diffs_with_p(p)):
            rows += [(label, 0.5, f"k{seed}", seed, 10.0 + d), ("random", 0.5, f"k{seed}", seed, 10.0)]
    rows += [("lonely", 0.5, "k0", 0, 11.0)]
    frame = pd.DataFrame(rows, columns=["method_label", "sparsity", "pair_key", "seed", "value"])
    result = paired_differences(frame, "random", higher_is_better=True).set_index("method_label")
    assert result.loc["strong", "p_raw"] == pytest.approx(0.01)
    assert result.loc["strong", "p_holm"] == pytest.approx(0.02)
    assert result.loc["weak", "p_holm"] == pytest.approx(0.04)
    assert set(result["m"]) == {2}  # the one-pair comparison has no test
    assert result["ci_level"].tolist() == pytest.approx([1 - 0.05 / 2] * 3)
    assert result.loc["strong", "ci_low"] > 0
    assert result.loc["weak", "ci_low"] < 0 < result.loc["weak", "ci_high"]
    assert result.loc["weak", "verdict"].startswith("better than random (Holm-adjusted p < 0.05, 3 seeds)")
    assert "touches 0" in result.loc["weak", "verdict"]
    assert "touches 0" not in result.loc["strong", "verdict"]
    assert result.loc["lonely", "verdict"] == "fewer than 2 pairs: no interval"
    down = paired_differences(frame, "random", higher_is_better=False).set_index("method_label")
    assert down.loc["strong", "verdict"].startswith("worse than random")


def test_paired_differences_verdicts_respect_direction():
    rows = []
    for seed, (r, good, same, one) in enumerate([(1.0, 2.0, 1.5, 5.0), (1.1, 2.1, 0.6, None), (0.9, 2.05, 1.1, None)]):
        key = f"k{seed}"
        rows += [("random", 0.5, key, r), ("good", 0.5, key, good), ("same", 0.5, key, same)]
        if one is not None:
            rows.append(("one", 0.5, key, one))
    frame = pd.DataFrame(rows, columns=["method_label", "sparsity", "pair_key", "value"])
    up = paired_differences(frame, "random", higher_is_better=True).set_index("method_label")["verdict"]
    assert up["good"] == "better than random (Holm-adjusted p < 0.05, 3 seeds)"
    assert up["same"] == "not distinguishable from random with 3 seeds (Holm-adjusted p ≥ 0.05)"
    assert up["one"] == "fewer than 2 pairs: no interval"
    down = paired_differences(frame, "random", higher_is_better=False).set_index("method_label")["verdict"]
    assert down["good"] == "worse than random (Holm-adjusted p < 0.05, 3 seeds)"


def two_settings_db(path) -> Store:
    """random and magnitude at 40 steps (3 seeds) and at 80 steps (4 seeds), one database;
    magnitude is 2 better at 40 steps and 1 worse at 80; plus dense baselines."""
    jobs = []
    wiggle = [0.0, 0.3, -0.2, 0.1]
    for steps, seeds, gap in ((40, 3, 2.0), (80, 4, -1.0)):
        train = SYNTHETIC_TRAIN | {"steps": steps}
        for seed in range(seeds):
            jobs.append(synthetic_job("dense", 0.0, seed, {"exact_match": 40.0}, train=train))
            jobs.append(synthetic_job("random", 0.5, seed, {"exact_match": 20.0 + wiggle[seed]}, train=train))
            jobs.append(synthetic_job("magnitude", 0.5, seed, {"exact_match": 20.0 + gap + 1.5 * wiggle[seed]},
                                      train=train))
    return Store(str(synthetic_results_db(path, jobs)), create=False)


def test_two_groups_with_different_train_settings_are_two_comparisons(tmp_path):
    store = two_settings_db(tmp_path / "two.db")
    result = comparisons(store, SYNTHETIC_TASK, SYNTHETIC_MODEL)
    assert result["metric"].unique().tolist() == ["exact_match"] and result["split"].unique().tolist() == ["test"]
    assert len(result) == 2 and set(result["method_label"]) == {"magnitude"}
    wiggle = [0.0, 0.3, -0.2, 0.1]
    by_settings = result.set_index("settings")
    assert set(by_settings.index) == {"train.steps=40", "train.steps=80"}
    assert by_settings.loc["train.steps=40", "n"] == 3
    assert by_settings.loc["train.steps=80", "n"] == 4
    assert by_settings.loc["train.steps=40", "mean_diff"] == pytest.approx(2.0 + 0.5 * np.mean(wiggle[:3]))
    assert by_settings.loc["train.steps=80", "mean_diff"] == pytest.approx(-1.0 + 0.5 * np.mean(wiggle))
    assert by_settings.loc["train.steps=40", "verdict"].startswith("better than random")
    assert by_settings.loc["train.steps=80", "verdict"].startswith("worse than random")
    assert set(result["m"]) == {2}
    assert len(set(result["group_hash"])) == 2


def test_compare_json_is_the_function_the_page_calls(tmp_path):
    store = two_settings_db(tmp_path / "cli.db")
    code, out, _ = cli("compare", "--db", str(store.path), "--format", "json")
    assert code == 0
    printed = pd.DataFrame(json.loads(out))
    expected = comparisons(store, SYNTHETIC_TASK, SYNTHETIC_MODEL, "exact_match", "test", "random")
    assert len(printed) == len(expected) == 2
    for column in ("n", "mean_diff", "ci_low", "ci_high", "p_raw", "p_holm", "m"):
        assert printed[column].tolist() == pytest.approx(expected[column].tolist(), rel=1e-12), column
    assert printed["verdict"].tolist() == expected["verdict"].tolist()
    assert printed["settings"].tolist() == expected["settings"].tolist()
    code, table, _ = cli("compare", "--db", str(store.path))
    assert code == 0 and "train.steps=80" in table and "Holm" in table and "m = 2" in table
    code, csv, _ = cli("compare", "--db", str(store.path), "--format", "csv", "--metric", "exact_match")
    assert code == 0 and len(pd.read_csv(io.StringIO(csv))) == 2


def test_compare_bad_input_is_one_line_and_exit_2(tmp_path):
    store = two_settings_db(tmp_path / "bad.db")
    db = str(store.path)
    code, _, err = cli("compare", "--db", db, "--metric", "rouge")
    assert code == 2 and err.startswith("error: --metric") and "exact_match" in err and err.count("\n") == 1
    code, _, err = cli("compare", "--db", db, "--task", "nope")
    assert code == 2 and SYNTHETIC_TASK in err
    code, _, err = cli("compare", "--db", db, "--model", "nope")
    assert code == 2 and SYNTHETIC_MODEL in err
    code, _, err = cli("compare", "--db", db, "--baseline", "nope")
    assert code == 2 and "magnitude" in err
    code, out, err = cli("compare", "--db", str(tmp_path / "missing.db"))
    assert code == 0 and out == "" and "no finished jobs" in err


def test_one_family_per_task_and_model_with_each_tasks_headline_metric(tmp_path):
    jobs = []
    for seed, w in enumerate([0.0, 0.2, -0.1]):
        for method, shift in (("dense", 0.0), ("random", 0.0), ("magnitude", 1.0)):
            sparsity = 0.0 if method == "dense" else 0.5
            # loss first: the default must be the headline (perplexity), not the first metric
            jobs.append(synthetic_job(method, sparsity, seed, {"loss": 3.0 + shift + w, "perplexity": 20.0 + shift + w,
                                                               ("perplexity", "validation"): 19.0},
                                      task="wiki-embedded"))
            jobs.append(synthetic_job(method, sparsity, seed, {"bleu": 10.0 + shift + w, "exact_match": 5.0 + shift + w}))
    db = synthetic_results_db(tmp_path / "tasks.db", jobs)
    code, out, _ = cli("compare", "--db", str(db), "--format", "json")
    assert code == 0
    printed = pd.DataFrame(json.loads(out))
    assert sorted(zip(printed["task"], printed["metric"], printed["split"])) == [
        ("sql-embedded", TASKS.get("sql-embedded").headline_metric, "test"), ("wiki-embedded", "perplexity", "test")]
    assert set(printed["m"]) == {1}  # each family corrected on its own
    wiki = printed[printed["task"] == "wiki-embedded"].iloc[0]
    assert wiki["mean_diff"] == pytest.approx(1.0) and wiki["verdict"].startswith("worse than random")  # lower is better
    code, out, _ = cli("compare", "--db", str(db), "--format", "json", "--metric", "exact_match")  # only sql has it
    assert code == 0 and set(pd.DataFrame(json.loads(out))["task"]) == {"sql-embedded"}
    code, out, _ = cli("compare", "--db", str(db), "--format", "json", "--task", "wiki-embedded", "--metric",
                       "perplexity", "--split", "validation")
    assert code == 0 and pd.DataFrame(json.loads(out))["split"].tolist() == ["validation"]
