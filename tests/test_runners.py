"""Several ``harness run`` processes on one database and one matrix (a Slurm job array,
several machines): every job done exactly once, work shared, a killed runner's job taken
over by a later runner and never run twice at once, a distillation teacher done before
its students wherever they run, ``--wait``, and honest start and end lines. Each test runs
on SQLite and on PostgreSQL.

The runners are real processes running ``harness.cli.main(["run", ...])``, the code behind
``python -m harness run``, with the local executor. To keep this file quick on a small
machine, they are forked from one warm server process that has imported the harness,
torch and the test-only methods once (tests/faulty.py) and touched no database: a runner
starts its run when it is forked, in its own session, with its own pid, log and exit code.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, update

from harness.config import load_matrix
from harness.job import Execution
from harness.orchestrate import pending, run_matrix
from harness.progress import Reporter
from results.schema import Job, Run
from results.store import Store, database_url, now
from tasks._data import read_jsonl
from tests import faulty  # noqa: F401  (registers test-slow here too, for matrix validation)
from tests.conftest import write_matrix
from tests.databases import REPO, db_url  # noqa: F401  (the fixture: each test on SQLite and PostgreSQL)

# The fork server: imports everything a job needs, then forks one runner per request line
# ({"args", "log", "env", "dense_sleep"}) and answers its pid. Runners it forks are reaped
# by the kernel (SIGCHLD ignored here), so a killed one is gone at once, as on a real host.
SERVER = r"""
import json, os, signal, sys, time
import tests.faulty  # the test-only methods (test-slow)
import harness.cli, harness.config, harness.executors, harness.job, harness.orchestrate, harness.pruning
import harness.export, harness.distill, harness.train, results.store, tasks.wikitext, methods.random
import transformers
from transformers import AutoTokenizer, GPT2LMHeadModel

signal.signal(signal.SIGCHLD, signal.SIG_IGN)
print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid:
        print(pid, flush=True)
        continue
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()  # its own session, as a process started from a terminal or by a scheduler
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    os.environ.update(request["env"])
    if request.get("dense_sleep"):  # a slow dense (teacher) job: it sleeps at every training step
        penalty = harness.pruning.NoPruning.penalty
        def slow(self, kept, _penalty=penalty, _sleep=request["dense_sleep"]):
            time.sleep(_sleep)
            return _penalty(self, kept)
        harness.pruning.NoPruning.penalty = slow
    try:
        code = harness.cli.main(request["args"])
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    except BaseException:
        import traceback
        traceback.print_exc()
        code = 99
    sys.stdout.flush(); sys.stderr.flush()
    with open(request["log"] + ".rc.tmp", "w") as handle:
        handle.write(str(code))
    os.rename(request["log"] + ".rc.tmp", request["log"] + ".rc")
    os._exit(code)
