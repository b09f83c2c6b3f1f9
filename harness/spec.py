"""A job spec: the fully resolved configuration of one job, and its identity.

Frozen and hashable (HELM's run spec). Three kinds of job: a pruning method at a
sparsity; ``dense`` (fine-tuned, nothing pruned: the baseline every table shows); and
``pretrained`` (the untouched model evaluated with the task's protocol: the reference a
fine-tune must improve on). ``dense`` and ``pretrained`` are not methods: no registry
entry, no pruner.

Hash policy (spec version 2; README "Job identity"). The id is sha256 of the canonical
JSON (sorted keys, no whitespace) of the spec *minus every setting equal to its declared
default*, plus ``spec_version`` and each method's ``version``. So:
- adding a setting whose default keeps today's behaviour changes no job's id;
- changing what a default means bumps ``SPEC_VERSION`` (train, eval, task and model
  defaults) or the method's ``version`` (its parameters and dynamics), which changes the
  ids it touches: results of the old meaning are kept, labelled with their version, and
  never taken for new ones (CHANGELOG.md says what each version changed);
- key order and YAML formatting never matter. Local data file *paths* are locations, not
  identity: the hash covers their content hashes (``task.data``).
``spec_json`` in the database always holds the full resolved spec.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from harness import sections
from harness.params import defaults_of
from harness.registry import METHODS, TASKS

SPEC_VERSION = 2
DENSE, PRETRAINED = "dense", "pretrained"
BASELINES = (DENSE, PRETRAINED)
# Train settings a pretrained row's evaluation depends on (it trains nothing).
PRETRAINED_TRAIN_KEYS = ("max_length", "dtype", "precision")


def canonical_json(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def baseline_method(name: str) -> dict[str, Any]:
    return {"name": name, "params": {}}


@dataclass(frozen=True, eq=False)
class JobSpec:
    model: dict[str, Any]  # name, source (embedded|local|hub|cached), revision or content hash
    task: dict[str, Any]  # name, params, data (identity)
    method: dict[str, Any]  # name, params (and version, for registered methods)
    sparsity: float
    seed: int
    train: dict[str, Any]
    eval: dict[str, Any]
    spec_version: int = field(default=SPEC_VERSION)

    # -- what it is --------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """"pretrained", "dense" or "prune"."""
        name = self.method["name"]
        return name if name in BASELINES else "prune"

    @property
    def prunes(self) -> bool:
        return self.kind == "prune"

    @property
    def trains(self) -> bool:
        return self.kind != PRETRAINED

    # -- serialization -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(asdict(self))

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> JobSpec:
        """A spec from its stored JSON; specs written before spec versions are version 1."""
        fields = {key: copy.deepcopy(payload[key]) for key in cls.__dataclass_fields__ if key in payload}
        fields.setdefault("spec_version", 1)
        return cls(**fields)

    # -- identity ------------------------------------------------------------------------
    def hash_payload(self) -> dict[str, Any]:
        """What the id covers: the spec without settings at their declared defaults."""
        payload = self.to_dict()
        payload["task"]["params"] = _non_default(payload["task"]["params"], _task_defaults(self.task["name"]))
        payload["task"]["params"].pop("data_files", None)
        if self.prunes:
            payload["method"]["params"] = _non_default(payload["method"]["params"],
                                                       defaults_of(METHODS.get(self.method["name"]).defaults))
        payload["train"] = _non_default(payload["train"], sections.defaults("train"))
        payload["eval"] = _non_default(payload["eval"], sections.defaults("eval"))
        return payload

    @cached_property
    def spec_hash(self) -> str:
        return hashlib.sha256(canonical_json(self.hash_payload()).encode()).hexdigest()

    @cached_property
    def group_hash(self) -> str:
        """Hash of every identity field except the seed: the leaderboard's grouping key."""
        payload = self.hash_payload()
        payload.pop("seed")
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()

    @property
    def short_hash(self) -> str:
        return self.spec_hash[:12]

    # -- labels --------------------------------------------------------------------------
    @property
    def method_label(self) -> str:
        if not self.prunes:
            return self.method["name"]
        return METHODS.get(self.method["name"]).label(self.method["name"], self.method["params"])

    @property
    def label(self) -> str:
        return f"{self.model['name']}/{self.task['name']}/{self.method_label}/s={self.sparsity:g}/seed={self.seed}"

    def labels(self) -> dict[str, Any]:
        """The denormalized columns a job row carries for queries."""
        return {"model": self.model["name"], "task": self.task["name"], "method": self.method["name"],
                "method_label": self.method_label, "sparsity": self.sparsity, "seed": self.seed,
                "spec_version": self.spec_version}

    def __hash__(self) -> int:
        return hash(self.spec_hash)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobSpec) and other.spec_hash == self.spec_hash


def _task_defaults(name: str) -> dict[str, Any]:
    return defaults_of(TASKS.get(name).defaults) if name in TASKS else {}


def _non_default(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if key not in defaults or defaults[key] != value}


# -- how jobs relate ------------------------------------------------------------------------
def dense_train(train: dict[str, Any]) -> dict[str, Any]:
    """A dense job's train settings: it never distills (it is the teacher)."""
    return sections.finish("train", {**train, "distill": False}, "train")


def teacher_spec(spec: JobSpec) -> JobSpec | None:
    """The dense job whose fine-tuned model teaches ``spec``, or None if it does not distill."""
    if not spec.train.get("distill"):
        return None
    return JobSpec(spec.model, spec.task, baseline_method(DENSE), 0.0, spec.seed, dense_train(spec.train), spec.eval)


def pretrained_spec(spec: JobSpec) -> JobSpec:
    """The pretrained row of ``spec``'s model, task and evaluation settings."""
    train = {key: spec.train[key] for key in PRETRAINED_TRAIN_KEYS if key in spec.train}
    return JobSpec(spec.model, spec.task, baseline_method(PRETRAINED), 0.0, 0, train, spec.eval)


def job_dependencies(spec: JobSpec) -> list[JobSpec]:
    """Jobs that must be done before ``spec`` runs (a distillation student's dense
    teacher); every executor and every runner sharing a database respects them."""
    teacher = teacher_spec(spec)
    return [teacher] if teacher is not None else []
