"""Shared helpers for the task tests (a tiny tokenizer and model built in-process), and
tests of the generation base: loss masking, truncation, batched generation."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from harness.task import IGNORE_INDEX

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EOT = "<|endoftext|>"
_CORPUS = [
    "Amanda: I baked cookies. Do you want some?\nJerry: Sure!\nSummary: Amanda baked cookies for Jerry.",
    "table: players_1\ncolumns: Player, Team, Goals\nQ: How many goals did Anna Berg score?\nA: SELECT Goals FROM players_1 WHERE Player = 'Anna Berg'",
    "name[The Eagle], eatType[coffee shop], food[Japanese], area[riverside]\nDescription: The Eagle is a coffee shop.",
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.",
    "SELECT COUNT Player FROM t WHERE Team = 'Rovers' AND Goals > '3'",
] * 20


@functools.lru_cache(maxsize=1)
def tiny_tokenizer():
    """A 400-token byte-level BPE in a GPT2TokenizerFast, pad = eos (as the project's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=[EOT], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(_CORPUS, trainer=trainer)
    tokenizer = GPT2TokenizerFast(tokenizer_object=bpe, eos_token=EOT, bos_token=EOT, unk_token=EOT)
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tiny_model(n_positions: int = 256, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=32, n_layer=2, n_head=2, n_inner=64,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    return GPT2LMHeadModel(config).eval()


def eval_settings(**overrides):
    settings = {"max_examples": 6, "batch_size": 4, "decoding": "greedy", "max_new_tokens": 12, "num_samples": 2, "extra_tasks": []}
    settings.update(overrides)
    return settings


def local_task(name: str, files: dict[str, str], **params):
    from harness.registry import TASKS

    cls = TASKS.get(name)
    return cls(name, {**cls.defaults, "data_files": files, **params})


def write_jsonl(path: Path, rows: list[dict]) -> str:
    import json

    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


SAMSUM_ROWS = [
    {"id": str(i), "dialogue": f"Amanda: I baked {i} cookies.\r\nJerry: Sure!", "summary": f"Amanda baked {i} cookies for Jerry."}
    for i in range(8)
]


# -- tests of the generation base --------------------------------------------------------


def test_prompt_tokens_carry_no_loss(tmp_path):
    task = local_task("samsum", {"train": write_jsonl(tmp_path / "t.jsonl", SAMSUM_ROWS)})
    tokenizer = tiny_tokenizer()
    examples = task.train_examples(tokenizer, max_length=128)
    assert len(examples) == len(SAMSUM_ROWS)
    for row, example in zip(SAMSUM_ROWS, examples):
        prompt = tokenizer(task.prompt(row))["input_ids"]
        target = tokenizer(" " + row["summary"])["input_ids"]
        assert example.input_ids == prompt + target + [tokenizer.eos_token_id]
        assert example.labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
        assert example.labels[len(prompt) :] == target + [tokenizer.eos_token_id]
        assert "\r" not in tokenizer.decode(example.input_ids)


def test_truncation_keeps_target_and_separator(tmp_path):
    long = [{"id": "0", "dialogue": " ".join(f"Word{i}" for i in range(300)), "summary": "Short summary here."}]
    task = local_task("samsum", {"train": write_jsonl(tmp_path / "t.jsonl", long)})
    tokenizer = tiny_tokenizer()
    (example,) = task.train_examples(tokenizer, max_length=64)
    assert len(example.input_ids) == 64
    target = tokenizer(" Short summary here.")["input_ids"] + [tokenizer.eos_token_id]
    assert example.labels[-len(target) :] == target and example.input_ids[-len(target) :] == target
    assert sum(label != IGNORE_INDEX for label in example.labels) == len(target)
    text = tokenizer.decode(example.input_ids[: -len(target)])
    assert text.startswith("Word0 Word1") and text.endswith("\nSummary:")  # body cut at its end, separator kept


def test_overlong_target_is_cut_without_eos(tmp_path):
    rows = [{"id": "0", "dialogue": "A: hi", "summary": " ".join(["summary"] * 200)}]
    task = local_task("samsum", {"train": write_jsonl(tmp_path / "t.jsonl", rows)})
    tokenizer = tiny_tokenizer()
    (example,) = task.train_examples(tokenizer, max_length=32)
    prompt = tokenizer(task.prompt(rows[0]))["input_ids"]
    assert len(example.input_ids) == 32 and example.input_ids[: len(prompt)] == prompt
    assert tokenizer.eos_token_id not in example.input_ids


def test_batched_greedy_equals_one_by_one():
    """Left padding + position ids from the mask: batching must not change greedy output."""
    from tasks._generation import generate_batched

    tokenizer, model = tiny_tokenizer(), tiny_model()
    texts = ["Amanda: hi", "table: players_1\ncolumns: Player, Team\nQ: Who?\nA:", "The quick brown fox", "name[The Eagle]"]
    prompts = [tokenizer(t)["input_ids"] for t in texts]
    settings = eval_settings(max_new_tokens=10)
    batched = generate_batched(model, tokenizer, prompts, {**settings, "batch_size": 4}, torch.device("cpu"))
    single = generate_batched(model, tokenizer, prompts, {**settings, "batch_size": 1}, torch.device("cpu"))
    assert batched == single
    assert tokenizer.padding_side == "right"  # the tokenizer was not modified


def test_beam_search_runs_and_stops_at_newline():
    from tasks._generation import generate_batched

    tokenizer, model = tiny_tokenizer(), tiny_model()
    prompts = [tokenizer(t)["input_ids"] for t in ["Amanda: hi", "The quick brown"]]
    settings = eval_settings(decoding="beam", num_beams=3, length_penalty=0.9, no_repeat_ngram_size=4, max_new_tokens=8)
    outputs = generate_batched(model, tokenizer, prompts, settings, torch.device("cpu"), stop_at_newline=True)
    assert len(outputs) == 2 and all("\n" not in o for o in outputs)


def test_prompt_fits_context_with_new_tokens(tmp_path):
    rows = [{"id": "0", "dialogue": " ".join(f"Word{i}" for i in range(400)), "summary": "S."}]
    task = local_task("samsum", {"test": write_jsonl(tmp_path / "t.jsonl", rows)})
    tokenizer, model = tiny_tokenizer(), tiny_model(n_positions=64)
    result = task.evaluate(model, tokenizer, eval_settings(max_new_tokens=16), torch.device("cpu"))
    assert result.protocol["decoding"]["prompt_truncated_to"] == 48
    with pytest.raises(ValueError, match="max_new_tokens"):
        task.evaluate(model, tokenizer, eval_settings(max_new_tokens=64), torch.device("cpu"))


def test_eval_texts_use_the_eval_split_with_the_same_masking(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", SAMSUM_ROWS[:2])
    test = write_jsonl(tmp_path / "test.jsonl", SAMSUM_ROWS[2:])
    task = local_task("samsum", {"train": train, "test": test})
    tokenizer = tiny_tokenizer()
    texts = task.eval_texts(tokenizer, 128, max_examples=3)
    assert len(texts) == 3
    assert texts[0] == task.encode_example(tokenizer, SAMSUM_ROWS[2], 128)
    assert texts[0].labels[0] == IGNORE_INDEX and texts[0].labels[-1] == tokenizer.eos_token_id