"""

RUN_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


class Runner:
    """One forked ``harness run`` process."""

    def __init__(self, name: str, pid: int, log: Path):
        self.name, self.pid, self.log = name, pid, log
        self.killed = False

    def code(self) -> int | None:
        """Its exit code; None while it runs; -9 once killed."""
        rc = Path(f"{self.log}.rc")
        if rc.exists():
            return int(rc.read_text())
        if self.killed or not _alive(self.pid):
            return -9 if self.killed else -1  # -1: gone without an exit code (crashed)
        return None

    def running(self) -> bool:
        return self.code() is None

    def wait(self, timeout: float, logs: str = "") -> int:
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() > deadline:
                raise AssertionError(f"runner {self.name} still running after {timeout:.0f}s\n{logs}")
            time.sleep(0.2)
        return self.code()

    def kill(self) -> None:
        self.killed = True
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while _alive(self.pid):
            time.sleep(0.05)

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


class Server:
    def __init__(self):
        env = dict(os.environ, PYTHONPATH=str(REPO), **RUN_ENV)
        self.process = subprocess.Popen([sys.executable, "-c", SERVER], cwd=REPO, env=env, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.process.stdout.readline().strip() == "ready", "the runner server did not start"
        self.runners: list[Runner] = []

    def start(self, name: str, args: list[str], folder: Path, dense_sleep: float = 0.0) -> Runner:
        log = folder / f"{name}.log"
        request = {"args": ["run", *args], "log": str(log), "env": {k: os.environ[k] for k in ("HARNESS_CACHE",)
                                                                     if k in os.environ}, "dense_sleep": dense_sleep}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        runner = Runner(name, int(self.process.stdout.readline()), log)
        self.runners.append(runner)
        return runner

    def stop_all(self) -> None:
        for runner in self.runners:
            if runner.running():
                runner.kill()
        self.runners.clear()

    def close(self) -> None:
        self.stop_all()
        self.process.stdin.close()
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def server():
    server = Server()
    yield server
    server.close()


@pytest.fixture
def fleet(server):
    """The server, with every runner a test started killed at its end."""
    yield server
    server.stop_all()


# -- a small matrix on tiny data -------------------------------------------------------------
@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> dict[str, str]:
    """A few KB of the embedded wiki text per split: tokenizing it costs nothing."""
    folder = tmp_path_factory.mktemp("runner-data")
    files = {}
    for split, chars in (("train", 12_000), ("validation", 3_000), ("test", 3_000)):
        text = read_jsonl(REPO / "tasks" / "data" / "wiki" / f"{split}.jsonl.gz")[0]["text"][:chars]
        rows = [{"text": line} for line in text.split("\n")]
        path = folder / f"{split}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        files[split] = str(path)
    return files


def matrix_file(folder: Path, model: Path, data_files: dict, methods: list, sparsities: list, steps: int,
                dense: bool = False, seeds: tuple = (0,), **train) -> Path:
    return write_matrix(folder, {
        "name": "runners", "pretrained_baseline": False, "dense_baseline": dense, "models": [str(model)],
        "tasks": [{"name": "wikitext", "data_files": data_files, "max_train_examples": 8, "max_eval_tokens": 256}],
        "methods": methods, "sparsities": sparsities, "seeds": list(seeds),
        "train": {"steps": steps, "batch_size": 4, "max_length": 64, **train},
        "eval": {"batch_size": 4, "analysis_examples": 0, "speed_repeats": 0},
    })


def slow(sleep: float) -> dict:
    return {"name": "test-slow", "params": {"sleep": sleep}}


def run_args(matrix: Path, url: str, folder: Path, *extra: str) -> list[str]:
    return ["--matrix", str(matrix), "--db", url, "--artifacts", str(folder / "artifacts"), "--device", "cpu",
            "--threads", "1", "--no-save-models", *extra]


# -- reading the database --------------------------------------------------------------------
_engines: dict[str, object] = {}


def engine(url: str):
    if url not in _engines:
        _engines[url] = create_engine(database_url(url))
    return _engines[url]


@pytest.fixture(autouse=True)
def _dispose_engines():
    yield
    while _engines:
        _engines.popitem()[1].dispose()  # PostgreSQL: the database is dropped after the test


def jobs(url: str) -> list:
    try:
        with engine(url).connect() as connection:
            return list(connection.execute(select(Job.id, Job.spec_hash, Job.attempt, Job.run_id, Job.status,
                                                  Job.method, Job.sparsity, Job.started_at, Job.finished_at,
                                                  Job.error).order_by(Job.id)))
    except Exception:  # the schema is not created yet
        return []


def runs(url: str) -> list:
    with engine(url).connect() as connection:
        return list(connection.execute(select(Run.id, Run.pid, Run.status, Run.started_at, Run.finished_at)
                                       .order_by(Run.id)))


def run_of(url: str, runner: Runner) -> int:
    (run_id,) = [r.id for r in runs(url) if r.pid == runner.pid]
    return run_id


def logs(*runners: Runner) -> str:
    return "\n".join(f"--- {r.name} (pid {r.pid}, exit {r.code()}) ---\n{r.output()[-3000:]}" for r in runners)


def state(url: str) -> str:
    return "\n".join(f"  job {j.id} {j.spec_hash[:12]} #{j.attempt} run {j.run_id} {j.status} {j.method} "
                     f"s={j.sparsity} {j.started_at} -> {j.finished_at} {j.error or ''}" for j in jobs(url))


def wait_until(condition, what: str, url: str, runners: list[Runner], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{state(url)}\n{logs(*runners)}")
        time.sleep(0.1)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def assert_exactly_once(url: str, hashes: set[str], detail: str) -> list:
    """Every job done by exactly one attempt, nothing left unfinished, no two attempts of a
    job running at the same time. Returns the job rows."""
    rows = jobs(url)
    done = {}
    for job in rows:
        if job.status == "done":
            assert job.spec_hash not in done, f"{job.spec_hash[:12]} done twice\n{detail}"
            done[job.spec_hash] = job
    assert set(done) == hashes, f"not every job done once\n{detail}"
    assert not [j for j in rows if j.status in ("pending", "running")], f"jobs left unfinished\n{detail}"
    started = [j for j in rows if j.started_at is not None]
    for first in started:
        for second in started:
            if first.id < second.id and first.spec_hash == second.spec_hash:
                assert first.finished_at is not None and first.finished_at <= second.started_at, \
                    f"attempts {first.id} and {second.id} of {first.spec_hash[:12]} overlap\n{detail}"
    return rows


# -- the tests -------------------------------------------------------------------------------
def test_three_runners_share_the_matrix_each_job_once(fleet, db_url, tmp_path, tiny_model_dir, data_files):
    path = matrix_file(tmp_path, tiny_model_dir, data_files, [slow(0.5)], [0.2, 0.3, 0.4, 0.5, 0.6, 0.7], steps=4)
    hashes = {spec.spec_hash for spec in load_matrix(path).jobs}
    assert len(hashes) == 6
    runners = []
    for name in ("r1", "r2", "r3"):  # a Slurm array's tasks start at about the same time
        runners.append(fleet.start(name, run_args(path, db_url, tmp_path), tmp_path))
        time.sleep(1.0)
    codes = [runner.wait(120, logs(*runners)) for runner in runners]
    detail = f"{state(db_url)}\n{logs(*runners)}"
    assert codes == [0, 0, 0], detail
    rows = assert_exactly_once(db_url, hashes, detail)
    assert len(rows) == 6, f"a job was attempted twice\n{detail}"  # no runner took a job another one held
    by_run = {run_of(db_url, r): r.name for r in runners}
    finished_by = {by_run[j.run_id] for j in rows if j.status == "done"}
    assert finished_by == {"r1", "r2", "r3"}, f"a runner finished no job\n{detail}"
    assert [r.status for r in runs(db_url)] == ["finished"] * 3, detail
    for runner in runners:  # the start line is honest; each counts what it did itself
        out = runner.output()
        assert "6 jobs: 0 already done" in out and "to run" in out, detail
        assert "taken by other runners" in out, detail


def test_killed_runner_job_is_taken_over_by_a_later_runner_never_twice_at_once(
        fleet, db_url, tmp_path, tiny_model_dir, data_files):
    # Two quick jobs, then two slow ones (about 5 s each).
    path = matrix_file(tmp_path, tiny_model_dir, data_files, ["random", slow(0.6)], [0.3, 0.5], steps=8)
    specs = load_matrix(path).jobs
    slow_hashes = [s.spec_hash for s in specs if s.method["name"] == "test-slow"]
    hashes = {s.spec_hash for s in specs}
    a = fleet.start("a", run_args(path, db_url, tmp_path), tmp_path)
    every: list[Runner] = [a]

    def held(run_id: int) -> list:
        return [j for j in jobs(db_url) if j.run_id == run_id and j.status == "running" and j.method == "test-slow"]

    wait_until(lambda: any(j.status == "running" and j.method == "test-slow" for j in jobs(db_url)),
               "runner a to start a slow job", db_url, every)
    run_a = run_of(db_url, a)
    (victim,) = held(run_a)
    assert sum(j.status == "done" for j in jobs(db_url)) == 2
    b = fleet.start("b", run_args(path, db_url, tmp_path), tmp_path)
    every.append(b)
    wait_until(lambda: any(r.pid == b.pid for r in runs(db_url)) and held(run_of(db_url, b)),
               "runner b to start a slow job", db_url, every)
    assert b.running() and a.running(), logs(*every)
    a.kill()  # mid-job: its claim stays 'running' in the database
    killed_at = utcnow()
    assert [j.status for j in jobs(db_url) if j.id == victim.id] == ["running"]
    c = fleet.start("c", run_args(path, db_url, tmp_path), tmp_path)
    every.append(c)
    codes = [b.wait(120, logs(*every)), c.wait(120, logs(*every))]
    detail = f"{state(db_url)}\n{logs(*every)}"
    assert codes == [0, 0], detail

    rows = assert_exactly_once(db_url, hashes, detail)
    attempts = [j for j in rows if j.spec_hash == victim.spec_hash]
    assert [(j.attempt, j.status) for j in attempts] == [(1, "interrupted"), (2, "done")], detail
    assert attempts[0].run_id == run_a and "stopped during this job" in attempts[0].error, detail
    rerun = attempts[1]
    # b had passed it by (a held it then); c, started after the kill, saw a was gone and took it.
    assert rerun.run_id == run_of(db_url, c) and rerun.started_at > killed_at, detail
    assert len(rows) == len(hashes) + 1, f"only the killed job has a second attempt\n{detail}"
    statuses = {r.id: r.status for r in runs(db_url)}
    assert statuses == {run_a: "died", run_of(db_url, b): "finished", run_of(db_url, c): "finished"}, detail
    # The start lines: b came while a held a slow job; c after a was killed, while b held one.
    assert "4 jobs: 2 already done, 1 running elsewhere, 1 to run" in b.output(), detail
    assert "4 jobs: 2 already done, 1 running elsewhere, 1 to run" in c.output(), detail
    assert len(slow_hashes) == 2


def test_students_wait_for_their_teacher_across_runners_and_wait_polls(
        fleet, db_url, tmp_path, tiny_model_dir, data_files):
    # The dense job (slowed to ~3 s) teaches the two students (test-slow, ~6 s each: the
    # second runner polls every 2 s, so its student starts up to 2 s after the first's).
    path = matrix_file(tmp_path, tiny_model_dir, data_files, [slow(1.0)], [0.0, 0.4, 0.6], steps=6, distill=True)
    specs = load_matrix(path).jobs
    assert [s.method["name"] for s in specs].count("dense") == 1 and len(specs) == 3
    (teacher,) = [s for s in specs if s.method["name"] == "dense"]
    a = fleet.start("a", run_args(path, db_url, tmp_path), tmp_path, dense_sleep=0.5)
    every = [a]
    wait_until(lambda: any(j.status == "running" for j in jobs(db_url)), "runner a to start the teacher", db_url, every)
    assert [(j.spec_hash, j.status) for j in jobs(db_url)] == [(teacher.spec_hash, "running")], state(db_url)
    b = fleet.start("b", run_args(path, db_url, tmp_path), tmp_path, dense_sleep=0.5)
    every.append(b)

    def students_running() -> int:
        return sum(j.status == "running" and j.method != "dense" for j in jobs(db_url))

    wait_until(lambda: students_running() == 2, "both students to run", db_url, every)
    # A third runner with nothing left to claim: --wait keeps it until the others finish.
    c = fleet.start("c", run_args(path, db_url, tmp_path, "--wait"), tmp_path)
    every.append(c)
    codes = [r.wait(120, logs(*every)) for r in every]
    detail = f"{state(db_url)}\n{logs(*every)}"
    assert codes == [0, 0, 0], detail

    rows = assert_exactly_once(db_url, {s.spec_hash for s in specs}, detail)
    assert len(rows) == 3, detail
    (dense,) = [j for j in rows if j.spec_hash == teacher.spec_hash]
    students = [j for j in rows if j.spec_hash != teacher.spec_hash]
    assert all(s.started_at >= dense.finished_at for s in students), f"a student started before its teacher\n{detail}"
    run_ids = {r.name: run_of(db_url, r) for r in every}
    assert {j.run_id for j in students} == {run_ids["a"], run_ids["b"]}, f"the students were not split\n{detail}"
    assert "3 jobs: 0 already done, 1 running elsewhere, 2 to run" in b.output(), detail
    out_c = c.output()
    assert "3 jobs: 1 already done, 2 running elsewhere, 0 to run" in out_c, detail
    assert re.search(r"^waiting: [12] jobs? still running in other runs$", out_c, re.M), detail
    assert "nothing to do here: other runners hold the remaining 2 jobs" in out_c, detail
    (run_c,) = [r for r in runs(db_url) if r.id == run_ids["c"]]
    assert run_c.status == "finished" and run_c.finished_at >= max(s.finished_at for s in students), detail


# -- in this process: runners whose holder is a stand-in run, to script what it does ---------
class InProcess:
    """``run_matrix`` in a thread (the local executor, in this process), its lines captured."""

    def __init__(self, matrix_path: Path, url: str, folder: Path, wait: bool = False):
        self.output, self.code = io.StringIO(), None
        matrix = load_matrix(matrix_path)
        execution = Execution("cpu", None, artifacts=str(folder / "artifacts"), save_models=False)

        def target():
            self.code = run_matrix(matrix, Store(url), matrix.jobs, execution=execution, wait=wait,
                                   reporter=Reporter(self.output, interactive=False), poll_seconds=0.2)

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def join(self, timeout: float, detail: str) -> int:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the runner never ended\n{detail}\n{self.output.getvalue()}"
        return self.code


def stand_in(store: Store, spec, pid: int, status: str = "running") -> tuple[int, int]:
    """Another runner's run (driver pid ``pid`` on this host) holding ``spec``: (run, job)."""
    run = store.start_run("elsewhere", "m.yaml", "h", "local")
    with store.engine.begin() as connection:
        connection.execute(update(Run).where(Run.id == run).values(pid=pid))
    job, why = store.claim_next(run, pending(spec), {}, "0")
    assert job is not None, why
    store.set_status(job, status, worker="elsewhere")
    return run, job


