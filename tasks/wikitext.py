"""WikiText language modeling (Merity et al. 2016) with token-level sliding-window perplexity."""

from __future__ import annotations

from typing import Any

from harness.params import Param
from harness.registry import TASKS
from tasks._data import files_identity, hub_identity, load_split
from tasks._lm import LanguageModelingTask


@TASKS.register("wikitext")
class WikiText(LanguageModelingTask):
    """WikiText (default wikitext-103-raw-v1): language modeling, token-level sliding-window perplexity over the split's rows joined by blank lines."""

    defaults: dict[str, Any] = {
        # "wikitext" redirects to Salesforce/wikitext, natively parquet, so revision main
        "hub_id": Param("Salesforce/wikitext", "Hugging Face dataset id"),
        "hub_config": Param("wikitext-103-raw-v1", "or wikitext-2-raw-v1, wikitext-2-v1, ..."),
        "revision": Param("main", "dataset revision"),
        "data_files": Param(None, "{split: path} of JSON lines with a \"text\" column (rows as the hub's)", kind=dict),
        **LanguageModelingTask.lm_defaults,
    }
    # The hub rows are the lines of the original files (headings and paragraphs end with
    # " \n"; blank lines are ""). Joining them with "\n\n" is the standard recipe (the
    # transformers perplexity guide; method-spec.md), so numbers compare with others'.
    separator = "\n\n"

    def data_identity(self) -> dict[str, Any]:
        if self.params.get("data_files"):
            return files_identity(self.params["data_files"])
        return hub_identity(self.params)

    def evaluate(self, model, tokenizer, settings: dict[str, Any], device, role: str = "test", max_length: int = 0) -> Any:
        result = super().evaluate(model, tokenizer, settings, device, role, max_length)
        result.protocol["data"] = self.data_identity()
        return result

    def texts(self, split: str) -> list[str]:
        return [row["text"] for row in load_split(self.params, split)]
