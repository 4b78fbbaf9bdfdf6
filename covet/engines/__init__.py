"""Database engines, loaded by name on first use so unused client libraries are never imported."""

from covet.engines.base import (ConnectionParams, Dump, DumpOptions, Engine, RestoreOptions, RestoreResult,
                                  compare_manifests, compared_tables)
from covet.errors import UsageError
from covet.registry import Registered

ENGINES = {
    "sqlite": Registered("SQLite", "covet.engines.sqlite.SqliteEngine"),
    "postgresql": Registered("PostgreSQL", "covet.engines.postgres.PostgresEngine"),
    "mysql": Registered("MySQL/MariaDB", "covet.engines.mysql.MysqlEngine"),
}


def open_engine(name: str, connection: ConnectionParams, tmp_dir: str) -> Engine:
    """Return the engine called ``name`` for ``connection``."""
    try:
        entry = ENGINES[name]
    except KeyError:
        raise UsageError(
            f"the {name} engine is not available yet; supported: {', '.join(sorted(ENGINES))}"
        ) from None
    return entry.load()(connection, tmp_dir)


__all__ = ["ENGINES", "ConnectionParams", "Dump", "DumpOptions", "Engine", "RestoreOptions", "RestoreResult",
           "compare_manifests", "compared_tables", "open_engine"]
