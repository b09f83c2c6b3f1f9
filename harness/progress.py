"""Progress: a bar per job (step, loss, sparsity) and one for the matrix (jobs, ETA) on
a terminal; plain log lines otherwise (CI, files, pipes)."""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

from tqdm import tqdm

from harness.spec import JobSpec


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Reporter:
    def __init__(self, stream: TextIO | None = None, interactive: bool | None = None):
        stream = stream if stream is not None else sys.stderr  # the stderr of now, not of import time
        self.stream = stream
        self.interactive = stream.isatty() if interactive is None else interactive
        self._matrix_bar: tqdm | None = None
        self._job_bar: tqdm | None = None
        self._total = self._finished = self._begun = 0
        self._started = time.perf_counter()

    def note(self, text: str) -> None:
        """A line of its own (e.g. a job skipped because another run holds it)."""
        self._line(text)

    def _line(self, text: str) -> None:
        if self.interactive:
            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def matrix_start(self, total: int, already_done: int, elsewhere: int = 0) -> None:
        """``elsewhere``: jobs other live runs hold now (they may finish them, or leave them)."""
        self._total, self._finished, self._begun = total - already_done - elsewhere, 0, 0
        self._started = time.perf_counter()
        held = f", {elsewhere} running elsewhere" if elsewhere else ""
        self._line(f"{total} jobs: {already_done} already done{held}, {self._total} to run")
        if self.interactive and self._total:
            self._matrix_bar = tqdm(total=self._total, desc="matrix", unit="job", file=self.stream, position=0)

    def taken_elsewhere(self, spec: JobSpec, why: str) -> None:
        """A job this runner meant to run that another runner took (or finished) first."""
        self._total -= 1
        if self._matrix_bar is not None:
            self._matrix_bar.total = max(self._matrix_bar.n, self._total)
            self._matrix_bar.refresh()
        self._line(f"  skipped {spec.short_hash} {spec.label}: {why}")

    def job_start(self, spec: JobSpec, worker: str = "", bar: bool = True) -> None:
        """``worker``: where it runs; ``bar``: a step bar (jobs running one at a time only)."""
        self._begun += 1
        self._line(f"[{self._begun}/{self._total}] {spec.short_hash} {spec.label}" + (f" on {worker}" if worker else ""))
        if self.interactive and bar and spec.trains:
            self._job_bar = tqdm(total=spec.train["steps"], desc="  train", unit="step", file=self.stream,
                                 position=1, leave=False)

    def step_callback(self, spec: JobSpec) -> Callable[[int, float, float], None]:
        every = max(1, spec.train.get("steps", 0) // 5)

        def on_step(step: int, loss: float, sparsity: float) -> None:
            if self._job_bar is not None:
                self._job_bar.update(1)
                self._job_bar.set_postfix(loss=f"{loss:.3f}", sparsity=f"{sparsity:.2f}", refresh=False)
            elif step % every == 0 or step == spec.train["steps"]:
                self._line(f"    step {step}/{spec.train['steps']} loss {loss:.4f} sparsity {sparsity:.3f}")

        return on_step

    def job_end(self, spec: JobSpec, status: str, detail: str = "") -> None:
        if self._job_bar is not None:
            self._job_bar.close()
            self._job_bar = None
        self._finished += 1
        elapsed = time.perf_counter() - self._started
        eta = elapsed / self._finished * max(0, self._total - self._finished)
        self._line(f"    {spec.short_hash} {status}{': ' + detail if detail else ''} "
                   f"({self._finished}/{self._total} jobs, elapsed {_duration(elapsed)}, ETA {_duration(eta)})")
        if self._matrix_bar is not None:
            self._matrix_bar.update(1)

    def matrix_end(self, failures: int = 0, interrupted: bool = False, elsewhere: int = 0, total: int = 0,
                   done_before: int = 0) -> None:
        """``elsewhere``: jobs other runners took while this one ran (not counted as its own);
        ``done_before``: of the ``total``, those done before this run started."""
        if self._matrix_bar is not None:
            self._matrix_bar.close()
        elapsed = _duration(time.perf_counter() - self._started)
        others = f"; {elsewhere} taken by other runners" if elsewhere else ""
        if interrupted:
            self._line(f"interrupted after {elapsed}; rerun the same command to continue")
        elif not self._finished and elsewhere:
            self._line(f"nothing to do here: other runners hold the remaining {_jobs(elsewhere)} ({elapsed})")
        elif not self._finished and total and done_before == total:
            self._line(f"nothing to do here: all {_jobs(total)} already done ({elapsed})")
        else:
            self._line(f"finished in {elapsed}: {self._finished - failures} done, {failures} failed{others}")


def _jobs(count: int) -> str:
    return f"{count} job{'s' if count != 1 else ''}"