def attempts(url: str, spec_hash: str) -> list[tuple]:
    return [(j.run_id, j.status) for j in jobs(url) if j.spec_hash == spec_hash]


def test_a_teacher_is_taken_over_when_its_runner_dies_and_fails_its_students_when_it_fails(
        db_url, tmp_path, tiny_model_dir, data_files):
    store = Store(db_url)
    paths, specs = {}, {}
    for seed in (0, 1):  # seed 0: the teacher's runner dies; seed 1: the teacher fails there
        (tmp_path / f"seed{seed}").mkdir()
        paths[seed] = matrix_file(tmp_path / f"seed{seed}", tiny_model_dir, data_files, ["random"], [0.0, 0.5],
                                  steps=2, seeds=(seed,), distill=True)
        specs[seed] = {s.method["name"]: s for s in load_matrix(paths[seed]).jobs}
        assert set(specs[seed]) == {"dense", "random"}

    holder = subprocess.Popen(["sleep", "300"])
    try:
        run_x, _ = stand_in(store, specs[0]["dense"], holder.pid)
        run_y, teacher_y = stand_in(store, specs[1]["dense"], os.getpid())
        dies = InProcess(paths[0], db_url, tmp_path / "seed0")
        fails = InProcess(paths[1], db_url, tmp_path / "seed1")
        time.sleep(1.5)  # both watch a teacher another live run holds
        assert dies.thread.is_alive() and fails.thread.is_alive(), state(db_url)
        assert len(jobs(db_url)) == 2, f"a student was claimed before its teacher was done\n{state(db_url)}"
        holder.kill()
        holder.wait()
        store.set_status(teacher_y, "failed", error="RuntimeError: boom")
        store.finish_run(run_y)
        codes = [dies.join(90, state(db_url)), fails.join(90, state(db_url))]
    finally:
        if holder.poll() is None:
            holder.kill()
    detail = f"{state(db_url)}\n--- dies ---\n{dies.output.getvalue()}\n--- fails ---\n{fails.output.getvalue()}"
    assert codes == [0, 1], detail
    assert "2 jobs: 0 already done, 1 running elsewhere, 1 to run" in dies.output.getvalue(), detail
    # Its runner died: taken over here, then its student ran.
    teacher = [j for j in jobs(db_url) if j.spec_hash == specs[0]["dense"].spec_hash]
    assert [j.status for j in teacher] == ["interrupted", "done"] and teacher[0].run_id == run_x, detail
    assert teacher[1].run_id not in (run_x, run_y), detail
    (student,) = [j for j in jobs(db_url) if j.spec_hash == specs[0]["random"].spec_hash]
    assert student.status == "done" and student.started_at >= teacher[1].finished_at, detail
    # It failed in the other runner: not retried here (rerunning the command does that); its student fails unrun.
    assert attempts(db_url, specs[1]["dense"].spec_hash) == [(run_y, "failed")], detail
    ((_, status),) = attempts(db_url, specs[1]["random"].spec_hash)
    (failed_student,) = [j for j in jobs(db_url) if j.spec_hash == specs[1]["random"].spec_hash]
    assert status == "failed" and failed_student.started_at is None, detail
    assert failed_student.error.startswith("dependency ") and failed_student.error.endswith("failed; not run"), detail


