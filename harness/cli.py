"""The ``harness`` command line. Bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def _store(args: argparse.Namespace, create: bool = True):
    from results.store import Store

    return Store(args.db, create=create)


# -- run ---------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from harness.config import load_matrix
    from harness.runner import Execution, run_matrix, select_jobs

    matrix = load_matrix(args.matrix)
    jobs = select_jobs(matrix.jobs, args.only)
    if not jobs:
        raise UsageError(f"--only: no job of {len(matrix.jobs)} matches '{args.only}'")
    if args.dry_run:
        statuses = _store(args, create=False).latest_statuses([j.spec_hash for j in jobs])
        if args.format == "json":
            payload = [{"hash": j.spec_hash, "status": statuses.get(j.spec_hash, "new"), "spec": j.to_dict()} for j in jobs]
            print(json.dumps(payload, indent=2))
        else:
            for j in jobs:
                status = statuses.get(j.spec_hash, "pending")
                status = "pending" if status != "done" else "done"
                print(f"{j.short_hash}  {j.model['name']}  {j.task['name']}  {j.method_label}  "
                      f"{j.sparsity:.2f}  seed={j.seed}  {status}")
            todo = sum(1 for j in jobs if statuses.get(j.spec_hash) != "done" or args.force)
            print(f"{len(jobs)} jobs, {todo} would run", file=sys.stderr)
        return 0
    from harness.executors import make_executor

    from harness.export import artifacts_root

    store = _store(args)
    artifacts = str(artifacts_root(store.path, args.artifacts).resolve())
    execution = Execution(args.device, args.threads, artifacts=artifacts, save_models=not args.no_save_models)
    executor = None  # run_matrix's default: local, with step progress
    if args.executor != "local" or args.jobs is not None or args.ray_address or args.cpus_per_job or args.gpus_per_job:
        try:
            executor = make_executor(args.executor, execution, args.jobs, args.ray_address, args.cpus_per_job,
                                     args.gpus_per_job)
        except ValueError as error:
            raise UsageError(str(error)) from None
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a batch scheduler's stop: like Ctrl-C
    try:
        return run_matrix(matrix, store, jobs, force=args.force, execution=execution, executor=executor)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


# -- list --------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    from harness.registry import METHODS, MODELS, TASKS

    registry = {"methods": METHODS, "tasks": TASKS, "models": MODELS}[args.what]
    entries = registry.describe()
    width = max(len(name) for name, _ in entries)
    for name, description in entries:
        if args.what == "tasks":
            description = registry.get(name).describe()
        print(f"{name:<{width}}  {description}")
    return 0


# -- leaderboard ---------------------------------------------------------------------------
def cmd_leaderboard(args: argparse.Namespace) -> int:
    from results.queries import leaderboard, pivot

    store = _store(args, create=False)
    frame = leaderboard(store, task=args.task, model=args.model, metric=args.metric)
    if frame.empty:
        print(f"no finished jobs in {store.url}" + (f" for task '{args.task}'" if args.task else "")
              + "; run e.g. `harness run --matrix examples/quickstart.yaml`", file=sys.stderr)
        return 0
    if args.format == "csv":
        frame.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        print(frame.to_json(orient="records", indent=2))
    else:
        for (task, model, metric, split, higher), table in pivot(frame):
            direction = "higher is better" if higher else "lower is better"
            print(f"\n== {task} · {model} · {metric} [{split}] ({direction}) — mean ± std (seeds)")
            print(table.to_string())
    return 0


# -- export ------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    from harness.export import ExportError, export_job, has_custom_code

    try:
        out = export_job(_store(args, create=False), args.job_id, args.out)
    except ExportError as error:
        raise UsageError(str(error)) from None
    trust = ", trust_remote_code=True" if has_custom_code(out) else ""
    print(f"exported to {out}; load with AutoModelForCausalLM.from_pretrained({str(out)!r}{trust})", file=sys.stderr)
    return 0


# -- analyze -----------------------------------------------------------------------------
def cmd_analyze(args: argparse.Namespace) -> int:
    from harness.analysis import analyze_saved_model

    if args.examples < 1:
        raise UsageError(f"--examples: expected a positive number, got {args.examples}")
    analysis = analyze_saved_model(args.model, args.task, args.examples, max_length=args.max_length,
                                   batch_size=args.batch_size, threshold=args.threshold,
                                   sensitivity=args.sensitivity, device=args.device)
    if args.format == "json":
        print(json.dumps({"model": args.model, "task": args.task, "protocol": analysis.protocol(),
                          "metrics": {m["name"]: m["value"] for m in analysis.metrics()},
                          "layers": analysis.layer_rows(),
                          "neurons": [dict(zip(("layer", "neuron", "sensitivity", "max_abs_cos"), row))
                                      for row in analysis.neuron_stats()]}, indent=2))
        return 0
    import pandas as pd

    print(f"{args.model} on {args.task} [{analysis.split}]: {analysis.examples} examples, {analysis.tokens} tokens; "
          f"sensitivity={analysis.sensitivity_kind}, redundant if cos >= {analysis.threshold:g}")
    print(pd.DataFrame(analysis.layer_rows()).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


# -- dashboard ---------------------------------------------------------------------------
def cmd_dashboard(args: argparse.Namespace) -> int:
    import importlib.util
    from pathlib import Path

    from results.store import database_url

    app = Path(importlib.util.find_spec("dashboard").origin).parent / "app.py"
    url = database_url(args.db)
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.headless", "true",
               "--server.address", args.address, "--server.port", str(args.port),
               "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
               "--client.toolbarMode", "viewer"]
    print(f"dashboard for {url} at http://{args.address}:{args.port} (Ctrl-C stops it)", file=sys.stderr)
    sys.stderr.flush()
    # exec, not a child process: a signal to `harness dashboard` reaches the server itself,
    # so stopping it never leaves an orphaned server holding the port.
    os.execve(sys.executable, command, dict(os.environ, HARNESS_DB=url))  # the app reads HARNESS_DB


# -- parser ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description="Structured FFN pruning benchmark for generative LMs.")
    sub = parser.add_subparsers(dest="command", required=True)
    db_help = "SQLAlchemy URL or SQLite file (default: $HARNESS_DB or harness.db in the current directory)"

    run = sub.add_parser("run", help="run a job matrix (skips jobs already done)")
    run.add_argument("--matrix", required=True, help="matrix YAML file")
    run.add_argument("--db", help=db_help)
    run.add_argument("--dry-run", action="store_true", help="list the jobs and their status; run nothing")
    run.add_argument("--format", choices=["table", "json"], default="table", help="--dry-run output format")
    run.add_argument("--force", action="store_true", help="rerun done jobs too, as new attempts")
    run.add_argument("--only", help="run only jobs whose label matches this glob, or whose hash starts with it")
    run.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    run.add_argument("--threads", type=int, default=None, help="torch CPU threads per job")
    run.add_argument("--artifacts", help="folder for saved models (default: $HARNESS_ARTIFACTS, else "
                                         "<db name>.artifacts next to a SQLite database)")
    run.add_argument("--no-save-models", action="store_true",
                     help="do not save pruned models (dense models are still saved: distillation teachers)")
    run.add_argument("--executor", choices=["local", "processes", "ray"], default="local",
                     help="local: one job at a time here; processes: --jobs worker processes here, one device "
                          "each; ray: one Ray task per job (see --ray-address)")
    run.add_argument("--jobs", type=int, help="processes: worker count (default: one per visible GPU, else per core)")
    run.add_argument("--ray-address", help="ray: 'auto' or ray://HOST:10001 (default: a local Ray instance)")
    run.add_argument("--cpus-per-job", type=float, help="ray: CPUs each task declares (default: --threads or 1)")
    run.add_argument("--gpus-per-job", type=float,
                     help="ray: GPUs each task declares (default: 1 if the cluster has GPUs and --device allows)")
    run.set_defaults(handler=cmd_run)

    listing = sub.add_parser("list", help="list registered methods, tasks or model aliases")
    listing.add_argument("what", choices=["methods", "tasks", "models"])
    listing.set_defaults(handler=cmd_list)

    board = sub.add_parser("leaderboard", help="methods x sparsities per task and metric, mean ± std over seeds")
    board.add_argument("--db", help=db_help)
    board.add_argument("--task")
    board.add_argument("--model")
    board.add_argument("--metric")
    board.add_argument("--format", choices=["table", "csv", "json"], default="table")
    board.set_defaults(handler=cmd_leaderboard)

    analyze = sub.add_parser("analyze", help="neuron sensitivity and uniqueness of a model over a task's evaluation split")
    analyze.add_argument("model", metavar="MODEL", help="exported model folder, model alias or hub id")
    analyze.add_argument("--task", required=True, help="task whose evaluation examples are used")
    analyze.add_argument("--examples", type=int, default=64, help="evaluation examples to analyse (default 64)")
    analyze.add_argument("--max-length", type=int, default=0, help="tokens per example (default: the task's, capped by the model)")
    analyze.add_argument("--batch-size", type=int, default=8)
    analyze.add_argument("--threshold", type=float, default=0.8, help="cosine at which a neuron counts as redundant")
    analyze.add_argument("--sensitivity", choices=["reference", "activation"], default="reference")
    analyze.add_argument("--device", default="auto")
    analyze.add_argument("--format", choices=["table", "json"], default="table")
    analyze.set_defaults(handler=cmd_analyze)

    dash = sub.add_parser("dashboard", help="serve the results dashboard (Streamlit) on localhost")
    dash.add_argument("--db", help=db_help)
    dash.add_argument("--port", type=int, default=8501)
    dash.add_argument("--address", default="127.0.0.1", help="interface to listen on (default: localhost only)")
    dash.set_defaults(handler=cmd_dashboard)

    export = sub.add_parser("export", help="copy a job's pruned model to a folder that transformers loads")
    export.add_argument("job_id", metavar="JOB_ID", help="spec hash or a unique prefix of it")
    export.add_argument("--out", required=True, help="folder to create (must not exist or be empty)")
    export.add_argument("--db", help=db_help)
    export.set_defaults(handler=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    from harness.params import ConfigError
    from results.store import StoreError

    try:
        return args.handler(args)
    except (ConfigError, StoreError, UsageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
