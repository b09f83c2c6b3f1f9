"""WikiSQL queries: parse the human-readable SQL, execute it on an in-memory table.

WikiSQL's query space is ``SELECT [AGG] <column> FROM <table> [WHERE <column> <op>
<value> [AND ...]]`` with AGG in MAX/MIN/COUNT/SUM/AVG and op in = > <. Its
human-readable rendering quotes nothing: column names contain spaces and punctuation
("School/Club Team"), the table name is an id ("1-10015132-11", or the word "table" in
the Hugging Face copy), and values are bare (Hugging Face) or single-quoted without
escaping (the mlx-examples rendering: 'O'Neal'). So a text is not executable SQL; it is
parsed here against the known header (longest column name first) into a ``Query``, and
the query is executed as safe, parameterized SQLite on a table built from the rows.

Execution semantics follow WikiSQL's own engine (lib/dbengine.py): one table; "real"
columns hold numbers, text values compare case-insensitively; the FROM name is not
checked. Written-differently-but-equivalent predictions therefore execute the same:
keyword case, COUNT(x) vs COUNT x, quoted or bare identifiers and values, "3" vs 3,
condition order. A prediction outside the grammar is wrong, never an error.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

AGG_OPS = ("", "MAX", "MIN", "COUNT", "SUM", "AVG")
COND_OPS = ("=", ">", "<", "OP")  # WikiSQL's operator indices ("OP" is unused in the data)
_SQL_OPS = {"=": "=", ">": ">", "<": "<", ">=": ">=", "<=": "<=", "!=": "!=", "<>": "!="}
_OP = re.compile(r"\s*(>=|<=|!=|<>|=|>|<)\s*")
_KEYWORD_END = r"(?=[\s(]|$)"
_NUMBER = re.compile(r"[-+]?(\d[\d,]*\.?\d*|\.\d+)(e[-+]?\d+)?", re.IGNORECASE)
TIMEOUT_S = 2.0  # per query; WikiSQL queries on small tables take microseconds


@dataclass(frozen=True)
class Query:
    sel: int | None  # column index; None = "*" (only under COUNT)
    agg: int  # index into AGG_OPS
    conds: tuple[tuple[int, str, str], ...]  # (column index, operator, value text)


def collapse(text: str) -> str:
    """Whitespace runs -> one space (the Hugging Face rendering collapses them in SQL)."""
    return " ".join(str(text).split())


def as_number(text: Any) -> float | None:
    """The number a cell or value spells ("1,234", " 3.0 "), or None."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    match = _NUMBER.fullmatch(str(text).strip())
    return float(match.group(0).replace(",", "")) if match else None


# -- parsing -----------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str, header: Sequence[str]):
        self.s = collapse(text).rstrip(";").strip()
        self.pos = 0
        names = [collapse(h).lower() for h in header]
        # longest first, so "Years in Toronto" wins over a column named "Years"
        self.columns = sorted(((name, i) for i, name in enumerate(names) if name), key=lambda item: -len(item[0]))

    def ws(self) -> None:
        while self.pos < len(self.s) and self.s[self.pos].isspace():
            self.pos += 1

    def keyword(self, word: str) -> bool:
        self.ws()
        match = re.compile(re.escape(word) + _KEYWORD_END, re.IGNORECASE).match(self.s, self.pos)
        if match:
            self.pos = match.end()
        return bool(match)

    def column(self) -> int | None:
        self.ws()
        if self.pos < len(self.s) and self.s[self.pos] in "\"`[":
            close = {"\"": "\"", "`": "`", "[": "]"}[self.s[self.pos]]
            end = self.s.find(close, self.pos + 1)
            if end > 0:
                name = collapse(self.s[self.pos + 1 : end]).lower()
                for candidate, index in self.columns:
                    if candidate == name:
                        self.pos = end + 1
                        return index
        for name, index in self.columns:
            end = self.pos + len(name)
            # a name ending in a letter/digit must end at a word boundary ("Year" is not
            # the start of "Years"); one ending in punctuation ("No.") needs none
            if self.s[self.pos : end].lower() != name:
                continue
            if end == len(self.s) or not name[-1:].isalnum() or not (self.s[end].isalnum() or self.s[end] == "_"):
                self.pos = end
                return index
        return None

    def select(self) -> tuple[int | None, int] | None:
        start = self.pos
        for agg in range(1, len(AGG_OPS)):
            if self.keyword(AGG_OPS[agg]):
                target = self._agg_target(agg)
                if target is not None:
                    return target
                self.pos = start  # a column named like an aggregate ("Count"): retry bare
                break
        sel = self.column()
        return (sel, 0) if sel is not None else None

    def _agg_target(self, agg: int) -> tuple[int | None, int] | None:
        self.ws()
        paren = self.s.startswith("(", self.pos)
        if paren:
            self.pos += 1
            self.ws()
        if AGG_OPS[agg] == "COUNT" and self.s.startswith("*", self.pos):
            self.pos += 1
            sel = None
        else:
            sel = self.column()
            if sel is None:
                return None
        if paren:
            self.ws()
            if not self.s.startswith(")", self.pos):
                return None
            self.pos += 1
        return sel, agg

    def table(self) -> bool:
        self.ws()
        match = re.compile(r"\"[^\"]*\"|`[^`]*`|\[[^\]]*\]|\S+").match(self.s, self.pos)
        if match:
            self.pos = match.end()
        return bool(match)

    def condition_starts(self, pos: int) -> bool:
        """Does a `<column> <op>` start at ``pos``? (Where a bare value ends.)"""
        saved, self.pos = self.pos, pos
        ok = self.column() is not None and _OP.match(self.s, self.pos) is not None
        self.pos = saved
        return ok

    def value(self) -> str | None:
        self.ws()
        rest = self.s[self.pos :]
        # A value ends at the end of the text or before " AND <column> <op>".
        ends = [m.start() for m in re.finditer(r"\s+AND\s+", rest, re.IGNORECASE) if self.condition_starts(self.pos + m.end())]
        ends.append(len(rest))
        if rest[:1] in ("'", "\""):
            quote = rest[0]
            for end in ends:  # the first closing quote that sits right before a value end
                if end >= 2 and rest[end - 1] == quote:
                    self.pos += end
                    return rest[1 : end - 1].replace(quote * 2, quote)
            return None
        if ends[0] == 0:
            return None
        self.pos += ends[0]
        return rest[: ends[0]].strip()

    def parse(self) -> Query | None:
        if not self.keyword("SELECT"):
            return None
        selection = self.select()
        if selection is None or not self.keyword("FROM") or not self.table():
            return None
        conds: list[tuple[int, str, str]] = []
        if self.keyword("WHERE"):
            while True:
                column = self.column()
                op = _OP.match(self.s, self.pos) if column is not None else None
                if op is None:
                    return None
                self.pos = op.end()
                value = self.value()
                if value is None:
                    return None
                conds.append((column, _SQL_OPS[op.group(1)], collapse(value)))
                if not self.keyword("AND"):
                    break
        self.ws()
        if self.pos != len(self.s):
            return None  # trailing text: outside the grammar
        return Query(sel=selection[0], agg=selection[1], conds=tuple(conds))


