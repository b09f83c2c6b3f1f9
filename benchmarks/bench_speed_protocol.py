"""How precise the speed protocol is: jobs through the real code path, timed against themselves.

    python benchmarks/bench_speed_protocol.py [--quick] [--seeds 5] [--repeats N] [--warmup N]
    python benchmarks/bench_speed_protocol.py --sweep 3,7,11 [--quick]

Runs jobs with ``harness.job.run_job`` on the embedded model ``tiny-wiki-gpt2`` and a small
language-modeling task (``wiki-embedded``: 16 training blocks of 64 tokens, 2 training steps,
512 test tokens, no validation and no analysis), with the speed protocol of
``harness/speed.py`` (``measure_pair``: the dense reference loaded again, then both models
timed interleaved A B, B A, ... after warm-up; the speed-up is the median of the per-repeat
ratios, its stored ``spread`` their interquartile range):

1. ``dense`` jobs over ``--seeds`` seeds. The dense model has the reference's shapes, so its
   ``prefill_speedup`` and ``decode_speedup`` measure the protocol against itself.
   Target: 1.00 +- 0.03 (every job).
2. ``random``, ``magnitude`` and ``movement`` at 90 % sparsity (local selection: the same
   per-layer widths, so the same shrunk shapes) over the same seeds. Target: every job within
   +- 3 % of the median of all of them.

Printed per job: both speed-ups with their stored spread (IQR over repeats) and the job's
``speed_seconds`` (the protocol's cost: the reference's load, warm-up, peak memory, the
repeats); then per group the spread across jobs (min, max, max |x / median - 1|) and the
targets. ``--repeats``/``--warmup`` override the eval section's ``speed_repeats``/
``speed_warmup`` (default: harness/speed.py's SETTINGS); ``--sweep`` runs the whole
benchmark once per repeats value and prints one summary line each (how defaults were chosen).
``--quick`` (about a minute): 2 seeds. Timings need a quiet machine: the load average is
printed with the results.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from harness.config import expand  # noqa: E402
from harness.job import Execution, run_job  # noqa: E402
from harness.params import defaults_of  # noqa: E402
from harness.speed import SETTINGS as SPEED_SETTINGS  # noqa: E402

SHAPED = ("random", "magnitude", "movement")
METRICS = ("prefill_speedup", "decode_speedup")
DENSE_TOLERANCE = SAME_SHAPE_TOLERANCE = 0.03


def matrix(methods: list[str], seeds: int, speed: dict[str, int], dense: bool) -> dict[str, Any]:
    return {
        "name": "speed-protocol", "models": ["tiny-wiki-gpt2"], "methods": methods, "sparsities": [0.9],
        "seeds": list(range(seeds)), "dense_baseline": dense, "pretrained_baseline": False,
        "tasks": [{"name": "wiki-embedded", "max_train_examples": 16, "max_eval_tokens": 512}],
        "train": {"steps": 2, "batch_size": 4, "max_length": 64},
        "eval": {"validation_examples": 0, "analysis_examples": 0, **speed},
    }


def run(methods: list[str], seeds: int, speed: dict[str, int], threads: int) -> list[dict[str, Any]]:
    """One row per job: method, seed, metrics (value, spread) and speed_seconds."""
    pruned = [m for m in methods if m != "dense"]
    specs = [s for s in expand(matrix(pruned or ["random"], seeds, speed, "dense" in methods), REPO)
             if (s.method["name"] in methods) or (s.kind == "dense" and "dense" in methods)]
    rows = []
    for spec in specs:
        result = run_job(spec, Execution(device="cpu", threads=threads))
        values = {m.name: (m.value, m.spread) for m in result.metrics}
        rows.append({"method": spec.method["name"], "seed": spec.seed, "values": values,
                     "speed_seconds": values["speed_seconds"][0], "job_seconds": sum(
                         v for name, (v, _) in values.items() if name.endswith("_seconds"))})
    return rows


def group_summary(rows: list[dict[str, Any]], metric: str, center: float | None) -> tuple[float, float, float, float]:
    """(min, max, median, max |x / centre - 1|) of a metric over jobs; centre = median if None."""
    values = [row["values"][metric][0] for row in rows]
    middle = statistics.median(values)
    reference = middle if center is None else center
    return min(values), max(values), middle, max(abs(v / reference - 1.0) for v in values)


def report(rows: list[dict[str, Any]], verbose: bool = True) -> dict[str, float]:
    """Print the per-job table and the group summaries; returns the worst deviations."""
    if verbose:
        print(f"{'job':<18} " + " ".join(f"{m:>24}" for m in METRICS) + f" {'speed s':>8} {'job s':>7}")
        for row in rows:
            cells = [f"{row['values'][m][0]:.3f} (IQR {row['values'][m][1] or 0:.3f})" for m in METRICS]
            print(f"{row['method'] + ' seed ' + str(row['seed']):<18} " + " ".join(f"{c:>24}" for c in cells)
                  + f" {row['speed_seconds']:8.2f} {row['job_seconds']:7.2f}")
    worst: dict[str, float] = {}
    dense = [r for r in rows if r["method"] == "dense"]
    shaped = [r for r in rows if r["method"] in SHAPED]
    for label, group, center, tolerance in (("dense vs itself", dense, 1.0, DENSE_TOLERANCE),
                                            ("same shapes, s=0.9", shaped, None, SAME_SHAPE_TOLERANCE)):
        if not group:
            continue
        for metric in METRICS:
            low, high, middle, deviation = group_summary(group, metric, center)
            spreads = [r["values"][metric][1] or 0.0 for r in group]
            worst[f"{label}/{metric}"] = deviation
            if verbose:
                target = "1.00" if center == 1.0 else "the median"
                print(f"{label:<20} {metric:<16} n={len(group):<2} min {low:.3f} max {high:.3f} median {middle:.3f}; "
                      f"max |x/{target} - 1| = {100 * deviation:.1f} % (target <= {100 * tolerance:.0f} %: "
                      f"{'met' if deviation <= tolerance else 'MISSED'}); stored IQR median "
                      f"{statistics.median(spreads):.3f}, max {max(spreads):.3f}")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about a minute: 2 seeds")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--repeats", type=int, help="speed_repeats (default: harness/speed.py)")
    parser.add_argument("--warmup", type=int, help="speed_warmup (default: harness/speed.py)")
    parser.add_argument("--sweep", help="comma-separated speed_repeats values: one summary line each")
    parser.add_argument("--methods", nargs="+", default=["dense", *SHAPED], choices=["dense", *SHAPED])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.quick:
        args.seeds = min(args.seeds, 2)
    torch.set_num_threads(args.threads)
    defaults = defaults_of(SPEED_SETTINGS)
    base = {"speed_repeats": args.repeats or defaults["speed_repeats"],
            "speed_warmup": defaults["speed_warmup"] if args.warmup is None else args.warmup}
    print(f"tiny-wiki-gpt2 x wiki-embedded, {args.seeds} seed(s), methods {', '.join(args.methods)}; "
          f"speed: batch {defaults['speed_batch_size']} x {defaults['speed_prompt_length']} prompt tokens, "
          f"{defaults['speed_new_tokens']} new tokens; {args.threads} threads; load {os.getloadavg()[0]:.2f}")
    sweep = [int(v) for v in args.sweep.split(",")] if args.sweep else None
    if sweep is None:
        print(f"speed_repeats {base['speed_repeats']}, speed_warmup {base['speed_warmup']}")
        started = time.perf_counter()
        rows = run(args.methods, args.seeds, base, args.threads)
        report(rows)
        print(f"{len(rows)} jobs in {time.perf_counter() - started:.0f} s; median speed_seconds per job "
              f"{statistics.median(r['speed_seconds'] for r in rows):.2f}; load {os.getloadavg()[0]:.2f}")
        return
    print(f"{'repeats':>7} {'warmup':>6} {'speed s/job':>11}  worst deviation per group and metric")
    for repeats in sweep:
        speed = dict(base, speed_repeats=repeats)
        rows = run(args.methods, args.seeds, speed, args.threads)
        worst = report(rows, verbose=False)
        print(f"{repeats:7d} {speed['speed_warmup']:6d} {statistics.median(r['speed_seconds'] for r in rows):11.2f}  "
              + "; ".join(f"{k} {100 * v:.1f} %" for k, v in worst.items()) + f"  (load {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
