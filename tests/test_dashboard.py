"""Every dashboard page under Streamlit's AppTest, against a database from a tiny real
matrix; the numbers shown are checked against the database directly. The significance
and claims pages are also checked on databases with chosen numbers against
`harness compare` / `harness claims`."""

from __future__ import annotations

import hashlib
import io
import json
import math
import sqlite3
import statistics
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats as scipy_stats
from sqlalchemy import create_engine, text
from streamlit.testing.v1 import AppTest

from dashboard.stats import pareto_front
from harness.cli import main as cli_main
from results.claims import CLAIMS
from results.compare import display_table
from tests.conftest import REPO, write_matrix
from harness.registry import TASKS
from tests.dashboard_fixture import (MISSING_MODEL, SEEDS, SPARSITIES, SYNTHETIC_MODEL, SYNTHETIC_TASK, TASK,
                                     build_results_db, claims_jobs, distilled_methods, fixture_job_count, methods,
                                     synthetic_results_db, tiny_results_matrix)

APP = str(REPO / "dashboard" / "app.py")
PAGES = ["leaderboard", "curves", "redundancy", "random", "claims", "job"]


@pytest.fixture(scope="module")
def results_db(tmp_path_factory, tiny_model_dir) -> Path:
    return build_results_db(tmp_path_factory.mktemp("dashboard"), tiny_model_dir)


def sql(db: Path, query: str, **params) -> list[tuple]:
    with create_engine(f"sqlite:///{db}").connect() as connection:
        return [tuple(r) for r in connection.execute(text(query), params)]


def app(monkeypatch, db: Path | str, page: str = "leaderboard", model: str | None = None) -> AppTest:
    monkeypatch.setenv("HARNESS_DB", str(db))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["page"] = page
    at.run()
    if model is not None:
        at.sidebar.selectbox(key="model").set_value(model).run()
    return at


