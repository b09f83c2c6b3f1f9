"""results.claims on databases with chosen numbers: which claims hold, which do not, and
when the data cannot tell; `harness claims` prints the same table."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout

import pandas as pd
import pytest

from harness.cli import main
from harness.registry import TASKS
from results.claims import CLAIMS, MIN_PAIRS, claims
from results.stats import tost
from results.store import Store
from tests.dashboard_fixture import (SYNTHETIC_MODEL, SYNTHETIC_TASK, SYNTHETIC_TRAIN, claims_jobs, synthetic_job,
                                     synthetic_results_db)

HEADLINE = TASKS.get(SYNTHETIC_TASK).headline_metric  # what claims read (the fixture calibrates it)


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def table(tmp_path, name: str = "claims.db", margin: float = 0.05, **kwargs) -> pd.DataFrame:
    db = synthetic_results_db(tmp_path / name, claims_jobs(**kwargs))
    return claims(Store(str(db), create=False), SYNTHETIC_TASK, SYNTHETIC_MODEL, margin)


def statuses(frame: pd.DataFrame, claim: str, distilled: bool | None = False) -> list[str]:
    rows = frame[frame["claim"] == claim]
    if distilled is not None and claim != "e":
        rows = rows[rows["settings"].str.contains("distill=true") == distilled]
    return rows["status"].tolist()


def test_every_claim_is_decided_on_enough_seeds(tmp_path):
    frame = table(tmp_path)
    assert set(frame["claim"]) == set(CLAIMS)
    assert frame["metric"].iloc[0] == HEADLINE and frame["split"].iloc[0] == "test"  # the headline metric
    assert set(frame.loc[frame["claim"] == "c", "split"]) == {"analysis"}
    for claim in "abcd":
        # one row per sparsity and group (plain and distilled): never pooled
        assert len(frame[frame["claim"] == claim]) == 4, claim
        assert statuses(frame, claim) == ["holds", "holds"], (claim, frame[frame["claim"] == claim])
    assert statuses(frame, "e") == ["holds", "holds"]
    # settings of the groups used are named
    assert frame.loc[frame["claim"] == "a", "settings"].str.contains("train.distill").all()
    # (a): TOST evidence against the margin relative to dense (5 % of 40 = 2)
    a = frame[frame["claim"] == "a"].iloc[0]
    assert a["margin"] == pytest.approx(0.05 * 40.0, rel=1e-3)
    assert "TOST" in a["evidence"] and "magnitude" in a["compared"] and a["n"] == 3
    assert -a["margin"] < a["low"] < a["high"] < a["margin"]
    # (e) pairs across groups and says so
    e = frame[frame["claim"] == "e"].iloc[0]
    assert "ACROSS groups" in e["evidence"] and "(method, sparsity, seed)" in e["evidence"]
    assert "with: " in e["settings"] and "without: " in e["settings"] and e["estimate"] < 0


def test_holm_runs_over_the_whole_claims_family(tmp_path):
    frame = table(tmp_path)
    decided = frame[frame["n"] >= MIN_PAIRS]
    m = int(frame["m"].iloc[0])
    assert set(frame["m"]) == {m} and m > len(frame) / 2  # one family; (a), (b), (d) make two tests a row
    assert (decided["p_holm"] >= decided["p_raw"] - 1e-15).all()
    assert (decided["p_holm"] <= (m * decided["p_raw"]).clip(upper=1.0) + 1e-12).all()


def test_two_paired_seeds_never_hold(tmp_path):
    frame = table(tmp_path, seeds=(0, 1))
    assert set(frame["status"]) == {"cannot tell"}
    assert frame["reason"].str.contains("fewer than 3 paired seeds").all()
    assert set(frame["m"]) == {0}


def test_random_clearly_worse_does_not_hold(tmp_path):
    frame = table(tmp_path, random_offset=-10.0)
    assert statuses(frame, "a") == ["does not hold", "does not hold"]
    a = frame[frame["claim"] == "a"].iloc[0]
    assert "worse" in a["reason"] and a["estimate"] < -a["margin"]


def test_margin_decides_equivalence(tmp_path):
    # random 1.5 below magnitude (the margin at 5 % is 2): equivalent at 5 %, not at 1 %
    frame = table(tmp_path, random_offset=-1.5, noise=0.05)
    assert statuses(frame, "a") == ["holds", "holds"]
    tight = table(tmp_path, "tight.db", margin=0.01, random_offset=-1.5, noise=0.05)
    assert statuses(tight, "a") == ["does not hold", "does not hold"]  # 1.5 is beyond ±0.4
    middle = table(tmp_path, "middle.db", margin=0.0375, random_offset=-1.5, noise=0.05)  # margin 1.5: undecidable
    assert statuses(middle, "a") == ["cannot tell", "cannot tell"]


def test_absent_methods_cannot_tell_with_the_reason(tmp_path):
    jobs = [j for j in claims_jobs(distilled=False) if j["method"] not in ("gum", "global_movement")]
    db = synthetic_results_db(tmp_path / "nogum.db", jobs)
    frame = claims(Store(str(db), create=False), SYNTHETIC_TASK, SYNTHETIC_MODEL)
    for claim in "cd":
        rows = frame[frame["claim"] == claim]
        assert set(rows["status"]) == {"cannot tell"}
        assert rows["reason"].str.contains("no gum").all()
    e = frame[frame["claim"] == "e"]
    assert set(e["status"]) == {"cannot tell"} and e["reason"].str.contains("no distilled group").all()
    assert statuses(frame, "a") == ["holds", "holds"]


def test_opposite_evidence_does_not_hold(tmp_path):
    """movement best of all and gum worst: (b) and (d) do not hold, (c) neither when gum
    lowers uniqueness."""
    jobs = []
    noise = [0.0, 0.1, -0.1]
    for seed in range(3):
        w = noise[seed]
        jobs.append(synthetic_job("dense", 0.0, seed, {"exact_match": 40.0}))
        values = {"random": 20.0 + w, "magnitude": 21.0 + 2 * w, "movement": 25.0 + 3 * w,
                  "global_movement": 24.0 - w, "gum": 15.0 - 2 * w}
        for method, value in values.items():
            unique = 0.5 + w / 10 if method == "gum" else 0.8 - w / 20
            jobs.append(synthetic_job(method, 0.5, seed, {"exact_match": value, ("uniqueness", "analysis"): unique},
                                      label=method))
    db = synthetic_results_db(tmp_path / "opposite.db", jobs)
    frame = claims(Store(str(db), create=False), SYNTHETIC_TASK, SYNTHETIC_MODEL)
    assert statuses(frame, "b", None) == ["does not hold"]
    assert statuses(frame, "c", None) == ["does not hold"]
    assert statuses(frame, "d", None) == ["does not hold"]
    # (a): best of magnitude/movement is movement (25), random 5 below: beyond the 2 margin
    a = frame[frame["claim"] == "a"].iloc[0]
    assert a["status"] == "does not hold" and a["compared"] == "random − movement"


def test_several_groups_at_one_sparsity_are_evaluated_separately(tmp_path):
    jobs = []
    for steps in (40, 80):
        train = SYNTHETIC_TRAIN | {"steps": steps}
        for job in claims_jobs(distilled=False, sparsities=(0.5,)):
            jobs.append(job | {"train": train})
    db = synthetic_results_db(tmp_path / "groups.db", jobs)
    frame = claims(Store(str(db), create=False), SYNTHETIC_TASK, SYNTHETIC_MODEL)
    a = frame[frame["claim"] == "a"]
    assert sorted(a["settings"]) == ["train.steps=40", "train.steps=80"]
    assert (a["n"] == 3).all()  # 3 seeds per group, not 6 pooled


def test_tost_p_value_in_the_table_is_scipy_tost(tmp_path):
    db = synthetic_results_db(tmp_path / "tost.db", claims_jobs(distilled=False, sparsities=(0.5,)))
    store = Store(str(db), create=False)
    frame = claims(store, SYNTHETIC_TASK, SYNTHETIC_MODEL)
    a = frame[frame["claim"] == "a"].iloc[0]
    rows = pd.DataFrame(claims_jobs(distilled=False, sparsities=(0.5,)))
    value = lambda method: [j["metrics"][HEADLINE] for j in rows.to_dict("records")
                            if j["method"] == method and j["sparsity"] == 0.5]
    diffs = [r - m for r, m in zip(value("random"), value("magnitude"))]
    dense = sum(value_d["metrics"][HEADLINE] for value_d in rows.to_dict("records") if value_d["method"] == "dense") / 3
    assert a["p_raw"] == pytest.approx(tost(diffs, 0.05 * abs(dense)).p, rel=1e-9)
    assert a["p_raw"] <= a["p_holm"] <= min(1.0, a["m"] * a["p_raw"])


def test_claims_cli_prints_the_table_the_page_shows(tmp_path):
    db = synthetic_results_db(tmp_path / "cli.db", claims_jobs())
    code, out, _ = cli("claims", "--db", str(db), "--format", "json", "--margin", "0.05")
    assert code == 0
    printed = pd.DataFrame(json.loads(out))
    expected = claims(Store(str(db), create=False), SYNTHETIC_TASK, SYNTHETIC_MODEL, 0.05)
    assert printed["status"].tolist() == expected["status"].tolist()
    assert printed["p_holm"].tolist() == pytest.approx(expected["p_holm"].tolist(), rel=1e-12, nan_ok=True)
    code, text, _ = cli("claims", "--db", str(db))
    assert code == 0 and "holds" in text and "Holm over m =" in text
    code, _, err = cli("claims", "--db", str(db), "--margin", "-1")
    assert code == 2 and err.startswith("error: --margin")
    code, _, err = cli("claims", "--db", str(db), "--task", "nope")
    assert code == 2 and SYNTHETIC_TASK in err
