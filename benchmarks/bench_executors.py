"""Matrix wall time under each executor, for a matrix of many small jobs on a tiny model.

    python benchmarks/bench_executors.py            # all three, ratios at the end
    python benchmarks/bench_executors.py --seeds 3  # a bigger matrix

* sequential: ``--executor local`` with 2 torch threads per job (this machine's cores);
* processes:  ``--executor processes --jobs 2``, 1 thread each (workers never fight over cores);
* ray:        ``--executor ray`` on a local instance (2 CPUs, 1 per task), timed with the
  instance already up (as on a cluster) and, separately, its start-up.

Each run goes into a fresh SQLite file; the times include starting worker processes.
Targets (issue 6): processes <= 0.65 x sequential; ray <= 1.2 x processes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.config import load_matrix  # noqa: E402
from harness.executors import LocalExecutor, ProcessExecutor, RayExecutor, cpu_cores  # noqa: E402
from harness.progress import Reporter  # noqa: E402
from harness.job import Execution  # noqa: E402
from harness.orchestrate import run_matrix  # noqa: E402
from results.store import Store  # noqa: E402
from tests.conftest import build_tiny_gpt2, write_matrix  # noqa: E402  (the tests' tiny model)


def timed_run(matrix, folder: Path, name: str, executor) -> float:
    store = Store(str(folder / f"{name}.db"))
    started = time.perf_counter()
    code = run_matrix(matrix, store, matrix.jobs, reporter=Reporter(io.StringIO(), interactive=False), executor=executor)
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"{name}: the matrix failed (exit {code})")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=2, help="seeds per cell (jobs = seeds x 7)")
    parser.add_argument("--steps", type=int, default=20, help="training steps per job")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench-executors-"))
    matrix = load_matrix(write_matrix(folder, {
        "name": "bench-executors", "models": [str(build_tiny_gpt2(folder / "tiny-gpt2"))],
        "tasks": [{"name": "wiki-embedded", "max_train_examples": 32, "max_eval_tokens": 600}],
        "methods": ["random", "magnitude"], "sparsities": [0.3, 0.5, 0.7], "seeds": list(range(args.seeds)),
        "train": {"steps": args.steps, "batch_size": 4, "max_length": 64},
        "eval": {"batch_size": 4, "analysis_examples": 8, "speed_repeats": 0},
    }))
    cores = cpu_cores()
    print(f"{len(matrix.jobs)} jobs, {cores} cores, load average {os.getloadavg()[0]:.1f}", flush=True)

    import ray

    times = {"sequential": timed_run(matrix, folder, "sequential", LocalExecutor(Execution("cpu", cores)))}
    print(f"sequential ({cores} threads/job): {times['sequential']:.1f}s", flush=True)
    times["processes"] = timed_run(matrix, folder, "processes", ProcessExecutor(cores, Execution("cpu", 1)))
    print(f"processes ({cores} workers x 1 thread): {times['processes']:.1f}s", flush=True)
    started = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    times["ray_startup"] = time.perf_counter() - started
    times["ray"] = timed_run(matrix, folder, "ray", RayExecutor(Execution("cpu", 1)))
    ray.shutdown()
    print(f"ray (1 CPU/task): {times['ray']:.1f}s, plus {times['ray_startup']:.1f}s to start the local instance")

    ratios = {"processes/sequential": times["processes"] / times["sequential"],
              "ray/processes": times["ray"] / times["processes"],
              "ray incl. startup/processes": (times["ray"] + times["ray_startup"]) / times["processes"]}
    for name, value in ratios.items():
        print(f"{name:>28}: {value:.2f}")
    print(f"targets: processes/sequential <= 0.65 -> {'met' if ratios['processes/sequential'] <= 0.65 else 'MISSED'}; "
          f"ray/processes <= 1.2 -> {'met' if ratios['ray/processes'] <= 1.2 else 'MISSED'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"jobs": len(matrix.jobs), "cores": cores, "seconds": times,
                                               "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
