"""PostgreSQL helpers for the engine tests: throw-away databases, table checksums and process lists.

Connections and private clusters come from bench.servers.postgres, shared with the benchmarks.
"""

import uuid
from pathlib import Path

from psycopg import sql

from bench.servers.postgres import connect


def unique(prefix: str = "covet_t_") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def drop_database(name: str, server: dict | None = None) -> None:
    with connect("postgres", server) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def database_exists(name: str, server: dict | None = None) -> bool:
    with connect("postgres", server) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def table_checksums(dbname: str, server: dict | None = None) -> dict[str, tuple[int, str]]:
    """Return {schema.table: (rows, checksum)} for every user table; the checksum ignores row order."""
    with connect(dbname, server) as conn:
        tables = conn.execute("""
            SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg\\_toast%' ORDER BY 1, 2""").fetchall()
        result = {}
        for schema, table in tables:
            query = sql.SQL("SELECT count(*), md5(coalesce(string_agg(md5(t::text), ',' ORDER BY md5(t::text)), '')) "
                            "FROM {}.{} t").format(sql.Identifier(schema), sql.Identifier(table))
            result[f"{schema}.{table}"] = tuple(conn.execute(query).fetchone())
        return result


def processes(match: str) -> list[tuple[int, str, dict]]:
    """Return (pid, command line, environment) of live processes whose command line contains ``match``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if match not in cmdline:
                continue
            environ = dict(item.split("=", 1) for item in
                           (entry / "environ").read_bytes().decode(errors="replace").split("\0") if "=" in item)
        except OSError:
            continue
        found.append((int(entry.name), cmdline, environ))
    return found
