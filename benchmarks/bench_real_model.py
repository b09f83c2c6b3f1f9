"""SmolLM2-135M: the harness's training step against a bare PyTorch loop, fp32 and bf16-mixed;
and (``--overhead``) where the wall time of a small real-model job goes.

    python benchmarks/bench_real_model.py [--quick] [--steps 10] [--precisions fp32 bf16-mixed]
    python benchmarks/bench_real_model.py --overhead [--quick] [--jobs 2]

Step mode. The model is the fetched alias ``smollm2-135m`` (``harness models fetch
smollm2-135m``), else random weights of the same config (LlamaConfig: hidden 576, FFN 1536,
30 layers, 9 heads, 3 KV heads, vocabulary 49,152, tied embeddings). Every trainee trains
its own copy on the same batches (4 x 192 tokens, 2 threads):

- ``bare``: model(**batch).loss, backward, grad-norm clip, AdamW step, LR-scheduler step;
- ``dense``, ``random``, ``magnitude``, ``movement``, ``gum`` (lambda_u 1):
  ``harness.train.Trainer.step`` with the pruner and optimizer groups a job builds
  (``harness.job.run_job``), plus what ``harness.train.train`` reads back every step (the
  loss, the mask sparsity, the penalty).

Steps are interleaved: step s of every trainee runs back to back in an order rotated every
step, so a busy machine slows all alike; each ratio is paired with the reference step run
next to it and the median of the per-step ratios is printed (step 1, one-off allocations,
is dropped). bf16-mixed is ``torch.autocast("cpu", dtype=torch.bfloat16)`` around the
forward pass with fp32 master weights and optimizer state (``train.precision:
bf16-mixed``). Two blocks keep memory bounded (each trainee holds weights, gradients and
AdamW state: about 2.2 GB at full size): (1) bare and dense in both precisions, (2) per
precision, dense and the four methods, over one cubic schedule of ``--steps`` steps to
``--sparsity``.

Targets: harness dense / bare >= 0.95 per precision; dense / method: random, magnitude
>= 0.95, movement >= 0.90, gum >= 0.80; bf16-mixed / fp32 speed >= 2.0 on a CPU with
AVX512-BF16.

Overhead mode runs real jobs through ``harness.job.run_job`` -- SmolLM2 on the SAMSum files
in ../shared/data/samsum, 12 steps of 4 x 192 tokens, 24 evaluation examples (test and
validation), 8 analysis examples, random pruning to 50 %, the default speed protocol, the
model saved -- ``--jobs`` of them in one process (the first loads the weights from disk,
later ones copy the per-process cache, as a worker running several jobs does), and prints
each phase's seconds (the job's ``*_seconds`` cost metrics) and the non-training share of
the job's wall time (target <= 30 % in fp32).

``--quick`` (about a minute): step mode on the first 2 of the 30 layers, 4 steps, 96 tokens
per row; overhead mode with 2 steps, 4 evaluation and 2 analysis examples. Its ratios only
check the script, not the targets.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness import sections  # noqa: E402
from harness.compute import autocast, cpu_supports_bf16  # noqa: E402
from harness.params import resolve_params  # noqa: E402
from harness.pruning import FFNPruner, NoPruning  # noqa: E402
from harness.registry import METHODS  # noqa: E402
from harness.selection import CubicSchedule  # noqa: E402
from harness.train import Trainer, linear_warmup_decay  # noqa: E402

ALIAS = "smollm2-135m"
METHOD_PARAMS = {"random": {}, "magnitude": {}, "movement": {}, "gum": {"lambda_u": 1.0}}
TARGETS = {"random": 0.95, "magnitude": 0.95, "movement": 0.90, "gum": 0.80}
LOOP_TARGET, BF16_TARGET, OVERHEAD_TARGET = 0.95, 2.0, 0.30
SAMSUM = REPO.parent / "shared" / "data" / "samsum"
CPU = torch.device("cpu")


# -- the model --------------------------------------------------------------------------------
def smollm2(layers: int | None = None) -> tuple[torch.nn.Module, str]:
    """(model in train mode, where its weights come from); ``layers``: keep the first N."""
    from harness.models import MODELS, load_model

    source = MODELS.get(ALIAS)()
    if source.fetched():
        model, _ = load_model(source.identity(ALIAS), CPU)
        origin = f"{ALIAS} (fetched, Q4_1 dequantized)"
    else:
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                             num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                             tie_word_embeddings=True, rms_norm_eps=1e-5, rope_theta=100000.0)
        model = LlamaForCausalLM(config)
        origin = "random weights, SmolLM2-135M config (not fetched)"
    if layers and layers < model.config.num_hidden_layers:
        model.model.layers = model.model.layers[:layers]
        model.config.num_hidden_layers = layers
        if getattr(model.config, "layer_types", None):
            model.config.layer_types = model.config.layer_types[:layers]
        origin += f", first {layers} layers"
    return model.train(), origin


# -- trainees ---------------------------------------------------------------------------------
class HarnessTrainee:
    """A method's copy of the model with the pruner, optimizer groups and Trainer a job builds."""

    def __init__(self, base: torch.nn.Module, method: str, settings: dict[str, Any], precision: str, sparsity: float):
        self.model = copy.deepcopy(base).train()
        if method == "dense":
            self.pruner, groups = NoPruning(), []
        else:
            cls = METHODS.get(method)
            instance = cls(resolve_params(method, METHOD_PARAMS[method], cls.defaults, cls.required), seed=0)
            schedule = CubicSchedule(settings["steps"], 1.0 - sparsity, settings["warmup_frac"])
            self.pruner = FFNPruner(self.model, instance, schedule, settings["min_width"], settings["mask_update_every"])
            groups = self.pruner.attach()
        self.trainer = Trainer(self.model, self.pruner, settings, CPU, groups, precision)

    def step(self, step: int, batch: dict[str, torch.Tensor]) -> None:
        loss, penalty, _ = self.trainer.step(step, batch)
        loss.item()  # what harness.train.train reads back every step
        self.pruner.sparsity
        if penalty is not None:
            penalty.item()


