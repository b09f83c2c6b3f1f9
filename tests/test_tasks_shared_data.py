"""Each real data slice in ../shared/data loads through its task's data_files path, is
formatted, and is scored on real rows (skipped when the shared folder is absent)."""

from __future__ import annotations

import pytest
import torch

from test_tasks_util import SHARED_DATA, eval_settings, local_task, tiny_model, tiny_tokenizer

pytestmark = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared data folder {SHARED_DATA} is absent")
CPU = torch.device("cpu")


def files(name: str, sub: str = "") -> dict[str, str]:
    folder = SHARED_DATA / name / sub if sub else SHARED_DATA / name
    return {split: str(folder / f"{split}.jsonl") for split in ("train", "validation", "test") if (folder / f"{split}.jsonl").is_file()}


def test_samsum_slice():
    task = local_task("samsum", files("samsum"), max_train_examples=64)
    assert [len(task.rows(s)) for s in ("train", "validation", "test")] == [4157, 818, 819]
    examples = task.train_examples(tiny_tokenizer(), 512)
    assert len(examples) == 64
    rows = task.eval_rows("test")[:20]
    perfect, _ = task.score([task.references(r)[0] for r in rows], rows)
    assert all(value == pytest.approx(100.0) for value in perfect.values())
    result = task.evaluate(tiny_model(), tiny_tokenizer(), eval_settings(max_examples=3), CPU)
    assert result.protocol["n_examples"] == 3 and result.samples[0]["reference"].startswith("Hannah needs Betty's number")
    assert result.samples[0]["prompt"].endswith("\nSummary:")


def test_e2e_slice():
    task = local_task("e2e_nlg", files("e2e_nlg"), eval_split="test")
    assert len(task.rows("test")) == 4693 and len(task.eval_rows("test")) == 630  # HF e2e_nlg test: 630 MRs
    rows = task.eval_rows("test")[:50]
    perfect, extra = task.score([r["references"][-1] for r in rows], rows)
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["rougeL"] == pytest.approx(100.0)
    assert extra["references_per_example"]["max"] > 1
    result = task.evaluate(tiny_model(), tiny_tokenizer(), eval_settings(max_examples=3), CPU)
    assert {m.name for m in result.metrics} == {"bleu", "rougeL", "chrf"}


def test_wikisql_lora_slice():
    task = local_task("wikisql", files("wikisql"), max_train_examples=32)
    assert [len(task.rows(s)) for s in ("train", "validation", "test")] == [1000, 100, 100]
    row = task.rows("test")[0]
    assert task.prompt(row) + " " + task.references(row)[0] == row["text"]
    examples = task.train_examples(tiny_tokenizer(), 512)
    assert all(e.labels[-1] == tiny_tokenizer().eos_token_id for e in examples)
    rows = task.eval_rows("test")
    values, extra = task.score([task.references(r)[0] for r in rows], rows)
    assert values == {"exact_match": 100.0, "bleu": pytest.approx(100.0)}
    assert extra["execution_accuracy"] == "not reported: examples carry no table rows"
    result = task.evaluate(tiny_model(), tiny_tokenizer(), eval_settings(max_examples=3), CPU)
    assert "execution_accuracy" not in {m.name for m in result.metrics}
    assert result.protocol["execution_accuracy"].startswith("not reported")


def test_wikisql_structured_records_fail_clearly():
    """The official query records lack their tables: they cannot be formatted, and say so."""
    task = local_task("wikisql", files("wikisql", "structured"), train_split="validation")
    with pytest.raises(ValueError, match="without their tables"):
        task.train_examples(tiny_tokenizer(), 128)


def test_wikitext_slice():
    task = local_task("wikitext", files("wikitext"), max_eval_tokens=600, window=64, stride=32)
    texts = task.texts("test")
    assert len(texts) == 4358 and texts[1] == " = Robert <unk> = \n"
    tokenizer = tiny_tokenizer()
    assert len(task.train_examples(tokenizer, 128)) > 100
    result = task.evaluate(tiny_model(n_positions=64), tokenizer, {"batch_size": 4}, CPU)
    metrics = {m.name: m.value for m in result.metrics}
    assert result.protocol["tokens_scored"] == 599 and 1.0 < metrics["perplexity"] < 10 * len(tokenizer)
    assert result.protocol["data"]["files"]["test"]["sha256"]
