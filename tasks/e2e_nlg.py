"""E2E NLG (Novikova et al. 2017): restaurant meaning representation -> description."""

from __future__ import annotations

from typing import Any

from harness.registry import TASKS
from tasks._generation import COMMON_DEFAULTS, GenerationTask
from tasks._metrics import corpus_bleu, corpus_chrf, rouge


@TASKS.register("e2e_nlg")
class E2ENLG(GenerationTask):
    """E2E NLG: meaning representation -> restaurant description; multi-reference corpus BLEU, ROUGE-L, chrF (hub `e2e_nlg` or local JSON lines)."""

    defaults: dict[str, Any] = {**COMMON_DEFAULTS, "hub_id": "e2e_nlg"}
    eval_defaults = {"max_new_tokens": 80}  # test references: p95 56 tokens (8K BPE), max 74
    separator = "\nDescription:"
    prompt_format = "{meaning_representation}\\nDescription: -> ' ' + {human_reference}"
    headline_metric = "bleu"
    headline_metrics = ("bleu", "rougeL", "chrf")
    metric_definitions = {
        "bleu": "sacrebleu corpus BLEU (0-100), 13a tokenization, all references of each unique MR",
        "rougeL": "mean over unique MRs of the best ROUGE-L F-measure x 100 among its references (rouge_score, stemmer)",
        "chrf": "sacrebleu corpus chrF (0-100), all references of each unique MR",
    }

    def prompt(self, row: dict[str, Any]) -> str:
        return row["meaning_representation"].strip() + self.separator

    def references(self, row: dict[str, Any]) -> list[str]:
        # grouped evaluation rows carry all references; raw rows carry one
        return row["references"] if "references" in row else [row["human_reference"].strip()]

    def usable(self, row: dict[str, Any]) -> bool:
        return bool(row["meaning_representation"].strip() and row["human_reference"].strip())

    def eval_rows(self, split: str) -> list[dict[str, Any]]:
        """One row per unique MR (first-appearance order) with all of its references: the
        E2E protocol scores a system output once per MR against every human reference."""
        grouped: dict[str, list[str]] = {}
        for row in self.rows(split):
            if row["human_reference"].strip():
                grouped.setdefault(row["meaning_representation"].strip(), []).append(row["human_reference"].strip())
        return [{"meaning_representation": mr, "references": refs} for mr, refs in grouped.items()]

    def score(self, predictions: list[str], rows: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, Any]]:
        references = [self.references(row) for row in rows]
        values = {
            "bleu": corpus_bleu(predictions, references),
            "rougeL": rouge(predictions, references, ("rougeL",))["rougeL"],
            "chrf": corpus_chrf(predictions, references),
        }
        counts = [len(refs) for refs in references]
        return values, {"grouping": "evaluation on unique meaning representations with all their references",
                        "references_per_example": {"min": min(counts, default=0), "max": max(counts, default=0),
                                                   "mean": sum(counts) / max(len(counts), 1)}}