class BareTrainee:
    """The plain PyTorch loop: forward, backward, clip, AdamW, scheduler (the same settings)."""

    def __init__(self, base: torch.nn.Module, settings: dict[str, Any], precision: str):
        self.model = copy.deepcopy(base).train()
        self.precision = precision
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.parameters, lr=settings["lr"], weight_decay=settings["weight_decay"],
                                           betas=(settings["adam_beta1"], settings["adam_beta2"]), eps=settings["adam_eps"])
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, linear_warmup_decay(settings["steps"], settings["warmup_frac"]))
        self.clip = settings["grad_clip"]

    def step(self, step: int, batch: dict[str, torch.Tensor]) -> None:
        with autocast(self.precision, CPU):
            loss = self.model(**batch).loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters, self.clip)
        self.optimizer.step()
        self.scheduler.step()
        loss.item()


def interleaved(trainees: dict[str, Any], steps: int, batch_fn: Callable[[int], dict[str, torch.Tensor]],
                log: Callable[[str], None]) -> dict[str, list[float]]:
    """Seconds per step of every trainee, step s of all back to back in a rotated order;
    step 1 (one-off allocations) is dropped."""
    names = list(trainees)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for step in range(1, steps + 1):
        batch = batch_fn(step)
        order = names[step % len(names):] + names[: step % len(names)]
        for name in order:
            started = time.perf_counter()
            trainees[name].step(step, batch)
            elapsed = time.perf_counter() - started
            if step > 1:
                seconds[name].append(elapsed)
        log(f"  step {step}/{steps}: " + ", ".join(f"{n} {seconds[n][-1]:.2f}s" for n in names if step > 1 and seconds[n]))
    return seconds


def paired(reference: list[float], other: list[float]) -> float:
    """Median of per-step ratios reference time / other time (> 1: other is faster)."""
    return statistics.median(r / o for r, o in zip(reference, other))


def mark(value: float, target: float) -> str:
    return "met" if value >= target else "MISSED"