def copy_db(source: Path, target: Path) -> Path:
    """A consistent copy (SQLite's backup API: the WAL file's pages included)."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    return target


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def choose(at: AppTest, key: str, metric: str, split: str) -> AppTest:
    return at.selectbox(key=key).set_value((metric, split)).run()


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_errors(monkeypatch, results_db, tiny_model_dir, page):
    at = app(monkeypatch, results_db, page)
    assert_clean(at)
    assert at.sidebar.selectbox(key="task").value == TASK
    # the embedded SQL set is generated: every page says so
    assert any("Generated data" in w.value for w in at.warning)
    assert at.session_state["page"] == page


def test_leaderboard_holds_the_expected_cells(monkeypatch, results_db):
    at = choose(app(monkeypatch, results_db), "leaderboard_metric", "bleu", "test")
    assert_clean(at)
    table = at.dataframe[0].value
    groups: dict[str, tuple[str, float, list[float]]] = {}  # group hash -> label, sparsity, values
    for label, sparsity, group, value in sql(results_db, "select j.method_label, j.sparsity, j.group_hash, m.value "
                                                         "from metrics m join jobs j on j.id = m.job_id "
                                                         "where m.name = 'bleu' and m.split = 'test'"):
        groups.setdefault(group, (label, sparsity, []))[2].append(value)
    baselines = sum(label in ("dense", "pretrained") for label, _, _ in groups.values())
    assert 1 <= baselines <= 2  # dense, and the pretrained model where the harness evaluates it
    assert len(groups) == baselines + len(methods()) * len(SPARSITIES) + len(distilled_methods())
    # a label with two groups at one sparsity (plain and distilled) is shown with its group hash
    shared = {(l, s) for l, s, _ in groups.values() if sum((l, s) == (l2, s2) for l2, s2, _ in groups.values()) > 1}
    shown = {group: (label if (label, sparsity) not in shared else f"{label} [{group[:6]}]", sparsity)
             for group, (label, sparsity, _) in groups.items()}
    values = {shown[group]: v for group, (_, _, v) in groups.items()}
    # ★ reads the same metric on split validation (choices are made there), the test numbers are shown
    on_validation: dict[str, list[float]] = {}
    for group, value in sql(results_db, "select j.group_hash, m.value from metrics m join jobs j on j.id = m.job_id "
                                        "where m.name = 'bleu' and m.split = 'validation'"):
        on_validation.setdefault(group, []).append(value)
    assert on_validation, "the fixture's jobs evaluate on validation too"
    validation_means = {shown[group]: statistics.mean(v) for group, v in on_validation.items()}
    best = {s: max(m for (l, s2), m in validation_means.items() if s2 == s) for s in SPARSITIES}
    for (label, sparsity), seed_values in values.items():
        mean = statistics.mean(seed_values)
        std = statistics.stdev(seed_values) if len(seed_values) > 1 else 0.0
        cell = table.loc[label, f"s={sparsity:g}"]
        assert len(seed_values) == (1 if label == "pretrained" else len(SEEDS)), (label, seed_values)
        assert cell.startswith(f"{mean:.4g} ± {std:.2g} ({len(seed_values)})"), (label, sparsity, cell)
        starred = sparsity > 0 and math.isclose(validation_means[(label, sparsity)], best[sparsity])
        assert cell.endswith("★") == starred, (label, sparsity, cell)
    assert list(table.index)[0] == "dense"
    assert [m.value for m in at.metric if m.label == "jobs done"] == [str(sum(map(len, values.values())))]
    assert at.get("download_button")  # CSV download offered


def test_failed_jobs_are_visible_with_their_traceback(monkeypatch, results_db):
    at = app(monkeypatch, results_db, model=MISSING_MODEL)
    failed = sql(results_db, "select count(*) from jobs where status = 'failed' and model = :model", model=MISSING_MODEL)
    assert [m.value for m in at.metric if m.label == "jobs failed"] == [str(failed[0][0])] and failed[0][0] >= 1
    assert any("failed" in e.value for e in at.error)
    failed = at.dataframe[-1].value
    assert "could not be loaded from the Hugging Face hub" in failed["error"].iloc[0]
    at.sidebar.radio(key="page").set_value("job").run()
    assert not at.exception
    assert any("Traceback" in c.value for c in at.code)


def expected_verdicts(db: Path, metric: str, split: str, higher_is_better: bool) -> dict[tuple[str, float, bool], str]:
    """Paired differences to random within each group (same spec but the method), from
    the database: SciPy's two-sided t test, Holm by hand over the whole family."""
    rows = sql(db, "select j.method_label, j.sparsity, j.spec_json, m.value from metrics m join jobs j on j.id = m.job_id "
                   "where m.name = :metric and m.split = :split and j.status = 'done' and j.sparsity > 0",
               metric=metric, split=split)

    def without(spec: dict, *keys: str) -> str:
        return hashlib.sha256(json.dumps({k: v for k, v in spec.items() if k not in keys}, sort_keys=True).encode()).hexdigest()

    parsed = [(label, sparsity, json.loads(spec), value) for label, sparsity, spec, value in rows]
    random = {without(spec, "method"): v for label, _, spec, v in parsed if label == "random"}
    diffs: dict[tuple[str, float, bool], list[float]] = {}
    for label, sparsity, spec, value in parsed:
        if label != "random":
            key = (label, sparsity, bool(spec["train"].get("distill")))
            diffs.setdefault(key, []).append(value - random[without(spec, "method")])
    keys = sorted(diffs)

    def two_sided_p(d: list[float]) -> float:
        if len(set(d)) == 1:  # no spread (tiny models often score 0 everywhere): the mean is exact
            return 1.0 if d[0] == 0 else 0.0
        return float(scipy_stats.ttest_1samp(d, 0.0).pvalue)

    p = [two_sided_p(diffs[k]) for k in keys]
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    verdicts = {}
    for k, q in zip(keys, adjusted):
        d = diffs[k]
        if q >= 0.05:
            verdicts[k] = f"not distinguishable from random with {len(d)} seeds (Holm-adjusted p ≥ 0.05)"
        else:
            better = (statistics.mean(d) > 0) == higher_is_better
            verdicts[k] = f"{'better' if better else 'worse'} than random (Holm-adjusted p < 0.05, {len(d)} seeds)"
    return verdicts


@pytest.mark.parametrize("metric, split, higher", [("bleu", "test", True), ("train_loss_final", "train", False)])
def test_significance_page_gives_the_verdicts_the_data_implies(monkeypatch, results_db, metric, split, higher):
    at = choose(app(monkeypatch, results_db, "random"), "significance_metric", metric, split)
    assert_clean(at)
    lines = [m.value for m in at.markdown if m.value.startswith("- **")]
    expected = expected_verdicts(results_db, metric, split, higher)
    assert len(lines) == len(expected) == (len(methods()) - 1) * len(SPARSITIES) + len(distilled_methods()) - 1
    for (label, sparsity, distilled), verdict in expected.items():
        prefix = f"- **{label}** at sparsity {sparsity:g}"
        line = next(l for l in lines if l.startswith(prefix) and ("distill=true" in l) == distilled)
        assert verdict in line, (line, verdict)
        assert f"m = {len(expected)})" in line
    assert len(at.get("vega_lite_chart")) == 1  # the forest plot
    table = at.dataframe[0].value
    assert {"n", "mean diff", "adjusted interval", "raw p", "Holm p", "m", "verdict", "settings diff"} <= set(table.columns)
    assert len(table) == len(expected)


def test_significance_page_defaults_to_the_headline_metric(monkeypatch, results_db):
    at = app(monkeypatch, results_db, "random")
    assert_clean(at)
    assert at.selectbox(key="significance_metric").value == (TASKS.get("sql-embedded").headline_metric, "test")


