"""WikiSQL text-to-SQL (Zhong et al. 2017): question + table header -> SQL."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from harness.registry import TASKS
from tasks._generation import COMMON_DEFAULTS, GenerationTask
from tasks._metrics import corpus_bleu, exact_match
from tasks._sql import Table, parse_sql, query_from_struct


def table_key(table: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps([table.get("id"), table["header"], table["rows"]], sort_keys=True).encode()).hexdigest()


@TASKS.register("wikisql")
class WikiSQL(GenerationTask):
    """WikiSQL: question + table columns -> SQL; exact match (normalized), BLEU, and execution accuracy where rows carry the table's rows."""

    defaults: dict[str, Any] = {**COMMON_DEFAULTS, "hub_id": "wikisql"}
    eval_defaults = {"max_new_tokens": 96}  # test completions: p95 56 tokens (8K BPE), max 76
    separator = "\nA:"
    truncate_prompt = "start"  # the question sits at the end of the prompt: keep it
    prompt_format = (
        "LoRA-style rows: {context} -> {completion}; hub-schema rows: "
        "'table: {table.id}\\ncolumns: {header joined by \", \"}\\nQ: {question}\\nA:' -> ' ' + {sql.human_readable}"
    )
    headline_metric = "exact_match"  # the paper's WikiSQL metric
    headline_metrics = ("exact_match", "execution_accuracy", "bleu")
    metric_definitions = {
        "exact_match": "percent of predictions equal to the reference after tasks._metrics.normalize_sql "
                       "(quotes unified, spacing around ( ) , and operators normalized, whitespace collapsed, lower-cased)",
        "bleu": "sacrebleu corpus BLEU (0-100), 13a tokenization, one reference",
        "execution_accuracy": "percent of examples whose predicted SQL, parsed by tasks._sql against the table header "
                              "and run in SQLite on the table's rows, returns the gold query's result multiset; "
                              "unparsable or failing predictions count wrong",
    }

    # -- formatting: two row schemas ---------------------------------------------------
    @staticmethod
    def is_lora_row(row: dict[str, Any]) -> bool:
        """True for mlx-examples' context/completion rows, False for hub-schema rows;
        anything else cannot be formatted and raises."""
        if "context" in row and "completion" in row:
            return True
        table, sql = row.get("table"), row.get("sql")
        if "question" in row and isinstance(table, dict) and "header" in table and isinstance(sql, dict) and "human_readable" in sql:
            return False
        raise ValueError(
            "a WikiSQL row needs either context/completion or question + table {header, ...} + sql {human_readable, ...}; "
            f"got keys {sorted(row)} (the official query records without their tables cannot be formatted)"
        )

    def prompt(self, row: dict[str, Any]) -> str:
        if self.is_lora_row(row):
            return row["context"]  # verbatim: "table: <id>\ncolumns: ...\nQ: <question>\nA:"
        table = row["table"]
        table_id = table.get("id") or row.get("table_id") or "table"
        return f"table: {table_id}\ncolumns: {', '.join(table['header'])}\nQ: {row['question']}\nA:"

    def references(self, row: dict[str, Any]) -> list[str]:
        return [(row["completion"] if self.is_lora_row(row) else row["sql"]["human_readable"]).strip()]

    # -- scoring -----------------------------------------------------------------------
    def score(self, predictions: list[str], rows: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, Any]]:
        references = [self.references(row) for row in rows]
        values = {"exact_match": exact_match(predictions, references), "bleu": corpus_bleu(predictions, references)}
        accuracy, note = self.execution_accuracy(predictions, rows)
        if accuracy is not None:
            values["execution_accuracy"] = accuracy
        return values, {"execution_accuracy": note}

    def execution_accuracy(self, predictions: list[str], rows: list[dict[str, Any]]) -> tuple[float | None, Any]:
        """(accuracy or None, what the protocol records about it)."""
        with_rows = [i for i, row in enumerate(rows) if isinstance(row.get("table"), dict) and row["table"].get("rows")]
        if not with_rows:
            return None, "not reported: examples carry no table rows"
        tables: dict[str, Table] = {}  # WikiSQL asks several questions per table: build each once
        correct, gold_failed = 0, 0
        for i in with_rows:
            table_row, sql = rows[i]["table"], rows[i]["sql"]
            key = table_key(table_row)
            if key not in tables:
                tables[key] = Table(table_row["header"], table_row["rows"], table_row.get("types"))
            table = tables[key]
            gold = query_from_struct(sql) if "sel" in sql else parse_sql(self.references(rows[i])[0], table.header)
            expected = table.execute(gold) if gold is not None else None
            if expected is None:
                gold_failed += 1
                continue
            predicted = parse_sql(predictions[i], table.header)
            correct += predicted is not None and table.execute(predicted) == expected
        scored = len(with_rows) - gold_failed
        note = {"examples_with_rows": len(with_rows), "examples_scored": scored, "gold_not_executable": gold_failed,
                "examples_without_rows": len(rows) - len(with_rows)}
        return (100.0 * correct / scored if scored else None), note