def step_mode(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    base, origin = smollm2(args.layers)
    settings = dict(sections.defaults("train"), steps=args.steps, batch_size=args.batch_size, max_length=args.tokens)
    generator = torch.Generator().manual_seed(0)
    vocab = base.config.vocab_size
    batches: dict[int, dict[str, torch.Tensor]] = {}

    def batch_fn(step: int) -> dict[str, torch.Tensor]:
        if step not in batches:  # the same batch for every block's step s
            ids = torch.randint(0, vocab, (args.batch_size, args.tokens), generator=generator)
            batches[step] = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
        return batches[step]

    log = print if args.verbose else (lambda _line: None)
    bf16 = "bf16-mixed" in args.precisions
    if bf16 and not cpu_supports_bf16():
        print("note: this CPU has no AVX512-BF16/AMX; bf16-mixed runs emulated (slow)")
    params = sum(p.numel() for p in base.parameters())
    print(f"model: {origin}; {params / 1e6:.1f} M parameters; batch {args.batch_size} x {args.tokens} tokens, "
          f"{args.threads} threads, {args.steps} interleaved steps per block (the first dropped); "
          f"load {os.getloadavg()[0]:.2f}")

    # Block 1: bare loop vs harness dense step, both precisions (also gives bf16 / fp32).
    started = time.perf_counter()
    trainees: dict[str, Any] = {}
    for precision in args.precisions:
        trainees[f"bare/{precision}"] = BareTrainee(base, settings, precision)
        trainees[f"dense/{precision}"] = HarnessTrainee(base, "dense", settings, precision, args.sparsity)
    loop = interleaved(trainees, args.steps, batch_fn, log)
    del trainees
    print(f"\nblock 1 ({time.perf_counter() - started:.0f} s): harness dense step vs the bare loop "
          f"(bare time / harness time; target >= {LOOP_TARGET})")
    print(f"{'precision':<12} {'bare s/step':>11} {'harness s/step':>14} {'ratio':>7}")
    for precision in args.precisions:
        bare, harness = loop[f"bare/{precision}"], loop[f"dense/{precision}"]
        ratio = paired(bare, harness)
        print(f"{precision:<12} {statistics.median(bare):11.3f} {statistics.median(harness):14.3f} {ratio:7.3f}  "
              f"{mark(ratio, LOOP_TARGET)}")
    if bf16 and "fp32" in args.precisions:
        speed = paired(loop["dense/fp32"], loop["dense/bf16-mixed"])
        bare_speed = paired(loop["bare/fp32"], loop["bare/bf16-mixed"])
        tokens = args.batch_size * args.tokens
        print(f"bf16-mixed / fp32 speed (harness dense): {speed:.2f}x (bare loop {bare_speed:.2f}x); "
              f"{tokens / statistics.median(loop['dense/fp32']):.0f} vs "
              f"{tokens / statistics.median(loop['dense/bf16-mixed']):.0f} tokens/s; target >= {BF16_TARGET}: "
              f"{mark(speed, BF16_TARGET)}")

    # Block 2: per precision, dense and every method over one cubic schedule.
    warmup_end = round(0.1 * args.steps)
    final_start = args.steps - 3 * warmup_end
    for precision in args.precisions:
        started = time.perf_counter()
        trainees = {"dense": HarnessTrainee(base, "dense", settings, precision, args.sparsity)}
        for name in args.methods:
            trainees[name] = HarnessTrainee(base, name, settings, precision, args.sparsity)
        seconds = interleaved(trainees, args.steps, batch_fn, log)
        del trainees
        print(f"\nblock 2, {precision} ({time.perf_counter() - started:.0f} s): dense step time / method step time "
              f"over a {args.steps}-step schedule to sparsity {args.sparsity} (final phase: steps > {final_start})")
        print(f"{'method':<10} {'s/step':>7} {'schedule':>9} {'final':>7} {'target':>7}")
        print(f"{'dense':<10} {statistics.median(seconds['dense']):7.3f}")
        for name in args.methods:
            ratio = paired(seconds["dense"], seconds[name])
            final = [(d, m) for step, d, m in zip(range(2, args.steps + 1), seconds["dense"], seconds[name])
                     if step > final_start]
            final_ratio = f"{statistics.median(d / m for d, m in final):.3f}" if final else "-"
            print(f"{name:<10} {statistics.median(seconds[name]):7.3f} {ratio:9.3f} {final_ratio:>7} "
                  f"{TARGETS[name]:7.2f}  {mark(ratio, TARGETS[name])}")
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


# -- overhead mode ------------------------------------------------------------------------------
PHASES = ("load", "train", "eval", "analysis", "speed", "save")


def overhead_matrix(args: argparse.Namespace) -> dict[str, Any]:
    files = {split: str(SAMSUM / f"{split}.jsonl") for split in ("train", "validation", "test")}
    return {
        "name": "overhead", "models": [ALIAS], "methods": [args.method], "sparsities": [args.sparsity],
        "seeds": list(range(args.jobs)), "dense_baseline": False, "pretrained_baseline": False,
        "tasks": [{"name": "samsum", "data_files": files}],
        "train": {"steps": args.job_steps, "batch_size": 4, "max_length": 192, "precision": args.precision},
        "eval": {"max_examples": args.eval_examples, "validation_examples": args.eval_examples,
                 "analysis_examples": args.analysis_examples},
    }


def overhead_mode(args: argparse.Namespace) -> None:
    from harness.config import expand
    from harness.job import Execution, run_job
    from harness.models import MODELS

    if not MODELS.get(ALIAS)().fetched():
        raise SystemExit(f"--overhead needs the real model: run  harness models fetch {ALIAS}")
    if not SAMSUM.is_dir():
        raise SystemExit(f"--overhead needs the SAMSum files in {SAMSUM}")
    specs = expand(overhead_matrix(args), REPO)
    print(f"{len(specs)} job(s): {ALIAS} x samsum, {args.method} s={args.sparsity}, {args.job_steps} steps of 4 x 192 "
          f"tokens, {args.precision}; {args.eval_examples} test + {args.eval_examples} validation examples, "
          f"{args.analysis_examples} analysis examples; {args.threads} threads; load {os.getloadavg()[0]:.2f}")
    print(f"{'job':<6} " + " ".join(f"{p:>9}" for p in PHASES) + f" {'other':>7} {'wall':>7} {'non-train':>10}")
    with tempfile.TemporaryDirectory() as artifacts:
        execution = Execution(device="cpu", threads=args.threads, artifacts=artifacts)
        for index, spec in enumerate(specs):
            started = time.perf_counter()
            last = [started]

            def on_step(step: int, loss: float, sparsity: float) -> None:
                now = time.perf_counter()
                print(f"  job {index + 1} step {step}: {now - last[0]:.1f} s, loss {loss:.3f}", file=sys.stderr)
                last[0] = now

            result = run_job(spec, execution, on_step=on_step if args.verbose else None)
            wall = time.perf_counter() - started
            cost = {m.name.removesuffix("_seconds"): m.value for m in result.metrics if m.name.endswith("_seconds")}
            other = wall - sum(cost.values())
            share = 1.0 - cost.get("train", 0.0) / wall
            values = {m.name: m.value for m in result.metrics}
            print(f"{index + 1:<6} " + " ".join(f"{cost.get(p, 0.0):9.1f}" for p in PHASES)
                  + f" {other:7.1f} {wall:7.1f} {100 * share:9.1f}%  {mark(-share, -OVERHEAD_TARGET)}"
                    f" (target <= {100 * OVERHEAD_TARGET:.0f} %); rougeL {values.get('rougeL', float('nan')):.2f}, "
                    f"prefill_speedup {values.get('prefill_speedup', float('nan')):.3f}", flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about a minute: a script check, not the targets")
    parser.add_argument("--overhead", action="store_true", help="time the phases of real jobs through run_job")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=10, help="step mode: interleaved steps per block")
    parser.add_argument("--layers", type=int, default=None, help="step mode: keep the first N layers")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=192, help="step mode: tokens per row")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16-mixed"], choices=["fp32", "bf16-mixed"])
    parser.add_argument("--methods", nargs="+", default=list(METHOD_PARAMS), choices=list(METHOD_PARAMS))
    parser.add_argument("--verbose", action="store_true", help="print every step's times")
    parser.add_argument("--jobs", type=int, default=2, help="overhead mode: jobs (seeds) run in one process")
    parser.add_argument("--job-steps", type=int, default=12, help="overhead mode: training steps per job")
    parser.add_argument("--method", default="random", help="overhead mode: the job's method")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16-mixed"], help="overhead mode")
    parser.add_argument("--eval-examples", type=int, default=24, help="overhead mode: test and validation examples")
    parser.add_argument("--analysis-examples", type=int, default=8, help="overhead mode")
    args = parser.parse_args()
    if args.quick:
        args.layers, args.steps, args.tokens = args.layers or 2, 4, 96
        args.job_steps, args.eval_examples, args.analysis_examples = 2, 4, 2
    torch.set_num_threads(args.threads)
    overhead_mode(args) if args.overhead else step_mode(args)


if __name__ == "__main__":
    main()
