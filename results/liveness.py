"""Telling a live run from a dead one, so that a new run can take over the jobs a killed
run left 'running' without touching those of a run still going (results.store.Store.claim).

A run's driver writes a heartbeat every HEARTBEAT_EVERY seconds. A run is dead once its
heartbeat is older than STALE_AFTER (the only test for a run on another host: their
clocks must agree to within a minute), or, on this host, as soon as its driver process is
gone (a reused pid is caught by the stale heartbeat).
"""

from __future__ import annotations

import os
import threading
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from results.schema import Run
    from results.store import Store

HEARTBEAT_EVERY, STALE_AFTER = 15.0, 120.0


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:  # Linux: a killed child not yet reaped
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def run_alive(run: Run, host: str, cutoff: datetime) -> bool:
    """Whether ``run`` (status 'running') is still going; ``cutoff``: now - STALE_AFTER."""
    if run.heartbeat_at is None or run.heartbeat_at < cutoff:
        return False
    return run.host != host or run.pid is None or pid_alive(run.pid)


class Heartbeat:
    """Writes a run's heartbeat every ``every`` seconds from a daemon thread while in a
    ``with`` block."""

    def __init__(self, store: Store, run_id: int, every: float = HEARTBEAT_EVERY):
        self.store, self.run_id, self.every = store, run_id, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-run-{run_id}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.store.heartbeat(self.run_id)
            except Exception:  # a busy or briefly unreachable database: try again next beat
                pass

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
