"""Language modeling on held-out articles of the embedded Wikipedia corpus."""

from __future__ import annotations

from typing import Any

from harness.registry import TASKS
from harness.task import MissingSplitError
from tasks._data import EMBEDDED_DATA, files_identity, read_jsonl
from tasks._lm import LanguageModelingTask

WIKI_FILES = {split: str(EMBEDDED_DATA / "wiki" / f"{split}.jsonl.gz") for split in ("train", "validation", "test")}


@TASKS.register("wiki-embedded")
class WikiEmbedded(LanguageModelingTask):
    """Language modeling on held-out Wikipedia articles (gensim's excerpt, the embedded model's corpus); token-level sliding-window perplexity."""

    defaults: dict[str, Any] = {
        **LanguageModelingTask.lm_defaults,
    }

    def data_identity(self) -> dict[str, Any]:
        return files_identity(WIKI_FILES, embedded=True)

    def texts(self, split: str) -> list[str]:
        if split not in WIKI_FILES:
            raise MissingSplitError(f"wiki-embedded has no '{split}' split (has: {', '.join(WIKI_FILES)})")
        return [row["text"] for row in read_jsonl(WIKI_FILES[split])]
