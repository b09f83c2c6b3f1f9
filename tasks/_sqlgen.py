"""GENERATED text-to-SQL data: small random tables and template questions, in the
WikiSQL hub schema with the SQL rendered in WikiSQL's human-readable style (as the
mlx-examples rendering of the real data: table id after FROM, values single-quoted).

Everything here is synthetic: table contents are random draws from small value pools
(numbers are invented; country/capital/continent triples are the only real facts).
Deterministic for a given seed (``random.Random`` only, no hash-order dependence).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

from tasks._sql import AGG_OPS, COND_OPS, Table, query_from_struct

FIRST = ("Anna Ben Carla David Elena Felix Grace Hugo Irene Jonas Karin Leo Maria Nils Olga Pablo Rosa Samuel "
         "Tara Victor Wendy Yusuf Zoe Marco Lena Ivan Nora Omar Petra Raul").split()
LAST = ("Adams Berg Costa Dietrich Evans Fischer Garcia Hansen Ito Jensen Kowalski Lopez Meyer Novak Olsen "
        "Petrov Quinn Rossi Silva Tanaka Urban Vidal Weber Young Zimmer Moreau Brandt Lund Okafor Reyes").split()
COUNTRIES = (  # (country, capital, continent, main language): real facts
    ("France", "Paris", "Europe", "French"), ("Germany", "Berlin", "Europe", "German"),
    ("Spain", "Madrid", "Europe", "Spanish"), ("Italy", "Rome", "Europe", "Italian"),
    ("Portugal", "Lisbon", "Europe", "Portuguese"), ("Poland", "Warsaw", "Europe", "Polish"),
    ("Sweden", "Stockholm", "Europe", "Swedish"), ("Norway", "Oslo", "Europe", "Norwegian"),
    ("Greece", "Athens", "Europe", "Greek"), ("Austria", "Vienna", "Europe", "German"),
    ("Japan", "Tokyo", "Asia", "Japanese"), ("China", "Beijing", "Asia", "Chinese"),
    ("India", "New Delhi", "Asia", "Hindi"), ("Thailand", "Bangkok", "Asia", "Thai"),
    ("Vietnam", "Hanoi", "Asia", "Vietnamese"), ("South Korea", "Seoul", "Asia", "Korean"),
    ("Indonesia", "Jakarta", "Asia", "Indonesian"), ("Egypt", "Cairo", "Africa", "Arabic"),
    ("Kenya", "Nairobi", "Africa", "Swahili"), ("Nigeria", "Abuja", "Africa", "English"),
    ("Ghana", "Accra", "Africa", "English"), ("Morocco", "Rabat", "Africa", "Arabic"),
    ("Senegal", "Dakar", "Africa", "French"), ("Brazil", "Brasilia", "South America", "Portuguese"),
    ("Argentina", "Buenos Aires", "South America", "Spanish"), ("Chile", "Santiago", "South America", "Spanish"),
    ("Peru", "Lima", "South America", "Spanish"), ("Colombia", "Bogota", "South America", "Spanish"),
    ("Canada", "Ottawa", "North America", "English"), ("Mexico", "Mexico City", "North America", "Spanish"),
    ("Cuba", "Havana", "North America", "Spanish"), ("Australia", "Canberra", "Oceania", "English"),
    ("New Zealand", "Wellington", "Oceania", "English"), ("Fiji", "Suva", "Oceania", "English"),
)
TEAMS = "Rovers United Athletic Rangers Wanderers City Albion Dynamo Sporting Harbour".split()
TOWN_A = "Ash Brook Clay Elm Fair Glen Hazel Iron Kings Lark Mill North Oak Pine Red Stone West Wolf".split()
TOWN_B = "ford vale field ton bury wick haven mouth stead ridge".split()
ADJ = "Silent Golden Last Hidden Broken Distant Crimson Quiet Endless Bright Frozen Lost Northern Secret".split()
NOUN = "River Garden Winter Harbor Letter Journey Kingdom Mirror Orchard Signal Island Promise Shadow Voyage".split()


@dataclass
class Column:
    header: str
    noun: str  # how questions name it
    kind: str  # "text" | "real"


@dataclass
class Schema:
    name: str
    entity: str
    plural: str
    columns: list[Column]
    row: Callable[[random.Random], list[str]]  # one random row; column 0 is the key


def _person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def _country_row(rng: random.Random) -> list[str]:
    country, capital, continent, language = rng.choice(COUNTRIES)
    return [country, capital, continent, language, f"{rng.uniform(0.3, 300):.1f}", str(rng.randint(10, 9000))]


SCHEMAS = [
    Schema("countries", "country", "countries",
           [Column("Country", "name", "text"), Column("Capital", "capital", "text"), Column("Continent", "continent", "text"),
            Column("Language", "language", "text"), Column("Population (millions)", "population", "real"),
            Column("Area (thousand km2)", "area", "real")], _country_row),
    Schema("players", "player", "players",
           [Column("Player", "name", "text"), Column("Team", "team", "text"), Column("Position", "position", "text"),
            Column("Nationality", "nationality", "text"), Column("Goals", "number of goals", "real"), Column("Age", "age", "real")],
           lambda r: [_person(r), r.choice(TEAMS), r.choice(["Goalkeeper", "Defender", "Midfielder", "Forward"]),
                      r.choice(COUNTRIES)[0], str(r.randint(0, 40)), str(r.randint(17, 38))]),
    Schema("films", "film", "films",
           [Column("Title", "title", "text"), Column("Director", "director", "text"), Column("Genre", "genre", "text"),
            Column("Year", "year", "real"), Column("Runtime (min)", "runtime", "real"), Column("Rating", "rating", "real")],
           lambda r: [f"The {r.choice(ADJ)} {r.choice(NOUN)}", _person(r), r.choice(["Drama", "Comedy", "Thriller", "Western", "Documentary", "Musical"]),
                      str(r.randint(1950, 2023)), str(r.randint(75, 190)), f"{r.uniform(1, 9.9):.1f}"]),
    Schema("towns", "town", "towns",
           [Column("Town", "name", "text"), Column("Region", "region", "text"), Column("Population", "population", "real"),
            Column("Elevation (m)", "elevation", "real"), Column("Founded", "founding year", "real")],
           lambda r: [r.choice(TOWN_A) + r.choice(TOWN_B), r.choice(["North", "South", "East", "West", "Central", "Coastal"]),
                      str(r.randint(800, 250000)), str(r.randint(0, 2400)), str(r.randint(1100, 1950))]),
    Schema("books", "book", "books",
           [Column("Title", "title", "text"), Column("Author", "author", "text"), Column("Publisher", "publisher", "text"),
            Column("Year", "publication year", "real"), Column("Pages", "number of pages", "real")],
           lambda r: [f"{r.choice(NOUN)} of the {r.choice(ADJ)} {r.choice(NOUN)}", _person(r),
                      r.choice(["Penguin", "Harper", "Vintage", "Orbit", "Faber", "Tor"]), str(r.randint(1900, 2023)), str(r.randint(90, 900))]),
]


def make_table(rng: random.Random, schema: Schema, name: str) -> dict[str, Any]:
    """A fresh random table. Its id (shown in the prompt, used after FROM) is the schema's
    name, so SQL never has to copy an opaque id; ``name`` identifies the table instance."""
    rows, keys = [], set()
    for _ in range(rng.randint(5, 15)):
        row = schema.row(rng)
        if row[0] not in keys:  # the key column identifies a row
            keys.add(row[0])
            rows.append(row)
    return {"id": schema.name, "name": name, "header": [c.header for c in schema.columns],
            "types": [c.kind for c in schema.columns], "rows": rows, "page_title": "", "caption": f"GENERATED {schema.name} table"}


def render(table_id: str, header: list[str], sel: int, agg: int, conds: list[tuple[int, int, str]]) -> str:
    text = f"SELECT {AGG_OPS[agg] + ' ' if agg else ''}{header[sel]} FROM {table_id}"
    if conds:
        text += " WHERE " + " AND ".join(f"{header[c]} {COND_OPS[op]} '{v}'" for c, op, v in conds)
    return text


def _threshold(rng: random.Random, values: list[float]) -> str | None:
    """A cut strictly between two adjacent distinct table values (so > and < both select rows)."""
    distinct = sorted(set(values))
    if len(distinct) < 2:
        return None
    i = rng.randrange(len(distinct) - 1)
    low, high = distinct[i], distinct[i + 1]
    if low.is_integer() and high.is_integer() and high - low >= 2:
        return str(int((low + high) // 2))
    return f"{(low + high) / 2:.2f}".rstrip("0").rstrip(".")


def _a(noun: str) -> str:
    return ("an " if noun[0].lower() in "aeiou" else "a ") + noun


def make_question(rng: random.Random, schema: Schema, table: dict[str, Any]) -> tuple[str, int, int, list[tuple[int, int, str]]] | None:
    """(question, sel, agg, conds) for one random template, or None if it does not fit the table."""
    cols, rows = schema.columns, table["rows"]
    text_cols = [i for i, c in enumerate(cols) if c.kind == "text" and i > 0]
    num_cols = [i for i, c in enumerate(cols) if c.kind == "real"]
    row = rng.choice(rows)
    e, es = schema.entity, schema.plural
    kind = rng.choice(["key", "key", "attr", "which", "count", "agg", "agg", "agg_all", "compare", "count_compare", "and", "and_compare"])
    if kind == "key":  # look up an attribute of a named row
        sel = rng.randrange(1, len(cols))
        q = rng.choice(["What is the {s} of {v}?", "Tell me the {s} for {v}.", "What {s} does {v} have?"])
        return q.format(s=cols[sel].noun, v=row[0]), sel, 0, [(0, 0, row[0])]
    if kind == "attr":
        c = rng.choice(text_cols)
        sel = rng.choice([i for i in range(len(cols)) if i != c])
        q = rng.choice(["What is the {s} of the {e} whose {c} is {v}?", "List the {s} of {es} with {c} {v}."])
        return q.format(s=cols[sel].noun, e=e, es=es, c=cols[c].noun, v=row[c]), sel, 0, [(c, 0, row[c])]
    if kind == "which":
        c = rng.choice(text_cols + num_cols)
        q = rng.choice(["Which {e} has {c} of {v}?", "Name the {e} whose {c0} is {v}."])
        return q.format(e=e, c=_a(cols[c].noun), c0=cols[c].noun, v=row[c]), 0, 0, [(c, 0, row[c])]
    if kind == "count":
        c = rng.choice(text_cols)
        q = rng.choice(["How many {es} have {c} of {v}?", "How many {es} are there with {c0} {v}?"])
        return q.format(es=es, c=_a(cols[c].noun), c0=cols[c].noun, v=row[c]), 0, 3, [(c, 0, row[c])]
    agg_words = {1: ["highest", "largest", "maximum"], 2: ["lowest", "smallest", "minimum"], 4: ["total"], 5: ["average", "mean"]}
    if kind in ("agg", "agg_all"):
        n, c, agg = rng.choice(num_cols), rng.choice(text_cols), rng.choice([1, 2, 4, 5])
        word = rng.choice(agg_words[agg])
        if kind == "agg_all":
            return f"What is the {word} {cols[n].noun} of all {es}?", n, agg, []
        q = rng.choice(["What is the {w} {n} among {es} whose {c} is {v}?", "What is the {w} {n} for {es} with {c} {v}?"])
        return q.format(w=word, n=cols[n].noun, es=es, c=cols[c].noun, v=row[c]), n, agg, [(c, 0, row[c])]
    n = rng.choice(num_cols)
    cut = _threshold(rng, [float(r[n]) for r in rows])
    if cut is None:
        return None
    op = rng.choice([1, 2])
    word = rng.choice(["greater than", "more than", "above"] if op == 1 else ["less than", "below", "under"])
    if kind == "compare":
        return f"Which {es} have {_a(cols[n].noun)} {word} {cut}?", 0, 0, [(n, op, cut)]
    if kind == "count_compare":
        return f"How many {es} have {_a(cols[n].noun)} {word} {cut}?", 0, 3, [(n, op, cut)]
    c = rng.choice(text_cols)
    if kind == "and_compare":
        return (f"Which {e} has {_a(cols[c].noun)} of {row[c]} and {_a(cols[n].noun)} {word} {cut}?", 0, 0, [(c, 0, row[c]), (n, op, cut)])
    c2 = rng.choice([i for i in text_cols + num_cols if i != c])
    sel = rng.choice([i for i in range(len(cols)) if i not in (c, c2)])
    return (f"What is the {cols[sel].noun} of the {e} whose {cols[c].noun} is {row[c]} and whose {cols[c2].noun} is {row[c2]}?",
            sel, 0, [(c, 0, row[c]), (c2, 0, row[c2])])


def generate(n_examples: int, seed: int, id_prefix: str, questions_per_table: int = 5) -> list[dict[str, Any]]:
    """``n_examples`` WikiSQL-schema rows over fresh tables (table names ``<schema>_<prefix><n>``)."""
    rng = random.Random(seed)
    examples: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    table_index = 0
    while len(examples) < n_examples:
        schema = SCHEMAS[table_index % len(SCHEMAS)]
        table = make_table(rng, schema, f"{schema.name}_{id_prefix}{table_index}")
        table_index += 1
        executable = Table(table["header"], table["rows"], table["types"])
        for _ in range(questions_per_table):
            made = make_question(rng, schema, table)
            if made is None or len(examples) >= n_examples:
                continue
            question, sel, agg, conds = made
            sql = {"human_readable": render(table["id"], table["header"], sel, agg, conds), "sel": sel, "agg": agg,
                   "conds": {"column_index": [c for c, _, _ in conds], "operator_index": [o for _, o, _ in conds],
                             "condition": [v for _, _, v in conds]}}
            result = executable.execute(query_from_struct(sql))
            if not result or list(result) == [None] or (table["name"], question) in seen:
                continue  # only questions with a non-empty answer, each once
            seen.add((table["name"], question))
            examples.append({"id": f"{table['name']}-{len(examples)}", "question": question, "table": table, "sql": sql})
    return examples
