"""Prompt -> target generation tasks: tokenization with the loss on the target only,
and batched, KV-cached generation for evaluation (one implementation for all tasks)."""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from harness.adapters import context_length
from harness.params import Param
from harness.task import IGNORE_INDEX, EvalResult, Task, TokenizedExample
from harness.types import Metric
from tasks._data import files_identity, hub_identity, load_split

# Parameters every generation task takes (a subclass adds or overrides entries).
COMMON_DEFAULTS: dict[str, Any] = {
    "hub_id": Param(None, "Hugging Face dataset id", kind=str),
    "hub_config": Param(None, "dataset config name", kind=str),
    "revision": Param("refs/convert/parquet", "dataset revision (the hub's parquet conversion: script datasets no "
                                              "longer load)", kind=str),
    "data_files": Param(None, "{split: path} of local JSON lines in the hub schema (None: hub or embedded data)",
                        kind=dict),
    "train_split": Param("train", "split the model is fine-tuned on"),
    "eval_split": Param("test", "split the reported metrics are computed on"),
    "validation_split": Param("validation", "split choices read (its first eval.validation_examples examples)"),
    "max_train_examples": Param(0, "training examples used", minimum=1, off=0, off_doc="all"),
}


def model_context(model: torch.nn.Module) -> int:
    return int(context_length(model.config, default=1024))


# -- generation ---------------------------------------------------------------------------


class _StopAtNewline(StoppingCriteria):
    """Finishes a sequence once it has generated a token containing a newline (single-line
    targets end there anyway; without it an undertrained model runs to max_new_tokens)."""

    def __init__(self, newline_ids: torch.Tensor, prompt_width: int):
        self.newline_ids = newline_ids
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        generated = input_ids[:, self.prompt_width :]
        return torch.isin(generated, self.newline_ids.to(generated.device)).any(dim=1)


def newline_token_ids(tokenizer: Any) -> torch.Tensor:
    """Ids of every vocabulary token whose text contains a newline."""
    size = len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(size)])
    return torch.tensor([i for i, text in enumerate(texts) if "\n" in text], dtype=torch.long)


