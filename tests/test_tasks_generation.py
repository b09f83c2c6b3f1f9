"""Generation tasks end to end on a tiny random model, E2E multi-reference grouping, the
registry entries, and lm-eval offline through a local YAML task."""

from __future__ import annotations

import json

import pytest
import torch

from harness.params import default_of
from harness.registry import TASKS
from test_tasks_util import SAMSUM_ROWS, eval_settings, local_task, tiny_model, tiny_tokenizer, write_jsonl

CPU = torch.device("cpu")
E2E_ROWS = [
    {"meaning_representation": "name[The Eagle], eatType[pub]", "human_reference": "The Eagle is a pub."},
    {"meaning_representation": "name[The Eagle], eatType[pub]", "human_reference": "There is a pub called The Eagle."},
    {"meaning_representation": "name[Alimentum], area[city centre]", "human_reference": "Alimentum is in the city centre."},
    {"meaning_representation": "name[The Eagle], eatType[pub]", "human_reference": "A pub, The Eagle."},
]
SQL_TABLE = {"id": "1-1", "header": ["Player", "Team", "Goals"], "types": ["text", "text", "real"],
             "rows": [["Anna Berg", "Rovers", "3"], ["Ben Costa", "City", "7"], ["Leo Meyer", "Rovers", "1"]]}
SQL_ROWS = [
    {"question": "How many goals did Anna Berg score?", "table": SQL_TABLE,
     "sql": {"human_readable": "SELECT Goals FROM table WHERE Player = Anna Berg", "sel": 2, "agg": 0,
             "conds": {"column_index": [0], "operator_index": [0], "condition": ["Anna Berg"]}}},
    {"question": "How many Rovers players are there?", "table": SQL_TABLE,
     "sql": {"human_readable": "SELECT COUNT Player FROM table WHERE Team = Rovers", "sel": 0, "agg": 3,
             "conds": {"column_index": [1], "operator_index": [0], "condition": ["Rovers"]}}},
]


def test_e2e_groups_references_by_meaning_representation(tmp_path):
    task = local_task("e2e_nlg", {"test": write_jsonl(tmp_path / "e.jsonl", E2E_ROWS)})
    rows = task.eval_rows("test")
    assert [r["meaning_representation"] for r in rows] == ["name[The Eagle], eatType[pub]", "name[Alimentum], area[city centre]"]
    assert rows[0]["references"] == ["The Eagle is a pub.", "There is a pub called The Eagle.", "A pub, The Eagle."]
    predictions = ["There is a pub called The Eagle.", "Alimentum is in the city centre."]
    grouped, _ = task.score(predictions, rows)
    first_only, _ = task.score(predictions, [{"meaning_representation": r["meaning_representation"],
                                              "references": r["references"][:1]} for r in rows])
    # the prediction equals the 2nd reference of the first MR: only multi-reference scoring sees it
    assert grouped["bleu"] == pytest.approx(100.0) and first_only["bleu"] < 80.0
    assert grouped["rougeL"] == pytest.approx(100.0) and first_only["rougeL"] < grouped["rougeL"]
    assert grouped["chrf"] > first_only["chrf"]
    # training uses every (MR, reference) row
    assert len(task.train_rows("test")) == len(E2E_ROWS)


@pytest.mark.parametrize("name,rows,expected", [
    ("samsum", SAMSUM_ROWS, {"rouge1", "rouge2", "rougeL", "rougeLsum"}),
    ("e2e_nlg", E2E_ROWS, {"bleu", "rougeL", "chrf"}),
    ("wikisql", SQL_ROWS, {"exact_match", "bleu", "execution_accuracy"}),
])
def test_evaluate_on_tiny_model(tmp_path, name, rows, expected):
    task = local_task(name, {"test": write_jsonl(tmp_path / "d.jsonl", rows)})
    result = task.evaluate(tiny_model(), tiny_tokenizer(), eval_settings(), CPU)
    assert {m.name for m in result.metrics} == expected
    assert all(m.higher_is_better and 0.0 <= m.value <= 100.0 and m.split == "test" for m in result.metrics)
    assert len(result.samples) == 2 and set(result.samples[0]) == {"prompt", "reference", "prediction"}
    assert result.protocol["decoding"]["decoding"] == "greedy" and result.protocol["data"]["source"] == "local"
    json.dumps(result.protocol)  # stored with the results: must serialize


