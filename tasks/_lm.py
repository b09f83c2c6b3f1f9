"""Language modeling: training blocks over all tokens and token-level sliding-window
perplexity (the protocol of method-spec.md; not lm-eval's word-level perplexity)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from harness.task import EvalResult, Metric, Task, TrainExample


def chunk_tokens(ids: list[int], block: int) -> list[TrainExample]:
    """Consecutive blocks of ``block`` tokens (the tail shorter than a block is dropped
    unless it is all there is); loss on every token."""
    blocks = [ids[i : i + block] for i in range(0, len(ids) - block + 1, block)] or [ids[:block]]
    return [TrainExample(input_ids=b, labels=list(b)) for b in blocks]


def window_spans(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, scored) per window. Window k covers [begin, end) and scores its last
    ``scored`` tokens, so every token from the second on is scored exactly once and each
    scored token sees at least ``window - stride`` tokens of context (except in the
    first window). stride == window gives non-overlapping windows."""
    spans, previous_end = [], 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + window, n_tokens)
        scored = end - previous_end
        if begin == 0:
            scored -= 1  # the very first token has no context to be predicted from
        if scored > 0:
            spans.append((begin, end, scored))
        previous_end = end
        if end == n_tokens:
            break
    return spans


@torch.no_grad()
def sliding_window_nll(
    model: torch.nn.Module, ids: list[int], window: int, stride: int, batch_size: int, device: torch.device
) -> tuple[float, int]:
    """(total negative log-likelihood in nats, number of scored tokens)."""
    model.eval()
    spans = window_spans(len(ids), window, stride)
    tokens = torch.tensor(ids, dtype=torch.long)
    total_nll, total_scored = 0.0, 0
    # Windows of equal length are batched together (all but possibly the last).
    groups: dict[int, list[tuple[int, int, int]]] = {}
    for span in spans:
        groups.setdefault(span[1] - span[0], []).append(span)
    for length, group in groups.items():
        for start in range(0, len(group), batch_size):
            batch = group[start : start + batch_size]
            inputs = torch.stack([tokens[b:e] for b, e, _ in batch]).to(device)
            logits = model(input_ids=inputs).logits[:, :-1].float()
            targets = inputs[:, 1:]
            nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, L-1)
            positions = torch.arange(length - 1, device=device)
            scored = torch.tensor([s for _, _, s in batch], device=device)
            # prediction j predicts token j+1; keep the last `scored` predictions
            keep = positions.unsqueeze(0) >= (length - 1 - scored).unsqueeze(1)
            total_nll += float((nll * keep).sum())
            total_scored += int(keep.sum())
    return total_nll, total_scored


class LanguageModelingTask(Task):
    """Base for language-modeling tasks: subclasses provide ``texts(split)``."""

    task_type = "language_modeling"
    train_defaults = {"max_length": 1024}
    separator = "\n\n"  # documents of a split are joined by this before tokenization

    def texts(self, split: str) -> list[str]:
        raise NotImplementedError

    def _ids(self, tokenizer: Any, split: str) -> list[int]:
        return tokenizer(self.separator.join(self.texts(split)))["input_ids"]

    def train_examples(self, tokenizer: Any, max_length: int) -> list[TrainExample]:
        examples = chunk_tokens(self._ids(tokenizer, self.params["train_split"]), max_length)
        limit = self.params.get("max_train_examples") or len(examples)
        return examples[:limit]

    def eval_texts(self, tokenizer: Any, max_length: int, max_examples: int) -> list[TrainExample]:
        return chunk_tokens(self._ids(tokenizer, self.params["eval_split"]), max_length)[:max_examples]

    def evaluate(self, model, tokenizer, settings: dict[str, Any], device: torch.device) -> EvalResult:
        context = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", 1024)
        window = min(self.params["window"] or context, context)
        stride = self.params["stride"] or window // 2
        if not 0 < stride <= window:
            raise ValueError(f"stride must be in (0, window={window}], got {stride}")
        ids = self._ids(tokenizer, self.params["eval_split"])
        if self.params.get("max_eval_tokens"):
            ids = ids[: self.params["max_eval_tokens"]]
        nll, scored = sliding_window_nll(model, ids, window, stride, settings["batch_size"], device)
        loss = nll / scored
        split = self.params["eval_split"]
        return EvalResult(
            metrics=[
                Metric("perplexity", math.exp(loss), higher_is_better=False, split=split),
                Metric("loss", loss, higher_is_better=False, split=split),
            ],
            protocol={
                "metric": "token-level sliding-window perplexity",
                "split": split,
                "window": window,
                "stride": stride,
                "tokens_scored": scored,
                "tokenizer": getattr(tokenizer, "name_or_path", type(tokenizer).__name__),
                "vocab_size": len(tokenizer),
                "joined_by": self.separator,
            },
        )
