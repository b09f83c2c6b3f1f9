"""Document -> summary tasks scored with ROUGE (SAMSum, the embedded summarization set)."""

from __future__ import annotations

from typing import Any, ClassVar

from tasks._generation import GenerationTask
from tasks._metrics import ROUGE_TYPES, rouge

ROUGE_DEFINITIONS = {
    "rouge1": "mean unigram F-measure x 100 (rouge_score, Porter stemmer)",
    "rouge2": "mean bigram F-measure x 100 (rouge_score, Porter stemmer)",
    "rougeL": "mean longest-common-subsequence F-measure x 100 over the whole text",
    "rougeLsum": "mean summary-level LCS F-measure x 100; sentences split by tasks._metrics.split_sentences",
}


class SummarizationTask(GenerationTask):
    """Base: prompt = document + separator, target = " " + summary; ROUGE-1/2/L/Lsum."""

    document_column: ClassVar[str] = "document"
    summary_column: ClassVar[str] = "summary"
    separator = "\nSummary:"
    metric_definitions = ROUGE_DEFINITIONS
    headline_metric = "rougeL"
    headline_metrics = ("rougeL", "rouge1", "rouge2")

    @property
    def prompt_format(self) -> str:  # type: ignore[override]
        return f"{{{self.document_column}}}{self.separator!r} -> ' ' + {{{self.summary_column}}} (CRLF -> LF)"

    @staticmethod
    def clean(text: str) -> str:
        # Some sources mix "\r\n" and "\n" between turns; one convention keeps the
        # tokenization of equivalent texts identical.
        return text.replace("\r\n", "\n").replace("\r", "\n").strip()

    def prompt(self, row: dict[str, Any]) -> str:
        return self.clean(row[self.document_column]) + self.separator

    def references(self, row: dict[str, Any]) -> list[str]:
        return [self.clean(row[self.summary_column])]

    def usable(self, row: dict[str, Any]) -> bool:
        return bool(self.clean(row.get(self.document_column) or "")) and bool(self.clean(row.get(self.summary_column) or ""))

    def score(self, predictions: list[str], rows: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, Any]]:
        return rouge(predictions, [self.references(row) for row in rows], ROUGE_TYPES), {}