def test_wait_takes_over_a_dead_runners_job_and_a_finished_matrix_says_so(db_url, tmp_path, tiny_model_dir, data_files):
    path = matrix_file(tmp_path, tiny_model_dir, data_files, ["random"], [0.3, 0.5], steps=2)
    held, free = load_matrix(path).jobs
    store = Store(db_url)
    holder = subprocess.Popen(["sleep", "300"])
    try:
        run_x, _ = stand_in(store, held, holder.pid)
        waiting = InProcess(path, db_url, tmp_path, wait=True)
        wait_until(lambda: re.search(r"^waiting: 1 jobs? still running", waiting.output.getvalue(), re.M),
                   "the runner to wait", db_url, [])
        holder.kill()
        holder.wait()
        code = waiting.join(90, state(db_url))
    finally:
        if holder.poll() is None:
            holder.kill()
    detail = f"{state(db_url)}\n{waiting.output.getvalue()}"
    assert code == 0, detail
    assert attempts(db_url, free.spec_hash)[0][1] == "done", detail
    assert [status for _, status in attempts(db_url, held.spec_hash)] == ["interrupted", "done"], detail
    assert "finished in " in waiting.output.getvalue() and ": 2 done, 0 failed" in waiting.output.getvalue(), detail
    # Run again: everything is done; one line says so, no line per job.
    again = InProcess(path, db_url, tmp_path)
    assert again.join(60, detail) == 0
    lines = again.output.getvalue().splitlines()
    assert lines == ["2 jobs: 2 already done, 0 to run", lines[1]] and \
        lines[1].startswith("nothing to do here: all 2 jobs already done"), lines


