"""Database engines, loaded by name on first use so unused client libraries are never imported."""

from importlib import import_module

from covet.engines.base import (ConnectionParams, Dump, DumpOptions, Engine, RestoreOptions, RestoreResult,
                                  compare_manifests, compared_tables)
from covet.errors import UsageError

ENGINES = {
    "sqlite": "covet.engines.sqlite.SqliteEngine",
    "postgresql": "covet.engines.postgres.PostgresEngine",
    "mysql": "covet.engines.mysql.MysqlEngine",
}


def open_engine(name: str, connection: ConnectionParams, tmp_dir: str) -> Engine:
    """Return the engine called ``name`` for ``connection``."""
    try:
        dotted = ENGINES[name]
    except KeyError:
        raise UsageError(
            f"the {name} engine is not available yet; supported: {', '.join(sorted(ENGINES))}"
        ) from None
    module_name, class_name = dotted.rsplit(".", 1)
    return getattr(import_module(module_name), class_name)(connection, tmp_dir)


__all__ = ["ENGINES", "ConnectionParams", "Dump", "DumpOptions", "Engine", "RestoreOptions", "RestoreResult",
           "compare_manifests", "compared_tables", "open_engine"]
