"""Distillation: the loss against a direct computation; the teacher is a job, run once."""

from __future__ import annotations

import json
import math

import pytest
import torch
from sqlalchemy import create_engine, text

import harness.distill
from harness.cli import main
from harness.config import load_matrix
from harness.distill import distillation_loss
from harness.spec import teacher_spec
from harness.task import IGNORE_INDEX
from tests.conftest import write_matrix


def test_kd_loss_equals_a_direct_computation():
    torch.manual_seed(0)
    batch, length, vocab, temperature = 3, 7, 11, 2.0
    student, teacher = torch.randn(batch, length, vocab), torch.randn(batch, length, vocab)
    labels = torch.randint(0, vocab, (batch, length))
    labels[0, :3] = IGNORE_INDEX  # a prompt: no loss
    labels[1, 5:] = IGNORE_INDEX  # padding: no loss
    kd_sum, ce_sum, count = 0.0, 0.0, 0
    for b in range(batch):
        for t in range(length - 1):  # position t predicts token t + 1
            target = int(labels[b, t + 1])
            if target == IGNORE_INDEX:
                continue
            p_t = torch.softmax(teacher[b, t] / temperature, -1)
            p_s = torch.softmax(student[b, t] / temperature, -1)
            kd_sum += float((p_t * (p_t.log() - p_s.log())).sum()) * temperature**2
            ce_sum += -float(torch.log_softmax(student[b, t], -1)[target])
            count += 1
    expected = 0.3 * kd_sum / count + 0.7 * ce_sum / count  # per target token, both terms
    assert distillation_loss(student, teacher, labels, 0.3, 0.7, temperature).item() == pytest.approx(expected, rel=1e-5)
    # A student equal to its teacher has zero KD: only the CE term remains.
    same = distillation_loss(teacher, teacher, labels, 1.0, 0.0, temperature).item()
    assert same == pytest.approx(0.0, abs=1e-6)


@pytest.fixture
def distill_matrix(tiny_matrix) -> dict:
    tiny_matrix["train"].update(distill=True, distill_alpha_kd=0.7, distill_temperature=3.0, steps=6)
    tiny_matrix["eval"].update(speed_repeats=0, analysis_examples=0)
    return tiny_matrix


def test_teacher_is_the_dense_job_of_the_matrix(tmp_path, distill_matrix):
    jobs = load_matrix(write_matrix(tmp_path, distill_matrix)).jobs
    dense = [j for j in jobs if j.method["name"] == "dense"]
    students = [j for j in jobs if j.method["name"] != "dense"]
    assert len(dense) == 1 and "distill" not in dense[0].train  # the teacher itself does not distill
    assert all(s.train["distill"] and s.train["distill_alpha_kd"] == 0.7 for s in students)
    assert {teacher_spec(s) for s in students} == set(dense)
    assert teacher_spec(dense[0]) is None
    # Without distillation the keys are absent altogether: old jobs keep their hashes.
    distill_matrix["train"]["distill"] = False
    plain = load_matrix(write_matrix(tmp_path, distill_matrix, "plain.yaml")).jobs
    assert all("distill_alpha_kd" not in j.train for j in plain)
    assert {j.spec_hash for j in plain if j.method["name"] == "dense"} == {dense[0].spec_hash}


def rows(db, query):
    with create_engine(f"sqlite:///{db}").connect() as connection:
        return [tuple(r) for r in connection.execute(text(query))]


def test_teacher_runs_once_for_several_students(tmp_path, distill_matrix, monkeypatch):
    calls = []
    original = harness.distill.distillation_loss
    monkeypatch.setattr(harness.distill, "distillation_loss", lambda *a: calls.append(a[3:]) or original(*a))
    distill_matrix["dense_baseline"] = False  # the teacher is scheduled as a dependency anyway
    db = tmp_path / "r.db"
    assert main(["run", "--matrix", str(write_matrix(tmp_path, distill_matrix)), "--db", str(db)]) == 0
    jobs = rows(db, "select method, status, attempt, protocol_json from jobs order by id")
    assert [j[:3] for j in jobs] == [("dense", "done", 1), ("random", "done", 1), ("magnitude", "done", 1)]
    assert len(calls) == 2 * 6 and set(calls) == {(0.7, 0.5, 3.0)}  # every student step distilled
    teacher_dir = json.loads(jobs[0][3])["artifacts"]
    assert (tmp_path / "r.artifacts").is_dir() and teacher_dir.startswith(str((tmp_path / "r.artifacts").resolve()))
    for (loss,) in rows(db, "select value from metrics where name = 'train_loss_final'"):
        assert math.isfinite(loss)

    # A new student later: the teacher, done in the database, is reused from its saved model.
    distill_matrix["methods"] = ["movement"]
    calls.clear()
    assert main(["run", "--matrix", str(write_matrix(tmp_path, distill_matrix, "more.yaml")), "--db", str(db)]) == 0
    assert rows(db, "select method, attempt from jobs where method in ('dense', 'movement') order by id") == [
        ("dense", 1), ("movement", 1)]
    assert len(calls) == 6