@pytest.mark.parametrize("name,expected", [
    ("summ-embedded", {"rouge1", "rouge2", "rougeL", "rougeLsum"}),
    ("sql-embedded", {"exact_match", "bleu", "execution_accuracy"}),
])
def test_embedded_tasks_evaluate(name, expected):
    cls = TASKS.get(name)
    task = cls(name, dict(cls.defaults))
    settings = eval_settings(max_examples=4, decoding="beam", num_beams=2, length_penalty=0.9, no_repeat_ngram_size=4, max_new_tokens=8)
    result = task.evaluate(tiny_model(), tiny_tokenizer(), settings, CPU)
    assert {m.name for m in result.metrics} == expected
    assert result.protocol["n_examples"] == 4 and result.protocol["data"]["source"] == "embedded"
    assert result.protocol["decoding"]["num_beams"] == 2
    assert ("generated_data" in result.protocol) == cls.generated_data
    examples = task.train_examples(tiny_tokenizer(), 256)
    assert len(examples) > 1000 and all(len(e.input_ids) <= 256 for e in examples)


def test_registry_lists_the_tasks_with_descriptions():
    names = set(TASKS.names())
    assert {"wikitext", "samsum", "wikisql", "e2e_nlg", "lmeval:*", "summ-embedded", "sql-embedded"} <= names
    assert TASKS.get("lmeval:arc_easy").task_type == "evaluation_only"
    assert TASKS.get("sql-embedded").generated_data and "GENERATED" in TASKS.get("sql-embedded").describe()
    for name, description in TASKS.describe():
        assert description, name


def test_data_identity_never_downloads():
    for name in ("wikitext", "samsum", "wikisql", "e2e_nlg"):
        cls = TASKS.get(name)
        identity = cls(name, dict(cls.defaults)).data_identity()
        assert identity["source"] == "hub" and identity["hub_id"] and identity["revision"]
    assert default_of(TASKS.get("samsum").defaults["revision"]) == "refs/convert/parquet"
    lm = TASKS.get("lmeval:hellaswag")("lmeval:hellaswag", dict(TASKS.get("lmeval:*").defaults)).data_identity()
    assert lm["source"] == "lm-eval" and lm["task"] == "hellaswag" and lm["lm_eval_version"]


def test_wikisql_rejects_rows_without_a_table(tmp_path):
    rows = [{"question": "q", "sql": {"sel": 0, "agg": 0, "conds": {"column_index": [], "operator_index": [], "condition": []}}}]
    task = local_task("wikisql", {"train": write_jsonl(tmp_path / "s.jsonl", rows)})
    with pytest.raises(ValueError, match="context/completion or question \\+ table"):
        task.train_examples(tiny_tokenizer(), 128)


def test_lm_eval_local_yaml_task(tmp_path):
    pytest.importorskip("lm_eval")
    docs = [{"question": "The quick brown fox jumps over the lazy", "choices": ["dog", "SELECT"], "label": 0},
            {"question": "Amanda baked", "choices": ["cookies", "Goals"], "label": 0},
            {"question": "SELECT COUNT Player FROM t WHERE Team =", "choices": ["'Rovers'", "Jerry"], "label": 0}]
    data = write_jsonl(tmp_path / "docs.jsonl", docs)
    (tmp_path / "tiny_mc.yaml").write_text(
        "task: tiny_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: " + data + "\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: label\nmetric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n", encoding="utf-8")
    cls = TASKS.get("lmeval:tiny_mc")
    task = cls("lmeval:tiny_mc", {**cls.defaults, "include_path": str(tmp_path)})
    state = torch.get_rng_state()
    result = task.evaluate(tiny_model(), tiny_tokenizer(), {"batch_size": 2, "max_examples": 2}, CPU)
    assert torch.equal(torch.get_rng_state(), state)  # lm-eval's seeding did not leak
    (metric,) = result.metrics
    assert metric.name == "tiny_mc/acc" and metric.higher_is_better and 0.0 <= metric.value <= 1.0
    assert result.protocol["n_samples"]["tiny_mc"]["effective"] == 2 and result.protocol["limit"] == 2
    assert set(task.data_identity()["files"]) == {"docs.jsonl", "tiny_mc.yaml"}
