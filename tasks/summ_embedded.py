"""The embedded summarization set: real Wikipedia and news text, lead sentence as summary."""

from __future__ import annotations

from typing import Any

from harness.params import Param
from harness.registry import TASKS
from tasks._generation import COMMON_DEFAULTS
from tasks._data import EMBEDDED_DATA
from tasks._summarization import SummarizationTask

SUMM_FILES = {split: str(EMBEDDED_DATA / "summ" / f"{split}.jsonl.gz") for split in ("train", "validation", "test")}


@TASKS.register("summ-embedded")
class SummEmbedded(SummarizationTask):
    """Lead-sentence summarization of real text (embedded): Wikipedia paragraph or news article minus its first sentence -> that sentence; ROUGE."""

    defaults: dict[str, Any] = {
        "data_files": Param(None, "{split: path} of JSON lines with document/summary (None: the embedded files, "
                                  "tasks/data/summ)", kind=dict),
        **{key: COMMON_DEFAULTS[key] for key in ("train_split", "eval_split", "validation_split", "max_train_examples")},
    }
    embedded_files = SUMM_FILES
    eval_defaults = {"max_new_tokens": 80}  # test leads: p95 60 tokens, max 102 (rare long leads are cut)
