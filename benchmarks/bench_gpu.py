"""GPU training throughput of the harness's step: tokens/s and model FLOP utilisation (MFU).

    python benchmarks/bench_gpu.py [--quick] [--batch-size 8] [--seq-len 1024] [--steps 20]
                                   [--peak-tflops 989] [--precision bf16-mixed]

A dense GPT-2-size model (124 M parameters: 12 layers, d 768, 12 heads, vocabulary 50,257,
random weights, nothing downloaded) fine-tuned with ``harness.train.Trainer`` -- the step a
job runs -- on CUDA: bf16-mixed (autocast bf16, fp32 master weights and AdamW state), TF32
matmuls on (``harness.compute.configure_cuda``), SDPA attention
(``attn_implementation="sdpa"``), batch 8 x 1024 tokens of random ids. After ``--warmup``
untimed steps, ``--steps`` steps are timed as one span (synchronized at both ends, nothing in
between but what the step itself does, plus the loss read back every step as
``harness.train.train`` logs it; ``--no-item`` leaves that out to show its cost).

    tokens/s = steps x batch x sequence / seconds
    MFU      = 6 x N x tokens/s / peak       (N = parameters; attention FLOPs not counted)

The peak is the device's dense bf16 tensor-core peak from a small table keyed by its name
(``torch.cuda.get_device_name``), or ``--peak-tflops``. Without CUDA it prints why and exits
with status 1. ``--quick``: 3 warm-up and 5 timed steps.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Dense (not 2:4-sparse) bf16 tensor-core peaks, TFLOP/s, from the vendors' data sheets. The
# first entry whose every word appears in the device name wins: more specific names first.
PEAK_BF16_TFLOPS: list[tuple[str, float | None]] = [
    ("GH200", 989.4), ("H200", 989.4), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4),
    ("H800 PCIe", 756.0), ("H800", 989.4), ("B200", 2250.0), ("B100", 1750.0),
    ("A100", 312.0), ("A800", 312.0), ("L40S", 362.1), ("L40", 181.0), ("L4", 121.0), ("A30", 165.0),
    ("A10G", None), ("A10", 125.0),  # A10G: no published tensor peak -- pass --peak-tflops
]


def peak_tflops(name: str) -> float | None:
    """The table's dense bf16 peak for a device name, None when it is not listed."""
    upper = name.upper()
    for key, value in PEAK_BF16_TFLOPS:
        if all(word.upper() in upper for word in key.split()):
            return value
    return None


def gpt2_124m():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_positions=1024, n_embd=768, n_layer=12, n_head=12, vocab_size=50257)
    config._attn_implementation = "sdpa"
    try:
        return GPT2LMHeadModel(config, attn_implementation="sdpa")
    except TypeError:  # older transformers: the config carries it
        return GPT2LMHeadModel(config)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 warm-up and 5 timed steps")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--precision", default="bf16-mixed", choices=["bf16-mixed", "fp32"])
    parser.add_argument("--peak-tflops", type=float, help="the device's bf16 peak (default: from the table)")
    parser.add_argument("--no-item", action="store_true", help="do not read the loss back every step")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if args.quick:
        args.warmup, args.steps = 3, 5

    import torch

    if not torch.cuda.is_available():
        built = torch.version.cuda or "none (a CPU-only build)"
        print(f"bench_gpu.py needs a CUDA GPU: torch.cuda.is_available() is False on this machine "
              f"(torch {torch.__version__}, CUDA build: {built}); nothing was measured. "
              f"For CPU step times see benchmarks/bench_real_model.py and benchmarks/bench_train_speed.py.",
              file=sys.stderr)
        return 1

    from harness import sections
    from harness.compute import check_precision, configure_cuda
    from harness.pruning import NoPruning
    from harness.train import Trainer

    device = torch.device(args.device)
    configure_cuda()  # TF32 matmuls and cuDNN, as every job sets
    check_precision(args.precision, device)
    name = torch.cuda.get_device_name(device)
    peak = args.peak_tflops or peak_tflops(name)
    torch.manual_seed(0)
    model = gpt2_124m().to(device).train()
    params = sum(p.numel() for p in model.parameters())  # tied embedding counted once
    settings = dict(sections.defaults("train"), steps=args.warmup + args.steps, batch_size=args.batch_size,
                    max_length=args.seq_len)
    trainer = Trainer(model, NoPruning(), settings, device, [], args.precision)
    generator = torch.Generator(device=device).manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (args.batch_size, args.seq_len), device=device, generator=generator)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}

    def step(index: int) -> None:
        loss, _, _ = trainer.step(index, batch)
        if not args.no_item:
            loss.item()  # what harness.train.train logs every step

    for index in range(1, args.warmup + 1):
        step(index)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for index in range(args.warmup + 1, args.warmup + args.steps + 1):
        step(index)
    torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started

    tokens = args.steps * args.batch_size * args.seq_len / seconds
    achieved = 6 * params * tokens / 1e12
    print(f"device: {name}; torch {torch.__version__}; {args.precision}, TF32 "
          f"{'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}, attention "
          f"{getattr(model.config, '_attn_implementation', '?')}")
    print(f"model: GPT-2 size, {params / 1e6:.1f} M parameters (random weights); batch {args.batch_size} x "
          f"{args.seq_len} tokens; {args.warmup} warm-up + {args.steps} timed steps"
          f"{'' if not args.no_item else ' (loss not read back)'}")
    print(f"step: {1000 * seconds / args.steps:.1f} ms; {tokens:,.0f} tokens/s; {achieved:.1f} TFLOP/s (6·N·tokens/s); "
          f"peak memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
    if peak:
        print(f"MFU: {100 * achieved / peak:.1f} % of {peak:g} TFLOP/s dense bf16"
              f"{' (--peak-tflops)' if args.peak_tflops else ' (table)'}")
    else:
        print(f"MFU: unknown peak for '{name}'; pass --peak-tflops")
    return 0


if __name__ == "__main__":
    sys.exit(main())
