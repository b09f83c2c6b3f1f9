"""Test-only pruning methods and a task that misbehave on purpose: the fault tests import this
module, and so do their worker processes (executors' ``preload``) and CLI subprocesses."""

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


from harness.params import Param  # noqa: E402
from harness.registry import TASKS  # noqa: E402
from harness.types import Metric  # noqa: E402
from tasks.news_embedded import NewsEmbedded  # noqa: E402


@TASKS.register("test-inf-metric")
class InfiniteMetric(NewsEmbedded):
    """news-embedded whose evaluation also reports ``bad_metric`` = +inf or NaN (``value``)
    on the role it names: a metric that is not finite, for the driver to refuse."""

    defaults = {**NewsEmbedded.defaults,
                "value": Param("inf", "bad_metric's value", choices=("inf", "-inf", "nan")),
                "role": Param("test", "where bad_metric is reported", choices=("test", "validation"))}

    def evaluate(self, model, tokenizer, settings, device, role="test", max_length=0):
        result = super().evaluate(model, tokenizer, settings, device, role, max_length)
        if role == self.params["role"]:
            split = result.metrics[0].split
            result.metrics.append(Metric("bad_metric", float(self.params["value"]), False, split))
        return result
