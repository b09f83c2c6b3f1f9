"""Build the embedded evaluation sets shipped in tasks/data/ (deterministic):

    python -m tasks._build_data          # both
    python -m tasks._build_data summ     # tasks/data/summ: lead-sentence summarization of real text
    python -m tasks._build_data sql      # tasks/data/sql: GENERATED text-to-SQL

summ reads the embedded corpus (tasks/data/wiki/*.jsonl.gz and news/lee_background.txt.gz,
written by ``python -m harness.embedded.build corpus``); sql needs nothing. Output is
byte-identical across runs: fixed seeds, sorted inputs, gzip mtime 0.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

from tasks._data import EMBEDDED_DATA, news_split, read_jsonl
from tasks._sqlgen import generate
from tasks._metrics import split_sentences

SPLITS = ("train", "validation", "test")
SQL_SIZES = {"train": 2000, "validation": 200, "test": 200}
SQL_ID_PREFIX = {"train": "tr", "validation": "va", "test": "te"}  # table ids never repeat across splits
SQL_SEED = 20230207  # arXiv 2302.03773's date; any fixed value
# A summarization pair: lead sentence of LEAD_WORDS words; a document of at least
# MIN_DOC_SENTENCES following sentences, cut to at most MAX_DOC_WORDS words (prompt
# length stays well inside a 512-token context with room for the summary).
LEAD_WORDS = (6, 60)
MIN_DOC_SENTENCES, MIN_DOC_WORDS, MAX_DOC_WORDS = 2, 25, 220


def write_jsonl_gz(path: Path, rows: list[dict[str, Any]]) -> None:
    """JSON lines, gzip with mtime 0 and no file name in the header (reproducible bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as handle:
        handle.write(payload)
    path.write_bytes(buffer.getvalue())


# -- summarization from real text -----------------------------------------------------


def lead_pair(text: str) -> tuple[str, str] | None:
    """(document, summary) = (the sentences after the first, the first sentence), as XSum
    makes its pairs (Narayan et al. 2018: introductory sentence vs. the rest); None when
    the passage is too short or its lead too short/long to be a summary."""
    sentences = split_sentences(" ".join(text.split()))
    if len(sentences) < 1 + MIN_DOC_SENTENCES:
        return None
    lead, rest = sentences[0], sentences[1:]
    if not LEAD_WORDS[0] <= len(lead.split()) <= LEAD_WORDS[1]:
        return None
    document: list[str] = []
    for sentence in rest:  # whole sentences, up to the word budget
        if document and sum(len(s.split()) for s in document) + len(sentence.split()) > MAX_DOC_WORDS:
            break
        document.append(sentence)
    words = sum(len(s.split()) for s in document)
    if len(document) < MIN_DOC_SENTENCES or not MIN_DOC_WORDS <= words <= MAX_DOC_WORDS:
        return None
    return " ".join(document), lead


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def build_summ() -> dict[str, int]:
    """tasks/data/summ/{split}.jsonl.gz with rows {id, source, title, document, summary}.
    Wikipedia pairs are per paragraph and keep the corpus' article split (the embedded
    model was pretrained on the train articles only)."""
    rows: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    for split in SPLITS:
        for article in read_jsonl(EMBEDDED_DATA / "wiki" / f"{split}.jsonl.gz"):
            for k, paragraph in enumerate(article["text"].split("\n\n")):
                pair = lead_pair(paragraph)
                if pair:
                    rows[split].append({"id": f"wiki-{slug(article['title'])}-{k}", "source": "wikipedia",
                                        "title": article["title"], "document": pair[0], "summary": pair[1]})
    with gzip.open(EMBEDDED_DATA / "news" / "lee_background.txt.gz", "rt", encoding="utf-8") as handle:
        articles = [line.strip() for line in handle if line.strip()]
    for k, article in enumerate(articles):
        pair = lead_pair(article)
        if pair:
            rows[news_split(article)].append({"id": f"news-lee-{k}", "source": "news (Lee background corpus)",
                                              "title": "", "document": pair[0], "summary": pair[1]})
    for split in SPLITS:
        write_jsonl_gz(EMBEDDED_DATA / "summ" / f"{split}.jsonl.gz", rows[split])
    return {split: len(rows[split]) for split in SPLITS}


# -- GENERATED text-to-SQL ------------------------------------------------------------


def build_sql() -> dict[str, int]:
    """tasks/data/sql/{split}.jsonl.gz: WikiSQL hub-schema rows over generated tables;
    each split draws its own tables (ids carry the split's prefix), so no table is shared."""
    sizes = {}
    for offset, split in enumerate(SPLITS):
        rows = generate(SQL_SIZES[split], seed=SQL_SEED + offset, id_prefix=SQL_ID_PREFIX[split])
        write_jsonl_gz(EMBEDDED_DATA / "sql" / f"{split}.jsonl.gz", rows)
        sizes[split] = len(rows)
    return sizes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", choices=("all", "summ", "sql"), default="all")
    args = parser.parse_args(argv)
    if args.what in ("all", "summ"):
        print("summ", build_summ())
    if args.what in ("all", "sql"):
        print("sql", build_sql())


if __name__ == "__main__":
    main()
