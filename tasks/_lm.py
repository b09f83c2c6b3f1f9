"""Language modeling: training blocks over all tokens and token-level sliding-window
perplexity (the protocol of method-spec.md; not lm-eval's word-level perplexity)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from harness.adapters import context_length
from harness.params import Param
from harness.task import EvalResult, Task, TokenizedExample
from harness.types import Metric


def chunk_tokens(ids: list[int], block: int) -> list[TokenizedExample]:
    """Consecutive blocks of ``block`` tokens (the tail shorter than a block is dropped
    unless it is all there is); loss on every token."""
    blocks = [ids[i : i + block] for i in range(0, len(ids) - block + 1, block)] or [ids[:block]]
    return [TokenizedExample(input_ids=b, labels=list(b)) for b in blocks]


def window_spans(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, scored) per window. Window k covers [begin, end) and scores its last
    ``scored`` tokens. With stride < window every token from the second on is scored
    exactly once, with at least ``window - stride`` tokens of context (except in the first
    window). With stride == window (non-overlapping windows) a window's first token has
    no context inside the window and is not scored, as in the usual chunked evaluation."""
    spans, previous_end = [], 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + window, n_tokens)
        # a window predicts at most end - begin - 1 tokens (its first has no context)
        scored = min(end - previous_end, end - begin - 1)
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
            scored = torch.tensor([s for _, _, s in batch], device=device)
            keep = int(scored.max())  # only the last `keep` predictions are ever scored
            logits = _last_logits(model, inputs, keep + 1)[:, -keep - 1 : -1].float()
            targets = inputs[:, length - keep :]
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
            mask = torch.arange(keep, device=device).unsqueeze(0) >= (keep - scored).unsqueeze(1)
            total_nll += float((nll.view(len(batch), keep) * mask).sum())
            total_scored += int(mask.sum())
    return total_nll, total_scored


def _last_logits(model: torch.nn.Module, inputs: torch.Tensor, count: int) -> torch.Tensor:
    """Logits of the last ``count`` positions; models that support ``logits_to_keep``
    skip the output layer elsewhere (it dominates the cost of small models)."""
    try:
        return model(input_ids=inputs, logits_to_keep=count).logits
    except TypeError:
        return model(input_ids=inputs).logits[:, -count:]


class LanguageModelingTask(Task):
    """Base for language-modeling tasks: subclasses provide ``texts(split)``."""

    task_type = "language_modeling"
    headline_metric = "perplexity"
    headline_metrics = ("perplexity",)
    # Parameters every language-modeling task has; subclasses add their data source.
    lm_defaults: dict[str, Any] = {
        "train_split": Param("train", "split the model is fine-tuned on"),
        "eval_split": Param("test", "split the reported perplexity is computed on"),
        "validation_split": Param("validation", "split choices read (capped by eval.validation_examples blocks)"),
        "max_train_examples": Param(0, "training blocks used", minimum=1, off=0, off_doc="all"),
        "max_eval_tokens": Param(0, "test tokens scored", minimum=2, off=0, off_doc="the whole split"),
        "window": Param(0, "sliding-window length", minimum=2, off=0, off_doc="the model's context length"),
        "stride": Param(0, "sliding-window stride", minimum=1, off=0, off_doc="window / 2"),
    }
    train_defaults = {"max_length": 1024}
    separator = "\n\n"  # documents of a split are joined by this before tokenization

    def texts(self, split: str) -> list[str]:
        raise NotImplementedError

    def _ids(self, tokenizer: Any, split: str) -> list[int]:
        # A job tokenizes a split up to three times (train, evaluate, analysis): once is enough.
        cache = self.__dict__.setdefault("_token_cache", {})
        key = (id(tokenizer), split)
        if key not in cache:
            cache[key] = tokenizer(self.separator.join(self.texts(split)), verbose=False)["input_ids"]
        return cache[key]

    def train_examples(self, tokenizer: Any, max_length: int) -> list[TokenizedExample]:
        examples = chunk_tokens(self._ids(tokenizer, self.params["train_split"]), max_length)
        limit = self.params.get("max_train_examples") or len(examples)
        return examples[:limit]

    def eval_texts(self, tokenizer: Any, max_length: int, max_examples: int) -> list[TokenizedExample]:
        return chunk_tokens(self._ids(tokenizer, self.params["eval_split"]), max_length)[:max_examples]

    def evaluate(self, model, tokenizer, settings: dict[str, Any], device: torch.device, role: str = "test",
                 max_length: int = 0) -> EvalResult:
        context = context_length(model.config, default=1024)
        window = min(self.params["window"] or context, context)
        stride = self.params["stride"] or window // 2
        if not 0 < stride <= window:
            raise ValueError(f"stride must be in (0, window={window}], got {stride}")
        split = self.split_for(role)
        ids = self._ids(tokenizer, split)
        limit = self.params.get("max_eval_tokens") if role == "test" else settings["validation_examples"] * (max_length or window)
        if limit:
            ids = ids[:limit]
        nll, scored = sliding_window_nll(model, ids, window, stride, settings["batch_size"], device)
        loss = nll / scored
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
