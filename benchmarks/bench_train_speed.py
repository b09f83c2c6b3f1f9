"""Training-step speed of each pruning method relative to dense fine-tuning.

    python benchmarks/bench_train_speed.py [--steps 20] [--rounds 2] [--sparsity 0.5]

Every method trains its own copy of the same model on the same batches (8 x 128 tokens,
2 threads). Steps are interleaved: step s of every method runs back to back, in a
rotated order, so a busy shared machine slows all methods alike; each step's ratio
dense time / method time is paired with the dense step next to it, and the median of
those ratios is printed (1.0 = as fast as dense), over the whole cubic schedule and over
its dense warm-up and final fixed-sparsity phases. The step is harness.train.Trainer.step,
the one harness.train.train runs.
Targets: random, magnitude >= 0.95; movement >= 0.90; gum >= 0.80.
Uses the embedded model when it is built, else a random GPT-2 of the same size.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from harness import sections
from harness.params import resolve_params
from harness.pruning import FFNPruner, NoPruning
from harness.registry import METHODS
from harness.selection import CubicSchedule
from harness.train import Trainer

TIMED = {"dense": {}, "random": {}, "magnitude": {}, "movement": {}, "gum": {"lambda_u": 1.0}}


def embedded_or_random_model() -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    from harness.models import MODELS

    folder = MODELS.get("tiny-wiki-gpt2")().folder
    if (folder / "config.json").exists():
        return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)  # stored as float16
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=8192, n_positions=512, n_embd=256, n_layer=4, n_head=4, n_inner=1024))


def build(base: torch.nn.Module, name: str, settings: dict, sparsity: float) -> Trainer:
    """One method's copy of the model with its pruner and optimizer, as a job builds them."""
    model = copy.deepcopy(base).train()
    if name == "dense":
        return Trainer(model, NoPruning(), settings, torch.device("cpu"))
    method_cls = METHODS.get(name)
    method = method_cls(resolve_params(name, TIMED[name], method_cls.defaults, method_cls.required), seed=0)
    pruner = FFNPruner(model, method, CubicSchedule(settings["steps"], 1.0 - sparsity))
    return Trainer(model, pruner, settings, torch.device("cpu"), pruner.attach())


def timed_step(trainer: Trainer, step: int, batch: dict[str, torch.Tensor]) -> float:
    """Seconds for one optimizer step (with the loss read back, as the training loop logs it)."""
    started = time.perf_counter()
    loss, _, _ = trainer.step(step, batch)
    loss.item()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps of one cubic schedule")
    parser.add_argument("--rounds", type=int, default=2, help="schedules run per method")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = embedded_or_random_model()
    settings = dict(sections.defaults("train"), steps=args.steps, batch_size=8)
    generator = torch.Generator().manual_seed(0)
    names = list(TIMED)
    warmup_end, final_start = round(0.1 * args.steps), args.steps - 3 * round(0.1 * args.steps)
    ratios: dict[str, dict[str, list[float]]] = {n: {"schedule": [], "warm-up": [], "final": []} for n in names}
    step_ms: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.rounds):
        trainees = {name: build(base, name, settings, args.sparsity) for name in names}
        for step in range(1, args.steps + 1):
            ids = torch.randint(0, base.config.vocab_size, (8, 128), generator=generator)
            batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
            order = names[step % len(names):] + names[: step % len(names)]
            seconds = {name: timed_step(trainees[name], step, batch) for name in order}
            if step == 1:
                continue  # one-off allocations
            for name in names:
                ratio = seconds["dense"] / seconds[name]
                ratios[name]["schedule"].append(ratio)
                phase = "warm-up" if step <= warmup_end else "final" if step > final_start else None
                if phase:
                    ratios[name][phase].append(ratio)
                step_ms[name].append(1000 * seconds[name])

    print(f"model: {base.config.n_layer} layers, d {base.config.n_embd}, FFN {base.config.n_inner}, "
          f"vocab {base.config.vocab_size}; batch 8 x 128, {args.threads} threads; {args.rounds} x {args.steps}-step "
          f"schedules to sparsity {args.sparsity}; median of paired ratios dense/method")
    print(f"{'method':<10} {'ms/step':>8} {'schedule':>9} {'warm-up':>8} {'final':>7}")
    for name in names:
        cells = [f"{statistics.median(ratios[name][phase]):.3f}" if ratios[name][phase] else "-"
                 for phase in ("schedule", "warm-up", "final")]
        print(f"{name:<10} {statistics.median(step_ms[name]):8.1f} {cells[0]:>9} {cells[1]:>8} {cells[2]:>7}")


if __name__ == "__main__":
    main()
