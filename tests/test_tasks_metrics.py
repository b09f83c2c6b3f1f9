"""The metric wrappers equal direct library calls, and their edge cases behave as documented."""

from __future__ import annotations

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from tasks._metrics import corpus_bleu, corpus_chrf, exact_match, normalize_sql, reference_streams, rouge, split_sentences

PAIRS = [  # (prediction, reference)
    ("Amanda baked cookies and will bring some to Jerry tomorrow.", "Amanda baked cookies and will bring Jerry some tomorrow."),
    ("The cat sat on the mat. It was happy.", "A cat was sitting on the mat. The cat was happy."),
    ("Nothing in common here", "Completely different words entirely"),
]


def test_rouge_equals_rouge_score():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    expected = {name: 0.0 for name in ("rouge1", "rouge2", "rougeL", "rougeLsum")}
    for prediction, reference in PAIRS:
        # rougeLsum compares sentence lists: newline-separated sentences, as rouge_score expects
        scores = scorer.score(reference.replace(". ", ".\n"), prediction.replace(". ", ".\n"))
        for name in expected:
            expected[name] += 100 * scores[name].fmeasure / len(PAIRS)
    got = rouge([p for p, _ in PAIRS], [[r] for _, r in PAIRS])
    assert got == pytest.approx(expected, abs=1e-9)
    assert got["rougeLsum"] != pytest.approx(got["rougeL"])  # sentence splitting reached rougeLsum


def test_rouge_multi_reference_takes_best():
    single = rouge(["the cat sat"], [["a dog ran"]])["rouge1"]
    multi = rouge(["the cat sat"], [["a dog ran", "the cat sat"]])["rouge1"]
    assert single == 0.0 and multi == pytest.approx(100.0)


def test_bleu_and_chrf_equal_sacrebleu():
    hyps = [p for p, _ in PAIRS]
    refs = [r for _, r in PAIRS]
    assert corpus_bleu(hyps, [[r] for r in refs]) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert corpus_chrf(hyps, [[r] for r in refs]) == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)


def test_ragged_references_padded_with_none():
    hyps = ["the cat sat on the mat", "a dog"]
    ragged = [["the cat sat on a mat", "a cat sat on the mat"], ["a dog is here now"]]
    assert reference_streams(ragged) == [["the cat sat on a mat", "a dog is here now"], ["a cat sat on the mat", None]]
    # a missing reference must act like a repeat of an existing one (same n-gram clips,
    # same closest length) ...
    repeated = sacrebleu.corpus_bleu(hyps, [["the cat sat on a mat", "a dog is here now"], ["a cat sat on the mat", "a dog is here now"]]).score
    assert corpus_bleu(hyps, ragged) == pytest.approx(repeated)
    # ... and not like an empty reference, which sacrebleu keeps (its length 0 is the
    # closest to the short hypothesis and removes the brevity penalty)
    empty = sacrebleu.corpus_bleu(hyps, [["the cat sat on a mat", "a dog is here now"], ["a cat sat on the mat", ""]]).score
    assert corpus_bleu(hyps, ragged) != pytest.approx(empty)
    with pytest.raises(ValueError):
        corpus_bleu(["x"], [[]])


def test_split_sentences():
    text = "Dr. Smith met J. R. Jones in the U.S. capital! He stayed. Then it rained.\nNew line here"
    assert split_sentences(text) == ["Dr. Smith met J. R. Jones in the U.S. capital!", "He stayed.", "Then it rained.", "New line here"]
    assert split_sentences("") == []


def test_normalize_sql_documented_rules():
    assert normalize_sql('SELECT COUNT(Name) FROM t WHERE "a"=\'X  Y\' ;') == "select count ( name ) from t where 'a' = 'x y'"
    assert normalize_sql("select count ( name ) from t where 'a' = 'x y'") == normalize_sql("SELECT COUNT(Name)   FROM t WHERE `a` = 'X Y'")
    assert normalize_sql("SELECT a FROM t WHERE b > '3'") == normalize_sql("SELECT a FROM t WHERE b>'3'")
    assert normalize_sql("SELECT COUNT x FROM t") != normalize_sql("SELECT COUNT(x) FROM t")


def test_exact_match_percentage():
    predictions = ["SELECT a FROM t WHERE b = 'x'", "select A from T where B='X'", "SELECT c FROM t"]
    references = [["SELECT a FROM t WHERE b = 'x'"]] * 3
    assert exact_match(predictions, references) == pytest.approx(200 / 3)
    with pytest.raises(ValueError):
        exact_match(["a"], [])
    with pytest.raises(TypeError):
        exact_match(["a"], ["a"])  # a bare string is not a list of references
