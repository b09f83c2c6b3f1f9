"""Matrix wall time under each executor, and several runners sharing one database, for a
matrix of many small jobs on a tiny model.

    python benchmarks/bench_executors.py                       # everything, ratios at the end
    python benchmarks/bench_executors.py --seeds 3             # a bigger matrix
    python benchmarks/bench_executors.py --parts runners       # only the runners comparison
    python benchmarks/bench_executors.py --parts sequential,processes --pg postgresql://u:p@host/db

Parts (``--parts``, comma-separated; default all):

* sequential: ``--executor local`` with 2 torch threads per job (this machine's cores);
* processes:  ``--executor processes --jobs 2``, 1 thread each (workers never fight over cores);
* ray:        ``--executor ray`` on a local instance (2 CPUs, 1 per task), timed with the
  instance already up (as on a cluster) and, separately, its start-up;
* runners:    two ``harness run`` processes started together on one database, one worker
  (the local executor, 1 thread) each, against one ``harness run --executor processes
  --jobs 2 --threads 1``: the same matrix and options, each timed from its start to its
  last process's exit, on SQLite and, with ``--pg`` or $HARNESS_TEST_PG_URL (a server
  where this role may create databases), on PostgreSQL; with the exactly-once counts
  (done attempts per spec hash, attempts in all).

The first three run in this process, each into a fresh SQLite file; the times include
starting worker processes. The runners part runs the CLI in subprocesses, into a fresh
database per measurement (a new SQLite file; a new PostgreSQL database, dropped after).
Targets: processes <= 0.65 x sequential; ray <= 1.2 x processes (issue 6); two runners
<= 1.15 x the two-worker processes executor.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.config import load_matrix  # noqa: E402
from harness.executors import LocalExecutor, ProcessExecutor, RayExecutor, cpu_cores  # noqa: E402
from harness.progress import Reporter  # noqa: E402
from harness.job import Execution  # noqa: E402
from harness.orchestrate import run_matrix  # noqa: E402
from results.store import Store, database_url  # noqa: E402
from tests.conftest import build_tiny_gpt2, write_matrix  # noqa: E402  (the tests' tiny model)

PARTS = ("sequential", "processes", "ray", "runners")
RUNNERS_TARGET = 1.15


def timed_run(matrix, folder: Path, name: str, executor) -> float:
    store = Store(str(folder / f"{name}.db"))
    started = time.perf_counter()
    code = run_matrix(matrix, store, matrix.jobs, reporter=Reporter(io.StringIO(), interactive=False), executor=executor)
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"{name}: the matrix failed (exit {code})")
    return seconds


# -- runners: several `harness run` processes on one database ----------------------------------
@contextmanager
def fresh_database(backend: str, folder: Path, pg_server: str | None, name: str) -> Iterator[str]:
    """A new, empty results database: a SQLite file, or a PostgreSQL database dropped after."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / f'{name}.db'}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = database_url(pg_server)
    admin = create_engine(server, isolation_level="AUTOCOMMIT")  # CREATE DATABASE: outside a transaction
    database = f"harness_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{database}"'))
    try:
        yield make_url(server).set(database=database).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


