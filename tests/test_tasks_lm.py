"""Perplexity: exact on a uniform model, identical to the standard sliding-window recipe,
and every token from the second on scored once (tasks/_lm.py's documented contract)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tasks._lm import sliding_window_nll, window_spans
from test_tasks_util import local_task, tiny_model, tiny_tokenizer, write_jsonl

TEXT_ROWS = [{"text": ""}, {"text": " = Valkyria Chronicles III = \n"}, {"text": ""},
             {"text": " The quick brown fox jumps over the lazy dog . Amanda baked cookies . \n"}] * 6


class Uniform(torch.nn.Module):
    """All-zero logits: every token has probability 1/V, so perplexity is exactly V."""

    def __init__(self, vocab: int, n_positions: int):
        super().__init__()
        self.vocab = vocab
        self.config = SimpleNamespace(n_positions=n_positions)

    def forward(self, input_ids: torch.Tensor, **kwargs):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab))


def test_uniform_model_perplexity_is_vocab_size(tmp_path):
    task = local_task("wikitext", {"test": write_jsonl(tmp_path / "t.jsonl", TEXT_ROWS)}, window=32, stride=16)
    tokenizer = tiny_tokenizer()
    result = task.evaluate(Uniform(len(tokenizer), 64), tokenizer, {"batch_size": 3}, torch.device("cpu"))
    metrics = {m.name: m for m in result.metrics}
    assert metrics["perplexity"].value == pytest.approx(len(tokenizer), rel=1e-6)  # float32 log-softmax
    assert metrics["perplexity"].higher_is_better is False
    ids = tokenizer("\n\n".join(row["text"] for row in TEXT_ROWS))["input_ids"]  # rows joined by blank lines
    assert result.protocol["tokens_scored"] == len(ids) - 1
    assert result.protocol["window"] == 32 and result.protocol["stride"] == 16 and result.protocol["data"]["source"] == "local"


def hf_recipe_nll(model, ids: list[int], window: int, stride: int) -> tuple[float, int]:
    """The transformers perplexity guide's loop, written independently of tasks/_lm.py."""
    tokens = torch.tensor([ids])
    nll, count, previous_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + window, len(ids))
        target_len = end - previous_end
        inputs = tokens[:, begin:end]
        targets = inputs.clone()
        targets[:, :-target_len] = -100
        with torch.no_grad():
            loss = model(input_ids=inputs, labels=targets).loss
        scored = int((targets[:, 1:] != -100).sum())  # the model shifts labels by one internally
        nll += float(loss) * scored
        count += scored
        previous_end = end
        if end == len(ids):
            break
    return nll, count


@pytest.mark.parametrize("stride", [3, 8, 16])
def test_sliding_window_matches_standard_recipe(stride):
    tokenizer, model = tiny_tokenizer(), tiny_model(n_positions=64)
    ids = tokenizer(" ".join(row["text"] for row in TEXT_ROWS))["input_ids"][:101]
    nll, count = sliding_window_nll(model, ids, window=16, stride=stride, batch_size=4, device=torch.device("cpu"))
    expected_nll, expected_count = hf_recipe_nll(model, ids, 16, stride)
    assert count == expected_count
    assert nll == pytest.approx(expected_nll, rel=1e-5)


def test_one_window_equals_plain_loss():
    tokenizer, model = tiny_tokenizer(), tiny_model(n_positions=64)
    ids = tokenizer("The quick brown fox jumps over the lazy dog.")["input_ids"]
    nll, count = sliding_window_nll(model, ids, window=64, stride=32, batch_size=1, device=torch.device("cpu"))
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss
    assert count == len(ids) - 1 and nll / count == pytest.approx(float(loss), rel=1e-5)


def scored_positions(n: int, window: int, stride: int) -> list[int]:
    """Token positions a window actually predicts: its last `scored`, and never its first."""
    positions = []
    for begin, end, scored in window_spans(n, window, stride):
        positions += [p for p in range(end - scored, end) if p > begin]
    return positions


@pytest.mark.parametrize("n,window,stride", [(10, 4, 2), (10, 4, 3), (37, 8, 5), (8, 8, 4), (3, 8, 4), (64, 16, 1)])
def test_sliding_windows_score_each_token_once(n, window, stride):
    assert sorted(scored_positions(n, window, stride)) == list(range(1, n))
    for begin, end, scored in window_spans(n, window, stride):  # each scored token keeps its context
        if begin > 0:
            assert end - scored - begin >= window - stride


@pytest.mark.parametrize("n,window", [(10, 4), (33, 8)])
def test_non_overlapping_windows_skip_each_window_start(n, window):
    # Documented: with stride == window a window's first token has no context inside the
    # window, so it is not scored, and the span's count says so.
    spans = window_spans(n, window, window)
    assert sorted(scored_positions(n, window, window)) == [p for p in range(1, n) if p % window]
    assert sum(scored for _, _, scored in spans) == len(scored_positions(n, window, window))
