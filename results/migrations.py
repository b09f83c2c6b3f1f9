"""Schema migrations: opening a database made by an older harness upgrades it in place.

``STEPS[v]`` upgrades a database from schema version ``v`` to ``v + 1``. Version 1 is
the first released schema, so there are no steps yet; a schema change bumps
``results.schema.SCHEMA_VERSION`` and adds its step here.
"""

from __future__ import annotations

from typing import Callable

from sqlalchemy import Connection, text
from sqlalchemy.engine import Engine

STEPS: dict[int, Callable[[Connection], None]] = {}


def migrate(engine: Engine, from_version: int) -> None:
    from results.schema import SCHEMA_VERSION

    with engine.begin() as connection:  # all steps or none
        for version in range(from_version, SCHEMA_VERSION):
            if version not in STEPS:
                raise RuntimeError(f"no migration from schema version {version} to {version + 1}")
            STEPS[version](connection)
        connection.execute(text("UPDATE meta SET value = :v WHERE key = 'schema_version'"), {"v": str(SCHEMA_VERSION)})