def test_claims_page_evaluates_every_claim(monkeypatch, results_db):
    at = app(monkeypatch, results_db, "claims")
    assert_clean(at)
    summary, table = at.dataframe[0].value, at.dataframe[1].value
    assert len(summary) == len(CLAIMS)
    assert set(table["status"]) <= {"holds", "does not hold", "cannot tell"}
    plain = table[~table["settings"].str.contains("distill=true")]
    dense = sql(results_db, "select avg(m.value) from metrics m join jobs j on j.id = m.job_id where j.method = 'dense' "
                            "and m.name = 'exact_match' and m.split = 'test' and j.status = 'done'")[0][0]
    for claim in ("a", "b", "c", "d"):  # every method a claim needs ran: no row lacks one
        rows = plain[plain["claim"] == claim]
        assert len(rows) == len(SPARSITIES), claim
        assert not rows["reason"].str.contains("jobs in this group").any(), rows["reason"].tolist()
        if claim == "a" and dense == 0:  # a 6-step tiny model gets no SQL query exactly right: no margin
            assert rows["reason"].str.contains("the margin is 0").all() and (rows["n"] == 0).all()
        else:
            assert (rows["n"] == len(SEEDS)).all(), claim
    e = table[table["claim"] == "e"]
    assert (e["n"] == len(SEEDS)).sum() == 1 and e["evidence"].str.contains("ACROSS groups").any()


def test_redundancy_page_shows_analysis_widths_and_histograms(monkeypatch, results_db):
    at = app(monkeypatch, results_db, "redundancy")
    assert_clean(at)
    assert not at.info  # analysis present, neuron stats present
    charts = at.get("vega_lite_chart")
    assert len(charts) == 4  # uniqueness, sensitivity, widths heatmap, max |cos| histograms
    summary = at.dataframe[0].value
    assert set(summary.index) == {"dense", *[l for (l,) in sql(results_db, "select distinct method_label from jobs where method != 'dense' and status = 'done'")]}


def test_curves_page_with_and_without_speed_metrics(monkeypatch, results_db, tmp_path):
    db = results_db
    if not sql(db, "select count(*) from metrics where name like '%speedup'")[0][0]:
        # jobs ran without speed measurement: a copy where every job measured a speed-up
        db = copy_db(results_db, tmp_path / "speed.db")
        with create_engine(f"sqlite:///{db}").begin() as connection:
            connection.execute(text("insert into metrics (job_id, name, split, value, higher_is_better) select j.id, "
                                    "'prefill_speedup', 'speed', 1.0 + j.sparsity, 1 from jobs j where status = 'done'"))
    at = app(monkeypatch, db, "curves")
    assert_clean(at)
    assert len(at.get("vega_lite_chart")) == 2  # metric vs sparsity, metric vs speed-up
    front = at.dataframe[0].value
    assert len(front) >= 1 and front["speedup"].is_monotonic_increasing
    # Without speed metrics the page says where they come from.
    bare = copy_db(results_db, tmp_path / "bare.db")
    with create_engine(f"sqlite:///{bare}").begin() as connection:
        connection.execute(text("delete from metrics where name like '%speedup'"))
    at = app(monkeypatch, bare, "curves")
    assert_clean(at)
    assert any("no speed-up metrics" in i.value for i in at.info)
    assert len(at.get("vega_lite_chart")) == 1


def test_job_page_shows_spec_metrics_curves_and_samples(monkeypatch, results_db):
    at = app(monkeypatch, results_db, "job")
    assert_clean(at)
    assert at.get("vega_lite_chart")  # loss / sparsity / lr curves
    tables = [d.value for d in at.dataframe]
    assert any("prediction" in t.columns for t in tables)
    assert any({"name", "value"} <= set(t.columns) and "bleu" in set(t["name"]) for t in tables)
    assert len(at.json) == 3  # spec, protocol, versions


def test_missing_empty_and_junk_databases_explain_themselves(monkeypatch, tmp_path):
    for db in (tmp_path / "missing.db", tmp_path / "empty.db"):
        if db.name == "empty.db":
            db.write_bytes(b"")
        at = app(monkeypatch, db)
        assert not at.exception
        assert any("No results yet" in i.value for i in at.info)
        assert any("harness run --matrix" in m.value for m in at.markdown)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 20)
    at = app(monkeypatch, junk)
    assert not at.exception and "not a SQLite database" in at.error[0].value


