"""Batched vs one-at-a-time greedy generation on the embedded model (tokens/s, same run).

    python benchmarks/bench_generation.py [--model DIR] [--prompts 32] [--batch 8] [--max-new-tokens 48]

Both modes run tasks._generation.generate_batched (what every generation task uses) on
the same prompts from the sql-embedded test split. Decoding is fixed-length (no newline
stop; only eos ends a sequence early), so both modes decode the same tokens; new tokens
are counted from ``generate``'s output (up to and including eos). Greedy outputs must be
identical, so the ratio of tokens/s is the ratio of wall times. Prints one line per mode
and the ratio (target: batch 8 >= 4x batch 1).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from harness.registry import TASKS  # noqa: E402
from tasks._generation import generate_batched, model_context  # noqa: E402


class CountNewTokens:
    """Wraps ``model.generate`` to count the tokens it generates per row (until eos)."""

    def __init__(self, model, eos: int):
        self.generate, self.eos, self.count = model.generate, eos, 0
        model.generate = self

    def __call__(self, input_ids, **kwargs):
        output = self.generate(input_ids=input_ids, **kwargs)
        for row in output[:, input_ids.shape[1] :].tolist():
            self.count += row.index(self.eos) + 1 if self.eos in row else len(row)
        return output


def timed(model, tokenizer, prompts, settings, repeats: int, counter: CountNewTokens) -> tuple[float, list[str], int]:
    best, outputs = float("inf"), []
    for _ in range(repeats):
        counter.count = 0
        start = time.perf_counter()
        outputs = generate_batched(model, tokenizer, prompts, settings, torch.device("cpu"), stop_at_newline=False)
        best = min(best, time.perf_counter() - start)
    return best, outputs, counter.count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "harness" / "embedded" / "tiny-wiki-gpt2"))
    parser.add_argument("--task", default="sql-embedded")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()  # the checkpoint is stored in fp16
    cls = TASKS.get(args.task)
    task = cls(args.task, dict(cls.defaults))
    budget = model_context(model) - args.max_new_tokens
    prompts = [task.encode_prompt(tokenizer, row, budget) for row in task.eval_rows(task.params["eval_split"])[: args.prompts]]
    settings = {"decoding": "greedy", "max_new_tokens": args.max_new_tokens}

    counter = CountNewTokens(model, tokenizer.eos_token_id)
    generate_batched(model, tokenizer, prompts[:2], {**settings, "batch_size": 2}, torch.device("cpu"))  # warm-up
    t_batch, out_batch, n_batch = timed(model, tokenizer, prompts, {**settings, "batch_size": args.batch}, args.repeats, counter)
    t_single, out_single, tokens = timed(model, tokenizer, prompts, {**settings, "batch_size": 1}, args.repeats, counter)
    same = sum(a == b for a, b in zip(out_batch, out_single))
    print(f"model {args.model} | {len(prompts)} prompts from {args.task} | greedy, max_new_tokens {args.max_new_tokens}, "
          f"stop at eos only | torch threads {torch.get_num_threads()} | load average {os.getloadavg()[0]:.1f}")
    print(f"new tokens: {tokens} (batch 1), {n_batch} (batch {args.batch}); identical outputs: {same}/{len(prompts)}")
    print(f"batch {args.batch:>2}: {t_batch:7.2f} s  {tokens / t_batch:8.1f} tokens/s")
    print(f"batch  1: {t_single:7.2f} s  {tokens / t_single:8.1f} tokens/s")
    print(f"ratio batch {args.batch} / batch 1: {t_single / t_batch:.2f}x (target >= 4x)")


if __name__ == "__main__":
    main()
