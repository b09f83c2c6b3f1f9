"""lm-evaluation-harness tasks run on the in-memory (pruned) model: ``lmeval:<task>``."""

from __future__ import annotations

import random
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.params import Param
from harness.registry import TASKS
from harness.task import EvalResult, Task, file_sha256
from harness.types import Metric


def lm_eval_version() -> str | None:
    try:
        return version("lm_eval")
    except PackageNotFoundError:
        return None


@TASKS.register("lmeval:*")
class LmEval(Task):
    """Any lm-evaluation-harness task (lmeval:<task>) evaluated on the in-memory pruned model; metrics and their direction from lm-eval."""

    task_type = "evaluation_only"
    defaults: dict[str, Any] = {
        "include_path": Param(None, "a folder of task YAMLs (local tasks, offline); None = lm-eval's built-ins only",
                              kind=str),
        "include_defaults": Param(None, "also index lm-eval's built-ins (~10 s); None = only without include_path",
                                  kind=bool),
        "num_fewshot": Param(None, "few-shot examples; None = the task's own default", kind=int, minimum=0),
        "bootstrap_iters": Param(0, "stderr bootstrap resamples", minimum=1, off=0, off_doc="skip (it is slow)"),
    }

    @property
    def lm_eval_task(self) -> str:
        task = self.name.split(":", 1)[1] if ":" in self.name else ""
        if not task or task == "*":
            raise ValueError(f"'{self.name}': name the lm-eval task, e.g. lmeval:hellaswag")
        return task

    def data_identity(self) -> dict[str, Any]:
        identity: dict[str, Any] = {"source": "lm-eval", "task": self.lm_eval_task, "lm_eval_version": lm_eval_version()}
        include = self.params.get("include_path")
        if include:
            folder = Path(include)
            if not folder.is_dir():
                raise FileNotFoundError(f"include_path: not a folder: {include}")
            # the task YAMLs and any local data beside them define the task: hash them all
            identity["include_path"] = str(folder)
            identity["files"] = {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}
        return identity

    def train_examples(self, tokenizer: Any, max_length: int):
        raise TypeError(f"{self.name} is evaluation-only: it has no training data")

    def eval_texts(self, tokenizer: Any, max_length: int, max_examples: int):
        raise TypeError(f"{self.name} is evaluation-only: redundancy analyses use the job's own task")

    def split_for(self, role: str) -> str | None:
        return None if role == "validation" else "lm-eval"  # lm-eval picks its own split; no validation role

    def evaluate(self, model: torch.nn.Module, tokenizer: Any, settings: dict[str, Any], device: torch.device,
                 role: str = "test", max_length: int = 0) -> EvalResult:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        task = self.lm_eval_task
        model.eval()
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=int(settings.get("batch_size") or 1))
        include = self.params.get("include_path")
        defaults = self.params.get("include_defaults")
        manager = TaskManager(include_path=include, include_defaults=bool(defaults)) if include else None
        limit = settings.get("max_examples") or None
        # lm-eval seeds the global RNGs; keep the caller's streams as they were
        states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        try:
            output = simple_evaluate(model=lm, tasks=[task], num_fewshot=self.params.get("num_fewshot"), limit=limit,
                                     task_manager=manager, bootstrap_iters=int(self.params.get("bootstrap_iters") or 0),
                                     log_samples=False, verbosity="ERROR")
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])
        if output is None:
            raise RuntimeError(f"lm-eval returned no results for task '{task}'")
        configs = output.get("configs", {})
        metrics, stderr = [], {}
        for subtask, values in output["results"].items():
            directions = output.get("higher_is_better", {}).get(subtask, {})
            config = configs.get(subtask, {})
            split = config.get("test_split") or config.get("validation_split") or "test"
            for key, value in values.items():
                metric, _, filter_name = key.partition(",")
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue  # "alias" and "N/A" stderr entries
                name = f"{subtask}/{metric}" + (f"/{filter_name}" if filter_name and filter_name != "none" else "")
                if metric.endswith("_stderr"):
                    stderr[name] = value
                elif metric in directions:
                    metrics.append(Metric(name, float(value), higher_is_better=bool(directions[metric]), split=split))
        protocol = {
            "source": "lm-evaluation-harness",
            "lm_eval_version": lm_eval_version(),
            "task": task,
            "limit": limit,
            "num_fewshot": {name: cfg.get("num_fewshot") for name, cfg in configs.items()},
            "output_type": {name: cfg.get("output_type") for name, cfg in configs.items()},
            "n_samples": output.get("n-samples"),
            "versions": output.get("versions"),
            "stderr": stderr,
            "data": self.data_identity(),
            "scale": "as lm-eval reports them (e.g. acc in 0-1), not the project's 0-100 percentages, "
                     "so they compare with published lm-eval numbers; lm-eval's wikitext perplexity is word-level",
        }
        return EvalResult(metrics=metrics, protocol=protocol)