def test_dashboard_refreshes_while_a_matrix_writes(monkeypatch, results_db, tiny_model_dir, tmp_path):
    db = copy_db(results_db, tmp_path / "live.db")
    live = tiny_results_matrix(tiny_model_dir, seeds=[3]) | {"methods": ["random"], "sparsities": [0.5]}
    matrix = write_matrix(tmp_path, live)
    writer = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--matrix", str(matrix), "--db", str(db),
                               "--threads", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    at = app(monkeypatch, db)
    try:
        while writer.poll() is None:  # reruns while jobs start, run and commit
            at.sidebar.button[0].click().run()
            assert_clean(at)
            time.sleep(1.0)
    finally:
        writer.wait(timeout=300)
    assert writer.returncode == 0
    at.sidebar.button[0].click().run()
    assert_clean(at)
    done_specs = "select count(distinct spec_hash) from jobs where status = 'done' and model != :missing"
    done = sql(db, done_specs, missing=MISSING_MODEL)[0][0]
    assert done >= fixture_job_count() + 2  # + seed 3's dense and random jobs
    assert [m.value for m in at.metric if m.label == "jobs done"] == [str(done)]


# -- databases with chosen numbers: the pages against the CLI ------------------------------------
@pytest.fixture(scope="module")
def chosen_db(tmp_path_factory) -> Path:
    return synthetic_results_db(tmp_path_factory.mktemp("chosen") / "chosen.db", claims_jobs())


def cli_json(*argv: str) -> pd.DataFrame:
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli_main(list(argv)) == 0
    return pd.DataFrame(json.loads(out.getvalue()))


def test_significance_page_shows_what_harness_compare_prints(monkeypatch, chosen_db):
    at = app(monkeypatch, chosen_db, "random")
    assert_clean(at)
    assert at.selectbox(key="significance_metric").value == (TASKS.get(SYNTHETIC_TASK).headline_metric, "test")
    shown = at.dataframe[0].value.reset_index(drop=True)
    printed = cli_json("compare", "--db", str(chosen_db), "--task", SYNTHETIC_TASK, "--model", SYNTHETIC_MODEL,
                       "--format", "json")
    expected = display_table(printed)
    assert len(shown) == len(expected) == 16  # 4 methods x 2 sparsities x (plain, distilled)
    for column in ("method", "settings diff", "adjusted interval", "verdict"):
        assert shown[column].tolist() == expected[column].tolist(), column
    for column in ("n", "mean diff", "raw p", "Holm p", "m"):
        assert shown[column].tolist() == pytest.approx(expected[column].tolist(), rel=1e-12), column
    assert len(at.get("vega_lite_chart")) == 1
    assert any("distill=true" in m.value for m in at.markdown if m.value.startswith("- **"))


def test_claims_page_shows_what_harness_claims_prints(monkeypatch, chosen_db):
    at = app(monkeypatch, chosen_db, "claims")
    assert_clean(at)
    shown = at.dataframe[1].value.reset_index(drop=True)
    printed = cli_json("claims", "--db", str(chosen_db), "--format", "json")
    assert shown["status"].tolist() == printed["status"].tolist()
    assert shown["Holm p"].tolist() == pytest.approx(printed["p_holm"].tolist(), rel=1e-12, nan_ok=True)
    assert set(printed["status"]) == {"holds"}
    summary = at.dataframe[0].value
    assert len(summary) == len(CLAIMS) and all("holds" in cell for cell in summary.to_numpy().ravel() if cell)
    # a margin of 0 can never show equivalence: (a) turns to "cannot tell", as in the CLI
    at.number_input(key="claims_margin").set_value(0.0).run()
    assert_clean(at)
    shown = at.dataframe[1].value
    printed = cli_json("claims", "--db", str(chosen_db), "--format", "json", "--margin", "0")
    assert shown["status"].tolist() == printed["status"].tolist()
    assert set(shown.loc[shown["claim"] == "a", "status"]) == {"cannot tell"}


@pytest.mark.parametrize("page", ["random", "claims"])
def test_verdict_pages_on_empty_and_too_small_databases(monkeypatch, tmp_path, page):
    empty = tmp_path / "empty.db"
    at = app(monkeypatch, empty, page)
    assert not at.exception and any("No results yet" in i.value for i in at.info)
    small = synthetic_results_db(tmp_path / "small.db", claims_jobs(seeds=(0, 1), distilled=False))
    at = app(monkeypatch, small, page)
    assert_clean(at)
    if page == "claims":
        assert set(at.dataframe[1].value["status"]) == {"cannot tell"}
    else:
        assert all("2 seeds" in v or "no interval" in v for v in at.dataframe[0].value["verdict"])


def test_pareto_front():
    points = pd.DataFrame({"speedup": [1.0, 1.5, 2.0, 1.4], "mean": [10.0, 12.0, 20.0, 13.0]})
    assert pareto_front(points, "speedup", "mean", y_higher_is_better=False).tolist() == [True, True, True, False]
    assert pareto_front(points, "speedup", "mean", y_higher_is_better=True).tolist() == [False, False, True, False]
