"""The ``harness`` command line. Bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import os
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
    store = _store(args)
    return run_matrix(matrix, store, jobs, force=args.force, execution=Execution(args.device, args.threads))


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
