"""Shared data access for tasks: local JSON-lines files (optionally gzipped) in the hub
schema, the project's embedded data, and the Hugging Face hub for users online."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

from harness.task import MissingSplitError, file_sha256

EMBEDDED_DATA = Path(__file__).parent / "data"


def news_split(article: str) -> str:
    """The split of a news article of the Lee corpus (tasks/data/news): 10% test, 10%
    validation, 80% train by a content hash (stable under reordering). summ-embedded and
    news-embedded share it."""
    bucket = int(hashlib.sha256(article.encode("utf-8")).hexdigest(), 16) % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def files_identity(files: dict[str, str], embedded: bool = False) -> dict[str, Any]:
    """Identity of local data: per split, the content hash (an embedded file also its name; a
    local path is a location, not identity, so it is not recorded)."""
    identity: dict[str, Any] = {"source": "embedded" if embedded else "local", "files": {}}
    for split, path in sorted(files.items()):
        entry = {"sha256": file_sha256(path)}
        if embedded:
            entry["file"] = str(Path(path).relative_to(EMBEDDED_DATA))
        identity["files"][split] = entry
    return identity


def load_split(params: dict[str, Any], split: str, embedded_files: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Rows of ``split`` from local ``data_files``, the embedded files, or the hub."""
    files = params.get("data_files") or embedded_files
    if files:
        if split not in files:
            raise MissingSplitError(f"data_files has no '{split}' split (has: {', '.join(sorted(files))})")
        return read_jsonl(files[split])
    return load_hub_split(params["hub_id"], params.get("hub_config") or None, params.get("revision") or None, split)


def load_hub_split(hub_id: str, config: str | None, revision: str | None, split: str) -> list[dict[str, Any]]:
    """A split from the Hugging Face hub (parquet-backed; needs internet)."""
    import datasets

    try:
        dataset = datasets.load_dataset(hub_id, config, revision=revision, split=split)
    except Exception as error:  # the datasets library raises many types for "unreachable"
        raise RuntimeError(
            f"dataset '{hub_id}' ({config or 'default'}, revision {revision or 'main'}) could not be loaded "
            f"from the Hugging Face hub: {str(error).splitlines()[0] if str(error) else type(error).__name__}; "
            "offline, point the task at local files with data_files"
        ) from None
    return [dict(row) for row in dataset]


def hub_identity(params: dict[str, Any]) -> dict[str, Any]:
    return {"source": "hub", "hub_id": params["hub_id"], "config": params.get("hub_config") or None,
            "revision": params.get("revision") or "main"}