def test_claims_honor_the_sweep(db_url):
    """Store level: a run marked dead by another runner claims nothing; with --force, a job
    claimed before this run started and done after counts as this sweep's; a job that
    failed in another runner after this run started is not retried by it, one that failed
    before is."""
    from tests.databases import pending as job, result

    store = Store(db_url)
    first = store.start_run("m", "m.yaml", "h")
    a, _ = store.claim_next(first, job("a"), {}, "0")
    store.set_status(a, "running")
    since = now()
    time.sleep(0.01)
    second = store.start_run("m", "m.yaml", "h")
    store.finish_job(a, result())
    assert store.claim_next(second, job("a"), {}, "0", done_since=since) == (None, "done")
    assert store.survey(["a" * 8], second, done_since=since) == {"a" * 8: "done"}
    assert store.survey(["a" * 8], second, done_since=now()) == {}  # an older sweep's: not done for --force
    # Failures: before this run's start, retried; after it, not.
    b, _ = store.claim_next(first, job("b"), {}, "0")
    store.set_status(b, "failed", error="x")
    later = now()
    time.sleep(0.01)
    c, _ = store.claim_next(first, job("c"), {}, "0")
    store.set_status(c, "failed", error="x")
    blocked, why = store.claim_next(second, job("c"), {}, "0", failed_since=later)
    assert blocked is None and why == f"failed in run {first}"
    assert store.claim_next(second, job("b"), {}, "0", failed_since=later)[0] is not None
    assert store.survey(["b" * 8, "c" * 8], second, failed_since=later) == {"c" * 8: "failed"}
    # A run another runner marked dead (a stale heartbeat) claims nothing more.
    with store.engine.begin() as connection:
        connection.execute(update(Run).where(Run.id == second).values(status="died"))
    taken, why = store.claim_next(second, job("d"), {}, "0")
    assert taken is None and why.startswith(f"not claimed: this run ({second}) was marked died")