def generation_config(settings: dict[str, Any], tokenizer: Any) -> GenerationConfig:
    """Decoding settings -> an explicit GenerationConfig (so a checkpoint's own
    generation_config, e.g. sampling defaults, never leaks into an evaluation)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    common = dict(max_new_tokens=int(settings["max_new_tokens"]), do_sample=False, use_cache=True,
                  pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
    if settings.get("decoding", "greedy") == "beam":
        return GenerationConfig(num_beams=int(settings["num_beams"]), length_penalty=float(settings["length_penalty"]),
                                no_repeat_ngram_size=int(settings["no_repeat_ngram_size"]), early_stopping=True, **common)
    return GenerationConfig(num_beams=1, **common)


@torch.no_grad()
def generate_batched(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[list[int]],
    settings: dict[str, Any],
    device: torch.device,
    stop_at_newline: bool = False,
) -> list[str]:
    """Continuations of token-id prompts, in the prompts' order.

    Prompts are sorted by length so each batch holds similar lengths (little padding),
    then left-padded by hand -- new tokens then line up at the right for every row, and
    the tokenizer's padding side is never touched. ``generate`` derives position ids
    from the attention mask, so padding does not shift positions. Text is cut at the end
    of sequence, and at the first newline when ``stop_at_newline``.
    """
    model.eval()
    config = generation_config(settings, tokenizer)
    newline_ids = newline_token_ids(tokenizer) if stop_at_newline else None
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    batch_size = max(int(settings.get("batch_size") or 1), 1)
    outputs: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        width = max(len(prompts[i]) for i in indices)
        input_ids = torch.full((len(indices), width), config.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(indices), width), dtype=torch.long)
        for row, i in enumerate(indices):
            ids = prompts[i]
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        stopping = StoppingCriteriaList([_StopAtNewline(newline_ids, width)]) if newline_ids is not None and len(newline_ids) else None
        generated = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                   generation_config=config, stopping_criteria=stopping)
        for row, i in enumerate(indices):
            text = tokenizer.decode(generated[row, width:], skip_special_tokens=True)
            outputs[i] = (text.split("\n", 1)[0] if stop_at_newline else text).strip()
    return outputs


# -- the task base ------------------------------------------------------------------------


class GenerationTask(Task):
    """Base for prompt -> target tasks. Subclasses implement ``prompt`` and ``references``
    and ``score``; they may override ``train_rows`` / ``eval_rows`` (e.g. grouping)."""

    task_type = "generation"
    defaults: ClassVar[dict[str, Any]] = dict(COMMON_DEFAULTS)
    train_defaults: ClassVar[dict[str, Any]] = {"max_length": 512}
    eval_defaults: ClassVar[dict[str, Any]] = {"max_new_tokens": 64}
    embedded_files: ClassVar[dict[str, str] | None] = None  # default data when data_files is unset
    single_line: ClassVar[bool] = True  # targets never contain "\n": generation stops at one
    separator: ClassVar[str] = ""  # the prompt's fixed ending, kept whole when a prompt is truncated
    truncate_prompt: ClassVar[str] = "end"  # a too-long prompt body loses its "end" or its "start"
    prompt_format: ClassVar[str] = ""  # human-readable description for the protocol
    metric_definitions: ClassVar[dict[str, str]] = {}

    def __init__(self, name: str, params: dict[str, Any]):
        super().__init__(name, params)
        self._rows: dict[str, list[dict[str, Any]]] = {}

    # -- subclass API -----------------------------------------------------------------
    def prompt(self, row: dict[str, Any]) -> str:
        raise NotImplementedError

    def references(self, row: dict[str, Any]) -> list[str]:
        raise NotImplementedError

    def target(self, row: dict[str, Any]) -> str:
        """The training target: the first reference after a space (the prompt ends without one)."""
        return " " + self.references(row)[0].strip()

    def score(self, predictions: list[str], rows: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, Any]]:
        """({metric name: value (all higher-is-better percentages)}, extra protocol entries)."""
        raise NotImplementedError

    def usable(self, row: dict[str, Any]) -> bool:
        """Training rows failing this are skipped (e.g. empty dialogues)."""
        return True

    # -- data -------------------------------------------------------------------------
    def rows(self, split: str) -> list[dict[str, Any]]:
        if split not in self._rows:
            self._rows[split] = load_split(self.params, split, self.embedded_files)
        return self._rows[split]

    def train_rows(self, split: str) -> list[dict[str, Any]]:
        return [row for row in self.rows(split) if self.usable(row)]

    def eval_rows(self, split: str) -> list[dict[str, Any]]:
        return self.rows(split)

    def data_identity(self) -> dict[str, Any]:
        if self.params.get("data_files"):
            return files_identity(self.params["data_files"])
        if self.embedded_files:
            return files_identity(self.embedded_files, embedded=True)
        return hub_identity(self.params)

    # -- tokenization -----------------------------------------------------------------
    def encode_prompt(self, tokenizer: Any, row: dict[str, Any], budget: int) -> list[int]:
        """Prompt ids, at most ``budget`` of them. A long prompt keeps its separator and
        loses tokens from the end (or start) of its body, per ``truncate_prompt``."""
        text = self.prompt(row)
        ids = tokenizer(text)["input_ids"]
        if len(ids) <= budget:
            return ids
        if self.separator and text.endswith(self.separator):
            body = tokenizer(text[: -len(self.separator)])["input_ids"]
            tail = tokenizer(self.separator, add_special_tokens=False)["input_ids"]
        else:
            body, tail = ids, []
        keep = budget - len(tail)
        if keep <= 0:
            return (body + tail)[-budget:]
        return (body[:keep] if self.truncate_prompt == "end" else body[-keep:]) + tail

    def encode_example(self, tokenizer: Any, row: dict[str, Any], max_length: int) -> TokenizedExample:
        """prompt + target + eos, loss on target + eos only; within ``max_length``.

        The target is kept whole when it fits with at least half of ``max_length`` left
        for the prompt (or the whole prompt, if shorter); a longer target is cut (and
        then carries no eos: the sequence did not end there)."""
        target = tokenizer(self.target(row), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        prompt_len = len(tokenizer(self.prompt(row))["input_ids"])
        room = max_length - min(prompt_len, max_length // 2)
        target = target[:room]
        prompt = self.encode_prompt(tokenizer, row, max_length - len(target))
        return TokenizedExample(input_ids=prompt + target, labels=[IGNORE_INDEX] * len(prompt) + target)

    def train_examples(self, tokenizer: Any, max_length: int) -> list[TokenizedExample]:
        rows = self.train_rows(self.params["train_split"])
        if self.params.get("max_train_examples"):
            rows = rows[: self.params["max_train_examples"]]
        return [self.encode_example(tokenizer, row, max_length) for row in rows]

    def eval_texts(self, tokenizer: Any, max_length: int, max_examples: int) -> list[TokenizedExample]:
        rows = self.train_rows(self.params["eval_split"])
        return [self.encode_example(tokenizer, row, max_length) for row in rows[: max_examples or None]]

    # -- evaluation -------------------------------------------------------------------
    def evaluate(self, model: torch.nn.Module, tokenizer: Any, settings: dict[str, Any], device: torch.device,
                 role: str = "test", max_length: int = 0) -> EvalResult:
        split = self.split_for(role)
        limit = settings.get("max_examples") if role == "test" else settings["validation_examples"]
        rows = self.eval_rows(split)[: limit or None]
        max_new = int(settings["max_new_tokens"])
        context = model_context(model)
        if max_new >= context:
            raise ValueError(f"max_new_tokens={max_new} leaves no room for a prompt in a {context}-token context")
        prompts = [self.encode_prompt(tokenizer, row, context - max_new) for row in rows]
        predictions = generate_batched(model, tokenizer, prompts, settings, device, stop_at_newline=self.single_line)
        values, extra = self.score(predictions, rows)
        decoding = {key: settings[key] for key in ("decoding", "num_beams", "length_penalty", "no_repeat_ngram_size") if key in settings}
        protocol = {
            "split": split,
            "n_examples": len(rows),
            "examples": "the first n_examples of the split, in file order",
            "data": self.data_identity(),
            "prompt_format": self.prompt_format,
            "decoding": {**decoding, "max_new_tokens": max_new, "stop": "eos" + (" or first newline" if self.single_line else ""),
                         "batch_size": settings.get("batch_size"), "prompt_truncated_to": context - max_new},
            "metrics": {name: self.metric_definitions.get(name, "") for name in values},
            "scale": "percent (0-100), higher is better",
            **extra,
        }
        samples = [
            {"prompt": tokenizer.decode(prompts[i]), "reference": "\n".join(self.references(rows[i])), "prediction": predictions[i]}
            for i in range(min(int(settings.get("num_samples") or 0), len(rows)))
        ]
        metrics = [Metric(name, value, higher_is_better=True, split=split) for name, value in values.items()]
        return EvalResult(metrics=metrics, samples=samples, protocol=protocol)
