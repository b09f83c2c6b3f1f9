"""WikiSQL parsing and execution accuracy; the GENERATED SQL set is consistent and reproducible."""

from __future__ import annotations

import pytest

from tasks._sql import Query, Table, parse_sql, query_from_struct

HEADER = ["Player", "No.", "Nationality", "Position", "Years in Toronto", "School/Club Team", "Years"]
ROWS = [
    ["Antonio Lang", "21", "United States", "Guard-Forward", "1999-2000", "Duke", "3"],
    ["Voshon Lenard", "2", "United States", "Guard", "2002-03", "Minnesota", "1"],
    ["Martin Lewis", "32, 44", "United States", "Guard-Forward", "1996-97", "Butler CC (KS)", "2"],
    ["Shaquille O'Neal", "33", "Canada", "Center", "1996", "LSU", "5"],
]
TYPES = ["text"] * 6 + ["real"]
TABLE = {"id": "1-10015132-11", "header": HEADER, "rows": ROWS, "types": TYPES}
GOLD = "SELECT COUNT Player FROM 1-10015132-11 WHERE Nationality = 'United States' AND Years > '1'"
EQUIVALENT = [
    GOLD,
    "select count player from table where nationality = united states and years > 1",  # HF rendering: bare values
    'SELECT COUNT("Player") FROM t WHERE "Years" > 1 AND "Nationality" = "united states"',  # quoted, reordered
    "SELECT COUNT(*) FROM anything WHERE Years > 1.0 AND Nationality = 'UNITED STATES';",
    "SELECT SUM Years FROM t WHERE Player = 'Martin Lewis'",  # a different query with the same answer (2)
]
WRONG = [
    "SELECT COUNT Player FROM t WHERE Nationality = 'United States'",  # 3 vs 2
    "SELECT Player FROM t WHERE Nationality = 'United States' AND Years > '1'",
    "SELECT COUNT Player FROM t WHERE Nationality = 'Canada' AND Years > '1'",
]
MALFORMED = ["", "DROP TABLE t", "SELECT COUNT Player FROM", "SELECT Salary FROM t", "SELECT COUNT(Player FROM t",
             "SELECT Player FROM t WHERE Player = 'Antonio Lang' trailing words", "SELECT MAX * FROM t",
             "SELECT Player FROM t WHERE Years >", "SELECT Player FROM t; DELETE FROM t"]


def test_parse_unquoted_columns_and_values():
    query = parse_sql("SELECT Position FROM 1-10015132-11 WHERE School/Club Team = 'Butler CC (KS)'", HEADER)
    assert query == Query(sel=3, agg=0, conds=((5, "=", "Butler CC (KS)"),))
    # longest header first: "Years in Toronto" is not "Years" followed by junk
    assert parse_sql("SELECT Years in Toronto FROM t WHERE Years = 5", HEADER) == Query(4, 0, ((6, "=", "5"),))
    # an unescaped apostrophe inside a single-quoted value (mlx rendering of WikiSQL)
    assert parse_sql("SELECT No. FROM t WHERE Player = 'Shaquille O'Neal'", HEADER).conds == ((0, "=", "Shaquille O'Neal"),)
    assert parse_sql("SELECT No. FROM t WHERE Player = Shaquille O'Neal AND Years = 5", HEADER).conds == (
        (0, "=", "Shaquille O'Neal"), (6, "=", "5"))


def _correct(prediction: str) -> bool:
    from tasks.wikisql import WikiSQL

    task = WikiSQL("wikisql", dict(WikiSQL.defaults))
    row = {"question": "q", "table": TABLE, "sql": {"human_readable": GOLD}}
    accuracy, note = task.execution_accuracy([prediction], [row])
    assert note["examples_scored"] == 1
    return accuracy == 100.0


@pytest.mark.parametrize("prediction", EQUIVALENT)
def test_equivalent_predictions_count_correct(prediction):
    assert _correct(prediction)


@pytest.mark.parametrize("prediction", WRONG + MALFORMED)
def test_wrong_or_malformed_predictions_count_wrong(prediction):
    assert not _correct(prediction)


def test_table_is_never_modified_and_timeout_aborts():
    table = Table(HEADER, ROWS, TYPES)
    count = Query(sel=None, agg=3, conds=())
    assert table.execute(count) == {4.0: 1}
    big = Table(["x"], [[str(i)] for i in range(20000)], ["real"])
    assert big.execute(Query(sel=0, agg=4, conds=()), timeout_s=0.0) is None  # interrupted -> None, no exception
    assert big.execute(Query(sel=0, agg=4, conds=())) == {float(sum(range(20000))): 1}


def test_struct_and_text_gold_agree():
    struct = {"sel": 0, "agg": 3, "conds": {"column_index": [2, 6], "operator_index": [0, 1], "condition": ["United States", "1"]}}
    table = Table(HEADER, ROWS, TYPES)
    assert table.execute(query_from_struct(struct)) == table.execute(parse_sql(GOLD, HEADER)) == {2.0: 1}
    assert query_from_struct({"sel": 0, "agg": 0, "conds": [[2, 0, "Canada"]]}).conds == ((2, "=", "Canada"),)


def test_execution_accuracy_not_reported_without_rows():
    from tasks.wikisql import WikiSQL

    task = WikiSQL("wikisql", dict(WikiSQL.defaults))
    rows = [{"context": "table: x\ncolumns: a\nQ: q\nA:", "completion": " SELECT a FROM x"}]
    values, extra = task.score(["SELECT a FROM x"], rows)
    assert values == {"exact_match": 100.0, "bleu": pytest.approx(100.0)}
    assert extra["execution_accuracy"] == "not reported: examples carry no table rows"


def test_generated_sql_set_is_consistent_and_reproducible():
    from tasks._data import read_jsonl
    from tasks._sqlgen import generate
    from tasks._build_data import SQL_ID_PREFIX, SQL_SEED, SQL_SIZES
    from tasks.sql_embedded import SQL_FILES

    shipped = {split: read_jsonl(path) for split, path in SQL_FILES.items()}
    assert {split: len(rows) for split, rows in shipped.items()} == SQL_SIZES
    # the shipped test split is exactly what the generator makes (files are up to date)
    assert shipped["test"] == generate(SQL_SIZES["test"], seed=SQL_SEED + 2, id_prefix=SQL_ID_PREFIX["test"])
    tables = {split: {row["table"]["name"] for row in rows} for split, rows in shipped.items()}
    assert not (tables["train"] & tables["test"]) and not (tables["train"] & tables["validation"])
    for rows in shipped.values():
        for row in rows:
            table = Table(row["table"]["header"], row["table"]["rows"], row["table"]["types"])
            gold = table.execute(query_from_struct(row["sql"]))
            assert gold and list(gold) != [None]
            # the rendered human-readable SQL parses back to the same answer
            assert table.execute(parse_sql(row["sql"]["human_readable"], row["table"]["header"])) == gold
