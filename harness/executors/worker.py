"""A worker process of the processes executor: ``python -m harness.executors.worker FD``.

A fixed entry point: the worker never imports or re-runs its parent's ``__main__`` (the
CLI, a user's script without a ``__main__`` guard, a notebook, a Streamlit app), unlike
multiprocessing's spawn. The driver hands it one end of a socket pair (file descriptor
FD); the first message says how to run jobs, each further one is a job spec, and the
worker answers every job with a start and an end event. It exits when the driver sends
None, closes the socket, or dies.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection

from harness.executors.base import run_one, worker_identity
from harness.spec import JobSpec


def _exit_with_parent(parent: int) -> None:
    """A SIGKILLed driver must not leave workers computing."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def main(fd: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the driver decides
    connection = Connection(fd)
    try:
        execution, preload, parent = connection.recv()
    except EOFError:
        return
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    for module in preload:
        importlib.import_module(module)
    identity = worker_identity(execution)
    while True:
        try:
            payload = connection.recv()
        except EOFError:
            return
        if payload is None:
            return
        spec = JobSpec.from_dict(payload)
        connection.send(("start", identity))
        connection.send(("end", run_one(spec, execution)))


if __name__ == "__main__":
    main(int(sys.argv[1]))
