"""Schema migrations: opening a database made by an older harness upgrades it in place.

``STEPS[v]`` upgrades a database from schema version ``v`` to ``v + 1``. A schema change
bumps ``results.schema.SCHEMA_VERSION`` and adds its step here; a step that only adds
*tables* needs no code (``create_all`` below adds missing tables), new *columns* do.
Steps run in the caller's transaction, which holds the store's write lock, so two
processes opening an old database at once migrate it once, and a failing step leaves it
as it was.
"""

from __future__ import annotations

from typing import Callable

from sqlalchemy import Connection, text

from results.schema import SCHEMA_VERSION, Base


def _v1_to_v2(connection: Connection) -> None:
    """Run liveness (driver pid + heartbeat, so a later run can tell a dead run from a
    live one), the executor of a run, and the worker that ran each job."""
    for statement in (
        "ALTER TABLE runs ADD COLUMN executor VARCHAR(100)",
        "ALTER TABLE runs ADD COLUMN pid INTEGER",
        "ALTER TABLE runs ADD COLUMN heartbeat_at TIMESTAMP",
        "ALTER TABLE runs ADD COLUMN status VARCHAR(16)",
        "ALTER TABLE jobs ADD COLUMN worker VARCHAR(300)",
    ):
        connection.execute(text(statement))
    # A version-1 run that never finished cannot be running now: a version-1 harness
    # refuses a version-2 database. Its unfinished jobs are marked by the next claim.
    connection.execute(text("UPDATE runs SET status = CASE WHEN finished_at IS NULL THEN 'died' ELSE 'finished' END"))


def _v2_to_v3(connection: Connection) -> None:
    """Job identity under spec versions (rows before them are spec version 1), resolved hub
    revisions, and the spread of a metric measured as a median of repeats."""
    for statement in (
        "ALTER TABLE jobs ADD COLUMN spec_version INTEGER",
        "ALTER TABLE jobs ADD COLUMN resolved_json TEXT",
        "ALTER TABLE metrics ADD COLUMN spread FLOAT",
    ):
        connection.execute(text(statement))
    connection.execute(text("UPDATE jobs SET spec_version = 1 WHERE spec_version IS NULL"))


STEPS: dict[int, Callable[[Connection], None]] = {1: _v1_to_v2, 2: _v2_to_v3}


def migrate(connection: Connection, from_version: int) -> None:
    """Upgrade to ``SCHEMA_VERSION`` inside the caller's transaction."""
    for version in range(from_version, SCHEMA_VERSION):
        if version not in STEPS:
            raise RuntimeError(f"no migration from schema version {version} to {version + 1}")
        STEPS[version](connection)
    Base.metadata.create_all(connection)  # tables added since (checkfirst: existing ones are kept)
    connection.execute(text("UPDATE meta SET value = :v WHERE key = 'schema_version'"), {"v": str(SCHEMA_VERSION)})
