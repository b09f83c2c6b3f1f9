"""Test-only pruning methods that misbehave on purpose: the fault tests import this module,
and so do their worker processes (executors' ``preload``) and CLI subprocesses."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import torch

from harness.registry import METHODS
from methods.random import Random


@METHODS.register("test-slow")
class Slow(Random):
    """Random pruning that sleeps ``sleep`` seconds per training step: a job long enough
    to be killed in the middle of."""

    defaults = {"sleep": 0.5}

    def regularizer(self, context: Any, kept_fraction: float) -> torch.Tensor | None:
        time.sleep(self.params["sleep"])
        return None


@METHODS.register("test-crash")
class Crash(Random):
    """Kills its own process with SIGKILL at training step 2, as the kernel's OOM killer would."""

    def regularizer(self, context: Any, kept_fraction: float) -> torch.Tensor | None:
        if context.step == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return None


@METHODS.register("test-nan")
class NaN(Random):
    """A regularizer that returns NaN at step 3."""

    def regularizer(self, context: Any, kept_fraction: float) -> torch.Tensor | None:
        return torch.tensor(float("nan")) if context.step == 3 else None