def timed_processes(commands: list[list[str]], folder: Path, name: str) -> float:
    """Start ``commands`` together; seconds until the last one exits (each must exit 0)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    logs = [folder / f"{name}-{i}.log" for i in range(len(commands))]
    handles = [open(log, "w") for log in logs]
    started = time.perf_counter()
    processes = [subprocess.Popen(command, cwd=folder, env=env, stdout=handle, stderr=subprocess.STDOUT)
                 for command, handle in zip(commands, handles)]
    codes = [process.wait() for process in processes]
    seconds = time.perf_counter() - started
    for handle in handles:
        handle.close()
    for code, log in zip(codes, logs):
        if code != 0:
            raise SystemExit(f"{name}: a runner exited {code}; its log ({log}):\n{log.read_text()[-3000:]}")
    return seconds


def exactly_once(url: str, expected_jobs: int) -> dict:
    """Done attempts per spec hash and attempts in all, from the database."""
    store = Store(url, create=False)
    try:
        with store.engine.connect() as connection:
            from sqlalchemy import text

            rows = connection.execute(text("select spec_hash, status, run_id from jobs")).all()
    finally:
        store.engine.dispose()
    done = Counter(spec_hash for spec_hash, status, _ in rows if status == "done")
    per_run = Counter(run for _, status, run in rows if status == "done")
    return {"jobs": expected_jobs, "done_once": sum(count == 1 for count in done.values()),
            "done_twice_or_more": sum(count > 1 for count in done.values()), "attempts": len(rows),
            "done_per_runner": sorted(per_run.values(), reverse=True)}


def runners_comparison(matrix_path: Path, jobs: int, folder: Path, backend: str, pg_server: str | None) -> dict:
    harness = [sys.executable, "-m", "harness", "run", "--matrix", str(matrix_path), "--device", "cpu",
               "--threads", "1"]
    result: dict = {}
    with fresh_database(backend, folder, pg_server, f"runners-{backend}") as url:
        artifacts = ["--artifacts", str(folder / f"artifacts-runners-{backend}")]
        result["two_runners_s"] = timed_processes([harness + ["--db", url] + artifacts] * 2, folder,
                                                  f"runners-{backend}")
        result["two_runners"] = exactly_once(url, jobs)
    with fresh_database(backend, folder, pg_server, f"processes-{backend}") as url:
        artifacts = ["--artifacts", str(folder / f"artifacts-processes-{backend}")]
        command = harness + ["--db", url, "--executor", "processes", "--jobs", "2"] + artifacts
        result["processes_s"] = timed_processes([command], folder, f"processes-{backend}")
        result["processes"] = exactly_once(url, jobs)
    result["ratio"] = result["two_runners_s"] / result["processes_s"]
    return result


def report_runners(backend: str, result: dict) -> None:
    once, other = result["two_runners"], result["processes"]
    verdict = "met" if result["ratio"] <= RUNNERS_TARGET else "MISSED"
    print(f"runners ({backend}): 2 x `harness run` (local, 1 thread): {result['two_runners_s']:.1f}s; "
          f"processes executor (2 workers x 1 thread): {result['processes_s']:.1f}s", flush=True)
    print(f"  two runners / two workers: {result['ratio']:.2f} (target <= {RUNNERS_TARGET}: {verdict})")
    for name, counts in (("two runners", once), ("processes", other)):
        ok = counts["done_once"] == counts["jobs"] and not counts["done_twice_or_more"]
        print(f"  {name:>11}: {counts['done_once']}/{counts['jobs']} jobs done exactly once, "
              f"{counts['done_twice_or_more']} more than once, {counts['attempts']} attempts in all, "
              f"done per run {counts['done_per_runner']}{'' if ok else '  <-- NOT EXACTLY ONCE'}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=2, help="seeds per cell (jobs = seeds x 7)")
    parser.add_argument("--steps", type=int, default=20, help="training steps per job")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated, of {', '.join(PARTS)} (default: all)")
    parser.add_argument("--pg", default=os.environ.get("HARNESS_TEST_PG_URL"),
                        help="runners part on PostgreSQL too: a server URL whose role may create databases "
                             "(default: $HARNESS_TEST_PG_URL)")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        parser.error(f"--parts: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(PARTS)}")

    folder = Path(tempfile.mkdtemp(prefix="bench-executors-"))
    matrix_path = write_matrix(folder, {
        "name": "bench-executors", "models": [str(build_tiny_gpt2(folder / "tiny-gpt2"))],
        "tasks": [{"name": "wiki-embedded", "max_train_examples": 32, "max_eval_tokens": 600}],
        "methods": ["random", "magnitude"], "sparsities": [0.3, 0.5, 0.7], "seeds": list(range(args.seeds)),
        "train": {"steps": args.steps, "batch_size": 4, "max_length": 64},
        "eval": {"batch_size": 4, "analysis_examples": 8, "speed_repeats": 0},
    })
    matrix = load_matrix(matrix_path)
    cores = cpu_cores()
    print(f"{len(matrix.jobs)} jobs, {cores} cores, load average {os.getloadavg()[0]:.1f}", flush=True)

    times: dict[str, float] = {}
    if "sequential" in parts:
        times["sequential"] = timed_run(matrix, folder, "sequential", LocalExecutor(Execution("cpu", cores)))
        print(f"sequential ({cores} threads/job): {times['sequential']:.1f}s", flush=True)
    if "processes" in parts:
        times["processes"] = timed_run(matrix, folder, "processes", ProcessExecutor(cores, Execution("cpu", 1)))
        print(f"processes ({cores} workers x 1 thread): {times['processes']:.1f}s", flush=True)
    if "ray" in parts:
        import ray

        started = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        times["ray_startup"] = time.perf_counter() - started
        times["ray"] = timed_run(matrix, folder, "ray", RayExecutor(Execution("cpu", 1)))
        ray.shutdown()
        print(f"ray (1 CPU/task): {times['ray']:.1f}s, plus {times['ray_startup']:.1f}s to start the local instance")

    ratios: dict[str, float] = {}
    if "sequential" in times and "processes" in times:
        ratios["processes/sequential"] = times["processes"] / times["sequential"]
    if "ray" in times and "processes" in times:
        ratios["ray/processes"] = times["ray"] / times["processes"]
        ratios["ray incl. startup/processes"] = (times["ray"] + times["ray_startup"]) / times["processes"]
    for name, value in ratios.items():
        print(f"{name:>28}: {value:.2f}")
    targets = []
    if "processes/sequential" in ratios:
        targets.append(f"processes/sequential <= 0.65 -> {'met' if ratios['processes/sequential'] <= 0.65 else 'MISSED'}")
    if "ray/processes" in ratios:
        targets.append(f"ray/processes <= 1.2 -> {'met' if ratios['ray/processes'] <= 1.2 else 'MISSED'}")
    if targets:
        print("targets: " + "; ".join(targets))

    runners: dict[str, dict] = {}
    if "runners" in parts:
        backends = ["sqlite"] + (["postgresql"] if args.pg else [])
        if not args.pg:
            print("runners: PostgreSQL skipped (no --pg and no $HARNESS_TEST_PG_URL)")
        for backend in backends:
            runners[backend] = runners_comparison(matrix_path, len(matrix.jobs), folder, backend, args.pg)
            report_runners(backend, runners[backend])
    if args.json:
        Path(args.json).write_text(json.dumps({"jobs": len(matrix.jobs), "cores": cores, "seconds": times,
                                               "ratios": ratios, "runners": runners}, indent=2))


if __name__ == "__main__":
    main()
