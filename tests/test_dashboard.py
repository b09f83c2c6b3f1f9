"""Every dashboard page under Streamlit's AppTest, against a database from a tiny real
matrix; the numbers shown are checked against the database directly."""

from __future__ import annotations

import math
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine, text
from streamlit.testing.v1 import AppTest

from dashboard.stats import paired_differences, pareto_front, t_quantile
from tests.conftest import REPO, write_matrix
from tests.dashboard_fixture import MISSING_MODEL, SEEDS, SPARSITIES, TASK, build_results_db, methods, tiny_results_matrix

APP = str(REPO / "dashboard" / "app.py")
PAGES = ["leaderboard", "curves", "redundancy", "random", "job"]
T_975_DF2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (3 seeds)


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
    values: dict[tuple[str, float], list[float]] = {}
    for label, sparsity, value in sql(results_db, "select j.method_label, j.sparsity, m.value from metrics m "
                                                  "join jobs j on j.id = m.job_id where m.name = 'bleu'"):
        values.setdefault((label, sparsity), []).append(value)
    assert len(values) == 1 + len(methods()) * len(SPARSITIES)
    best = {s: max(statistics.mean(v) for (l, s2), v in values.items() if s2 == s) for s in SPARSITIES}
    for (label, sparsity), seed_values in values.items():
        mean, std = statistics.mean(seed_values), statistics.stdev(seed_values)
        cell = table.loc[label, f"s={sparsity:g}"]
        assert cell.startswith(f"{mean:.4g} ± {std:.2g} ({len(SEEDS)})"), (label, sparsity, cell)
        assert cell.endswith("★") == (sparsity > 0 and math.isclose(mean, best[sparsity])), (label, sparsity, cell)
    assert list(table.index)[0] == "dense"
    assert [m.value for m in at.metric if m.label == "jobs done"] == [str(len(values) * len(SEEDS))]
    assert at.get("download_button")  # CSV download offered


def test_failed_jobs_are_visible_with_their_traceback(monkeypatch, results_db):
    at = app(monkeypatch, results_db, model=MISSING_MODEL)
    assert [m.value for m in at.metric if m.label == "jobs failed"] == ["1"]
    assert any("failed" in e.value for e in at.error)
    failed = at.dataframe[-1].value
    assert "could not be loaded from the Hugging Face hub" in failed["error"].iloc[0]
    at.sidebar.radio(key="page").set_value("job").run()
    assert not at.exception
    assert any("Traceback" in c.value for c in at.code)


def expected_verdicts(db: Path, metric: str, higher_is_better: bool) -> dict[tuple[str, float], str]:
    """Paired (same seed and sparsity) differences to random, t interval, from the database."""
    rows = sql(db, "select j.method_label, j.sparsity, j.seed, m.value from metrics m join jobs j on j.id = m.job_id "
                   "where m.name = :metric and j.status = 'done' and j.sparsity > 0", metric=metric)
    random = {(s, seed): v for label, s, seed, v in rows if label == "random"}
    diffs: dict[tuple[str, float], list[float]] = {}
    for label, sparsity, seed, value in rows:
        if label != "random":
            diffs.setdefault((label, sparsity), []).append(value - random[(sparsity, seed)])
    verdicts = {}
    for key, d in diffs.items():
        mean, half = statistics.mean(d), T_975_DF2 * statistics.stdev(d) / math.sqrt(len(d))
        if mean - half <= 0 <= mean + half:
            verdicts[key] = f"not distinguishable from random with {len(d)} seeds"
        else:
            verdicts[key] = f"{'better' if (mean > 0) == higher_is_better else 'worse'} than random (95% CI, 3 seeds)"
    return verdicts


@pytest.mark.parametrize("metric, split, higher", [("bleu", "test", True), ("train_loss_final", "train", False)])
def test_significance_page_gives_the_verdicts_the_data_implies(monkeypatch, results_db, metric, split, higher):
    at = choose(app(monkeypatch, results_db, "random"), "significance_metric", metric, split)
    assert_clean(at)
    lines = [m.value for m in at.markdown if m.value.startswith("- **")]
    expected = expected_verdicts(results_db, metric, higher)
    assert len(lines) == len(expected) == (len(methods()) - 1) * len(SPARSITIES)
    for (label, sparsity), verdict in expected.items():
        line = next(l for l in lines if l.startswith(f"- **{label}** at sparsity {sparsity:g}:"))
        assert verdict in line, (line, verdict)


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
    done = (1 + len(methods()) * len(SPARSITIES)) * len(SEEDS) + 2  # + seed 3's dense and random jobs
    assert [m.value for m in at.metric if m.label == "jobs done"] == [str(done)]


# -- the arithmetic, on known numbers -------------------------------------------------------
def test_t_quantile_known_values():
    assert t_quantile(0.975, 2) == pytest.approx(T_975_DF2, rel=1e-9)
    assert t_quantile(0.975, 1) == pytest.approx(12.706204736, rel=1e-8)
    assert t_quantile(0.975, 1000) == pytest.approx(1.962339, rel=1e-5)
    assert t_quantile(0.025, 5) == pytest.approx(-2.570581836, rel=1e-8)


def test_paired_differences_verdicts_respect_direction():
    rows = []
    for seed, (r, good, same, one) in enumerate([(1.0, 2.0, 1.5, 5.0), (1.1, 2.1, 0.6, None), (0.9, 2.05, 1.1, None)]):
        key = f"k{seed}"
        rows += [("random", 0.5, key, r), ("good", 0.5, key, good), ("same", 0.5, key, same)]
        if one is not None:
            rows.append(("one", 0.5, key, one))
    frame = pd.DataFrame(rows, columns=["method_label", "sparsity", "pair_key", "value"])
    up = paired_differences(frame, "random", higher_is_better=True).set_index("method_label")["verdict"]
    assert up["good"] == "better than random (95% CI, 3 seeds)"
    assert up["same"] == "not distinguishable from random with 3 seeds"
    assert up["one"].startswith("1 paired seed")
    down = paired_differences(frame, "random", higher_is_better=False).set_index("method_label")["verdict"]
    assert down["good"] == "worse than random (95% CI, 3 seeds)"


def test_pareto_front():
    points = pd.DataFrame({"speedup": [1.0, 1.5, 2.0, 1.4], "mean": [10.0, 12.0, 20.0, 13.0]})
    assert pareto_front(points, "speedup", "mean", y_higher_is_better=False).tolist() == [True, True, True, False]
    assert pareto_front(points, "speedup", "mean", y_higher_is_better=True).tolist() == [False, False, True, False]
