"""A job spec: the fully resolved configuration of one fine-tune-and-prune job.

Frozen and hashable (HELM's run spec). The hash is sha256 of the canonical JSON (sorted
keys, no whitespace), so key order and YAML formatting never change it. Local data file
*paths* are locations, not identity: the hash covers their content hashes (in
``task.data``) instead, so moving a checkout does not invalidate finished jobs.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any


def canonical_json(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, eq=False)
class JobSpec:
    model: dict[str, Any]  # name, source (embedded|local|hub), revision or content hash
    task: dict[str, Any]  # name, params, data (identity)
    method: dict[str, Any]  # name, params
    sparsity: float
    seed: int
    train: dict[str, Any]
    eval: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(asdict(self))

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> JobSpec:
        return cls(**{key: copy.deepcopy(payload[key]) for key in cls.__dataclass_fields__})

    def hash_payload(self) -> dict[str, Any]:
        payload = self.to_dict()
        payload["task"]["params"].pop("data_files", None)
        return payload

    @cached_property
    def spec_hash(self) -> str:
        return hashlib.sha256(canonical_json(self.hash_payload()).encode()).hexdigest()

    @property
    def short_hash(self) -> str:
        return self.spec_hash[:12]

    @property
    def method_label(self) -> str:
        from harness.registry import METHODS

        return METHODS.get(self.method["name"]).label(self.method["name"], self.method["params"])

    @property
    def label(self) -> str:
        return f"{self.model['name']}/{self.task['name']}/{self.method_label}/s={self.sparsity:g}/seed={self.seed}"

    def __hash__(self) -> int:
        return hash(self.spec_hash)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobSpec) and other.spec_hash == self.spec_hash
