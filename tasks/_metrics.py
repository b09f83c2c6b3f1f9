"""Text-generation metrics shared by the generation tasks.

Scale convention (one for every task): every metric here is a percentage in [0, 100]
and higher is better -- ROUGE F-measures x 100, sacrebleu's BLEU and chrF (natively
0-100), exact match and execution accuracy as the percentage of examples. (Perplexity,
in tasks/_lm.py, is the one metric that is not a percentage; lower is better.)

The libraries are called directly: ``evaluate.load`` needs metric scripts that are not
available offline (offline-env.md).
"""

from __future__ import annotations

import re
from typing import Sequence

import sacrebleu
from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# -- sentence splitting (rougeLsum wants one sentence per line; nltk's punkt data is not
#    installable offline, so a small rule-based splitter stands in) -----------------------

# Tokens that end with "." without ending a sentence (compared lower-cased, without the dot).
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt ft vs etc e.g i.e cf al approx inc ltd co corp no nos vol "
    "fig gen col lt sgt capt cmdr rev hon u.s u.k u.n jan feb mar apr jun jul aug sep sept oct "
    "nov dec ca c op ed eds pp".split()
)
# A candidate boundary: terminal punctuation, optional closing quotes/brackets, whitespace,
# then something that can start a sentence (upper-case letter, digit, opening quote).
_BOUNDARY = re.compile(r"([.!?]+[\"'\u201d\u2019)\]]*)\s+(?=[\"'\u201c\u2018(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: existing line breaks are kept as boundaries; inside a line,
    a boundary is terminal punctuation followed by whitespace and a capital/digit, unless
    the word before the period is a known abbreviation or a single-letter initial."""
    sentences: list[str] = []
    for line in text.splitlines():
        start = 0
        for match in _BOUNDARY.finditer(line):
            words = line[start : match.start()].split()
            stem = words[-1].lower().strip("\"'([") if words else ""
            if match.group(1).startswith(".") and (stem in _ABBREVIATIONS or (len(stem) == 1 and stem.isalpha())):
                continue
            sentences.append(line[start : match.end(1)].strip())
            start = match.end()
        sentences.append(line[start:].strip())
    return [s for s in sentences if s]


# -- ROUGE ------------------------------------------------------------------------------


def rouge(predictions: Sequence[str], references: Sequence[Sequence[str]], types: Sequence[str] = ROUGE_TYPES) -> dict[str, float]:
    """Mean ROUGE F-measure x 100 over examples (rouge_score, Porter stemming).

    Each example may have several references: the best-scoring one counts, per ROUGE
    type (``RougeScorer.score_multi``). Texts are passed with one sentence per line
    (``split_sentences``), which rougeLsum needs and which leaves the token sequences of
    ROUGE-1/2/L unchanged (rouge_score's tokenizer treats newlines as spaces).
    """
    _check_lengths(predictions, references)
    scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=True)
    totals = dict.fromkeys(types, 0.0)
    for prediction, refs in zip(predictions, references):
        scores = scorer.score_multi(["\n".join(split_sentences(r)) for r in refs], "\n".join(split_sentences(prediction)))
        for name in types:
            totals[name] += scores[name].fmeasure
    n = max(len(predictions), 1)
    return {name: 100.0 * total / n for name, total in totals.items()}


# -- BLEU / chrF (sacrebleu, corpus level, multi-reference) -----------------------------


def reference_streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Per-example reference lists -> sacrebleu's reference streams, padded with None.

    sacrebleu wants ``[stream_1, stream_2, ...]``, each stream one reference per
    hypothesis. Examples with fewer references are padded with ``None``, which sacrebleu
    (2.x, ``Metric._cache_references``) drops per segment. An empty string is NOT
    dropped: it would count as a real (empty) reference, so never pad with "".
    """
    if any(len(refs) == 0 for refs in references):
        raise ValueError("every example needs at least one reference")
    width = max((len(refs) for refs in references), default=1)
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]


def corpus_bleu(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """sacrebleu corpus BLEU (default 13a tokenization, exp smoothing), 0-100."""
    _check_lengths(predictions, references)
    return float(sacrebleu.corpus_bleu(list(predictions), reference_streams(references)).score)


def corpus_chrf(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """sacrebleu corpus chrF (character 6-grams, beta 2), 0-100."""
    _check_lengths(predictions, references)
    return float(sacrebleu.corpus_chrf(list(predictions), reference_streams(references)).score)


# -- exact match ------------------------------------------------------------------------

_QUOTES = re.compile("[\"`\u2018\u2019\u201c\u201d]")
_SPACED_PUNCT = re.compile(r"\s*(<=|>=|!=|<>|[(),=<>])\s*")


def normalize_sql(text: str) -> str:
    """Normalization of SQL text for exact match, applied identically to prediction and
    reference, in this order:

    1. every quote character (" ` and the curly quotes) becomes a single quote ';
    2. each of ( ) , and the operators <= >= != <> = < > gets exactly one space on
       either side (so "COUNT(x)" == "COUNT ( x )", "a=1" == "a = 1", "x , y" == "x, y"
       up to spacing);
    3. whitespace runs collapse to one space; leading/trailing space and trailing ";"
       are removed;
    4. everything is lower-cased (keywords, identifiers and values alike).

    Quoted values are normalized like the rest, so "WHERE a = 'X  Y'" and
    "where a = 'x y'" match. Anything else (e.g. "COUNT x" vs "COUNT(x)", condition
    order) is a difference: semantic equivalence is what execution accuracy measures.
    """
    text = _QUOTES.sub("'", text)
    text = _SPACED_PUNCT.sub(r" \1 ", text)
    text = " ".join(text.split()).rstrip(";").strip()
    return text.lower()


def exact_match(predictions: Sequence[str], references: Sequence[Sequence[str]], normalize=normalize_sql) -> float:
    """Percentage of predictions equal (after ``normalize``) to one of their references."""
    _check_lengths(predictions, references)
    hits = sum(normalize(p) in {normalize(r) for r in refs} for p, refs in zip(predictions, references))
    return 100.0 * hits / max(len(predictions), 1)


def _check_lengths(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    if any(isinstance(refs, str) for refs in references):
        raise TypeError("references must be a list of reference lists, one list per prediction")