def parse_sql(text: str, header: Sequence[str]) -> Query | None:
    """The query a WikiSQL-style text spells over ``header``, or None if it does not parse."""
    try:
        return _Parser(text, header).parse()
    except (IndexError, ValueError):
        return None


def query_from_struct(sql: dict[str, Any]) -> Query:
    """A query from WikiSQL's structured form: sel, agg and conds as a list of
    [column, op, value] triples, a list of dicts, or the hub's dict of parallel lists."""
    conds = sql.get("conds") or []
    if isinstance(conds, dict):
        conds = list(zip(conds["column_index"], conds["operator_index"], conds["condition"]))
    triples = [(c["column_index"], c["operator_index"], c["condition"]) if isinstance(c, dict) else tuple(c) for c in conds]
    return Query(
        sel=int(sql["sel"]),
        agg=int(sql["agg"]),
        conds=tuple((int(col), COND_OPS[int(op)], collapse(value)) for col, op, value in triples),
    )


# -- execution -------------------------------------------------------------------------


class Table:
    """A WikiSQL table in an in-memory SQLite database, column i named "c<i>"."""

    def __init__(self, header: Sequence[str], rows: Sequence[Sequence[Any]], types: Sequence[str] | None = None):
        self.header = [collapse(h) for h in header]
        self.width = len(header)
        if types is None or len(types) != self.width:
            # no declared types: a column is numeric if every non-empty cell is a number
            types = ["real" if all(as_number(r[i]) is not None for r in rows if str(r[i]).strip()) and rows else "text" for i in range(self.width)]
        self.real = [t == "real" for t in types]
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        columns = ", ".join(f'"c{i}" {"REAL" if real else "TEXT"}' for i, real in enumerate(self.real))
        self.db.execute(f"CREATE TABLE t ({columns})")
        self.db.executemany(
            f"INSERT INTO t VALUES ({', '.join('?' * self.width)})",
            [tuple(self._cell(value, i) for i, value in enumerate(row)) for row in rows],
        )

    def _cell(self, value: Any, column: int) -> Any:
        if self.real[column]:
            number = as_number(value)
            if number is not None:
                return number
        return collapse(value)

    def execute(self, query: Query, timeout_s: float = TIMEOUT_S) -> Counter | None:
        """The multiset of result values, or None if the query cannot run on this table."""
        if (query.sel is not None and not 0 <= query.sel < self.width) or any(not 0 <= c < self.width for c, _, _ in query.conds):
            return None
        target = "*" if query.sel is None else f'"c{query.sel}"'
        if query.sel is None and AGG_OPS[query.agg] != "COUNT":
            return None
        select = f"{AGG_OPS[query.agg]}({target})" if query.agg else target
        clauses, params = [], []
        for column, op, value in query.conds:
            number = as_number(value) if self.real[column] else None
            if number is not None:
                clauses.append(f'"c{column}" {op} ?')
                params.append(number)
            else:  # text: case-insensitive, as WikiSQL's engine (it lower-cases both sides)
                clauses.append(f'"c{column}" {op} ? COLLATE NOCASE')
                params.append(value)
        sql = f"SELECT {select} FROM t" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        deadline = time.monotonic() + timeout_s
        # the handler runs every 1000 VM instructions; a non-zero return aborts the query
        self.db.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
        try:
            rows = self.db.execute(sql, params).fetchall()
        except sqlite3.Error:
            return None
        finally:
            self.db.set_progress_handler(None, 0)
        return Counter(normalize_value(row[0]) for row in rows)


def normalize_value(value: Any) -> Any:
    """Result values compared across queries: numbers (and numeric strings: "3" == 3.0)
    as floats rounded to 6 decimal places; text case-folded, whitespace collapsed."""
    if value is None:
        return None
    number = as_number(value)
    if number is not None:
        return round(number, 6)
    return collapse(value).casefold()
