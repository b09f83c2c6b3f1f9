"""Prefill speed-up of shrunk models against the ideal the FLOP count allows.

    python benchmarks/bench_shrink_speed.py [--rounds 3] [--threads 2]

For the embedded model's config and a GPT-2-small-sized config (random weights: speed
does not depend on them), removes 50% and 90% of every layer's FFN neurons and times the
prefill (harness.speed: batch 4 x 128 tokens, KV cache on, last-position logits only)
of the dense and the shrunk models, interleaved over rounds. Prints measured speed-up
and ideal = whole-model forward FLOPs dense / shrunk, counting every matmul: attention
projections, attention scores (causal), FFN, LM head (last position; embeddings are
lookups). Target: measured >= 0.9 x ideal.
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from harness.adapters import shrink_model
from harness.selection import kept_count
from harness.speed import SpeedSettings, measure_prefill_ms

CONFIGS = {
    "embedded (4L d256 FFN1024 V8192)": dict(vocab_size=8192, n_positions=512, n_embd=256, n_layer=4, n_head=4,
                                              n_inner=1024),
    "gpt2-small size (12L d768 FFN3072 V50257)": dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12,
                                                      n_head=12, n_inner=3072),
}
SPARSITIES = (0.5, 0.9)


def prefill_flops(config: GPT2Config, widths: list[int], batch: int, length: int) -> float:
    """Multiply-adds x 2 of one prefill of a GPT-2-architecture model."""
    d = config.n_embd
    per_token_layer = [2 * 4 * d * d + 2 * 2 * d * width for width in widths]  # qkv + out proj, FFN in + out
    attention = 2 * 2 * d * length * (length + 1) / 2  # QK^T and AV, causal, per sequence and layer
    lm_head = 2 * d * config.vocab_size  # last position only
    return batch * (length * sum(per_token_layer) + len(widths) * attention + lm_head)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = SpeedSettings(batch_size=4, prompt_length=128, new_tokens=1, repeats=args.repeats, warmup=2)
    print(f"prefill of {settings.batch_size} x {settings.prompt_length} tokens, {args.threads} threads, "
          f"median of {args.repeats} x {args.rounds} interleaved rounds")
    print(f"{'model':<44} {'sparsity':>8} {'dense ms':>9} {'shrunk ms':>10} {'speed-up':>9} {'ideal':>6} {'ratio':>6}")
    for label, values in CONFIGS.items():
        torch.manual_seed(0)
        dense = GPT2LMHeadModel(GPT2Config(**values)).eval()
        models = {0.0: dense}
        for sparsity in SPARSITIES:
            shrunk = copy.deepcopy(dense)
            kept = kept_count(1 - sparsity, values["n_inner"])
            shrink_model(shrunk, [torch.arange(kept)] * values["n_layer"])
            models[sparsity] = shrunk
        times: dict[float, list[float]] = {s: [] for s in models}
        order = list(models)
        for round_index in range(args.rounds):
            for sparsity in order[round_index % len(order):] + order[: round_index % len(order)]:
                times[sparsity].append(measure_prefill_ms(models[sparsity], settings, torch.device("cpu")))
        dense_ms = statistics.median(times[0.0])
        full = prefill_flops(dense.config, [values["n_inner"]] * values["n_layer"], 4, 128)
        for sparsity in SPARSITIES:
            widths = [kept_count(1 - sparsity, values["n_inner"])] * values["n_layer"]
            shrunk_ms = statistics.median(times[sparsity])
            ideal = full / prefill_flops(dense.config, widths, 4, 128)
            speedup = dense_ms / shrunk_ms
            print(f"{label:<44} {sparsity:>8.1f} {dense_ms:>9.1f} {shrunk_ms:>10.1f} {speedup:>9.2f} {ideal:>6.2f} "
                  f"{speedup / ideal:>6.2f}")


if __name__ == "__main__":
    main()
