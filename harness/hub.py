"""Pinning what a hub reference meant when a job ran.

A hub model or dataset given without a commit (revision ``main``, a branch, a tag) can
mean other weights next month. The job identity keeps what the user asked for (so a
matrix keeps its hashes); the commit it resolved to is *recorded* with each job run, and
a rerun that resolves a different commit for a job already done says so in one line
instead of silently mixing results. Offline (``HF_HUB_OFFLINE=1``, or the hub
unreachable) nothing is resolved, and nothing is claimed.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def _hub_commit(repo_id: str, revision: str | None, kind: str) -> str | None:
    """The commit sha ``revision`` of hub repo ``repo_id`` resolves to, or None offline."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return None
    if revision and _COMMIT.match(revision):
        return revision
    try:
        from huggingface_hub import HfApi

        info = (HfApi().model_info if kind == "model" else HfApi().dataset_info)(repo_id, revision=revision, timeout=10)
    except Exception:  # unreachable, unknown repo, rate limit: record nothing
        return None
    return getattr(info, "sha", None)


# Replaceable (tests use a stub: the hub cannot be reached from CI).
resolve_commit: Callable[[str, str | None, str], str | None] = _hub_commit


def hub_references(spec_dict: dict[str, Any]) -> dict[str, tuple[str, str | None, str]]:
    """The hub references of a job spec: key -> (repo id, revision asked for, kind)."""
    references = {}
    model = spec_dict["model"]
    if model.get("source") == "hub":
        references[f"model:{model['name']}"] = (model["name"], model.get("revision"), "model")
    data = spec_dict["task"].get("data") or {}
    if data.get("source") == "hub":
        references[f"dataset:{data['hub_id']}"] = (data["hub_id"], data.get("revision"), "dataset")
    return references


def resolve_revisions(spec_dict: dict[str, Any], cache: dict[tuple[str, str | None, str], str | None] | None = None,
                      only: set[str] | None = None) -> dict[str, str]:
    """key -> commit for every hub reference that resolves now (``only``: just these keys).
    ``cache`` (repo, revision, kind) -> commit is shared across calls, so many jobs of one
    model ask the hub once."""
    resolved = {}
    for key, (repo, revision, kind) in hub_references(spec_dict).items():
        if only is not None and key not in only:
            continue
        reference = (repo, revision, kind)
        if cache is not None and reference in cache:
            commit = cache[reference]
        else:
            commit = resolve_commit(repo, revision, kind)
            if cache is not None:
                cache[reference] = commit
        if commit:
            resolved[key] = commit
    return resolved


def drift(recorded: dict[str, str], now: dict[str, str]) -> list[str]:
    """One line per reference whose commit changed since the job ran."""
    return [f"{key} now resolves to {now[key][:12]}, the done job used {recorded[key][:12]}"
            for key in sorted(set(recorded) & set(now)) if recorded[key] != now[key]]
