"""Job identity: the hash policy of spec version 2 (harness/spec.py).

Defaults are not hashed, so a changed default would silently give old ids a new meaning.
This test holds every declared default against a snapshot taken under the current
versions: change a default and it fails until the owning version (SPEC_VERSION for the
train/eval sections and tasks, a method's ``version``) is bumped, CHANGELOG.md says what
it means, and the snapshot is rewritten (``python -m tests.test_identity``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from harness import sections
from harness.params import defaults_of
from harness.registry import METHODS, TASKS
from harness.spec import SPEC_VERSION, DENSE, JobSpec, baseline_method

SNAPSHOT = Path(__file__).parent / "data" / "defaults_snapshot.json"


def builtin(registry, package: str) -> list[str]:
    """The entries this repository ships (not plugins or test-only ones registered at run time)."""
    return [name for name in registry.names() if ":" not in name and registry.get(name).__module__.startswith(package)]


def current() -> dict:
    def plain(values: dict) -> dict:
        return json.loads(json.dumps(values, default=str, sort_keys=True))

    return {
        "spec_version": SPEC_VERSION,
        "sections": {name: plain(sections.defaults(name)) for name in ("train", "eval")},
        "tasks": {name: plain(defaults_of(TASKS.get(name).defaults)) for name in builtin(TASKS, "tasks.")},
        "methods": {name: {"version": METHODS.get(name).version, "defaults": plain(defaults_of(METHODS.get(name).defaults))}
                    for name in builtin(METHODS, "methods.")},
    }


def test_defaults_change_only_with_their_version():
    snapshot, now = json.loads(SNAPSHOT.read_text()), current()
    hint = "bump the version that owns it, say what it means in CHANGELOG.md, then: python -m tests.test_identity"
    if snapshot["spec_version"] == now["spec_version"]:
        assert snapshot["sections"] == now["sections"], f"a train/eval default changed: {hint}"
        for name, defaults in snapshot["tasks"].items():
            if name in now["tasks"]:
                assert defaults == now["tasks"][name], f"a default of task {name} changed: {hint}"
    for name, entry in snapshot["methods"].items():
        if name in now["methods"] and entry["version"] == now["methods"][name]["version"]:
            assert entry["defaults"] == now["methods"][name]["defaults"], f"a default of method {name} changed: {hint}"
    assert now == snapshot, f"versions or entries changed since the snapshot: python -m tests.test_identity"


def test_a_new_setting_at_its_default_keeps_every_id():
    """The point of not hashing defaults: adding {key: default} changes no job's id."""
    model = {"name": "m", "source": "hub", "revision": "main"}
    task = {"name": "wiki-embedded", "params": defaults_of(TASKS.get("wiki-embedded").defaults), "data": {"x": 1}}
    train, evaluation = sections.defaults("train"), sections.defaults("eval")
    spec = JobSpec(model, task, baseline_method(DENSE), 0.0, 0, train, evaluation)
    assert JobSpec(model, task, baseline_method(DENSE), 0.0, 0, {**train, "precision": "fp32"}, evaluation).spec_hash \
        == spec.spec_hash
    assert JobSpec(model, task, baseline_method(DENSE), 0.0, 0, {**train, "steps": 7}, evaluation).spec_hash != spec.spec_hash
    old = JobSpec.from_dict({key: value for key, value in spec.to_dict().items() if key != "spec_version"})
    assert old.spec_version == 1 and old.spec_hash != spec.spec_hash  # versions never collide


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(current(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}", file=sys.stderr)
