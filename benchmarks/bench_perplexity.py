"""Our perplexity evaluation vs a bare forward loop over the same windows (tokens/s).

    python benchmarks/bench_perplexity.py [--model DIR] [--tokens 40000] [--batch 8]

"ours" is tasks._lm.sliding_window_nll (what the language-modeling tasks run: batching,
cross-entropy, masking of already-scored tokens); "bare" runs ``model(input_ids)`` on the
same windows in the same batches and discards the logits. Both count the same scored
tokens. Prints tokens/s for each and the ratio (target: ours >= 0.9x bare).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from tasks._data import EMBEDDED_DATA, read_jsonl  # noqa: E402
from tasks._lm import sliding_window_nll, window_spans  # noqa: E402


@torch.no_grad()
def bare_loop(model, ids: list[int], window: int, stride: int, batch_size: int) -> None:
    tokens = torch.tensor(ids)
    spans = window_spans(len(ids), window, stride)
    groups: dict[int, list[tuple[int, int, int]]] = {}
    for span in spans:  # the same equal-length batches as ours
        groups.setdefault(span[1] - span[0], []).append(span)
    for group in groups.values():
        for start in range(0, len(group), batch_size):
            model(input_ids=torch.stack([tokens[b:e] for b, e, _ in group[start : start + batch_size]]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "harness" / "embedded" / "tiny-wiki-gpt2"))
    parser.add_argument("--tokens", type=int, default=40000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()  # the checkpoint is stored in fp16
    text = "\n\n".join(row["text"] for row in read_jsonl(EMBEDDED_DATA / "wiki" / "test.jsonl.gz"))
    ids = tokenizer(text)["input_ids"][: args.tokens]
    window = model.config.n_positions
    stride = window // 2
    cpu = torch.device("cpu")

    sliding_window_nll(model, ids[: window * 2], window, stride, args.batch, cpu)  # warm-up
    ours, bare, scored = float("inf"), float("inf"), 0
    for _ in range(args.repeats):  # interleaved, best of n: both see the same machine state
        start = time.perf_counter()
        _, scored = sliding_window_nll(model, ids, window, stride, args.batch, cpu)
        ours = min(ours, time.perf_counter() - start)
        start = time.perf_counter()
        bare_loop(model, ids, window, stride, args.batch)
        bare = min(bare, time.perf_counter() - start)
    print(f"model {args.model} | {len(ids)} tokens of the wiki test split | window {window}, stride {stride}, "
          f"batch {args.batch} | torch threads {torch.get_num_threads()}")
    print(f"ours (sliding_window_nll): {ours:7.2f} s  {scored / ours:9.1f} scored tokens/s")
    print(f"bare model(input_ids):     {bare:7.2f} s  {scored / bare:9.1f} scored tokens/s")
    print(f"ratio ours / bare: {bare / ours:.3f}x (target >= 0.9x)")


if __name__ == "__main__":
    main()
