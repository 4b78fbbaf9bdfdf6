"""The engine contract: estimate a database's size, dump it as a stream, restore a stream, count rows.

Engines take plain values (a ``ConnectionParams``, options) and streams,
never models, so workers, commands and the shipper can all call them.
"""

from dataclasses import dataclass, field
from typing import BinaryIO, ContextManager

from covet.errors import UsageError

# Tables whose data is below this size are counted exactly for the row-count
# manifest (COUNT(*) in the dump's snapshot, while the dump runs); larger ones
# carry the server's estimate, marked "exact": false and never compared. The
# counting scans compete with the dump for the same disks and cores: 64 MiB
# scans in well under a second from cache.
ROW_COUNT_EXACT_LIMIT = 64 * 1024 * 1024


@dataclass(frozen=True)
class ConnectionParams:
    """How to reach a database server; ``password_file`` is a path, never the password."""

    host: str = ""
    port: int | None = None
    user: str = ""
    password_file: str | None = None


@dataclass(frozen=True)
class DumpOptions:
    """How to dump: ``parallel`` > 1 asks for parallel dump jobs where the engine has them."""

    parallel: int = 1


@dataclass(frozen=True)
class RestoreOptions:
    """How to restore.

    ``clean`` replaces an existing target (the caller has already
    authenticated the whole stream); ``tables`` ("schema.name") restores only
    those tables; ``with_globals`` also restores roles (PostgreSQL) or users
    and grants (MySQL) from the dump's extras; ``parallel`` restore jobs;
    ``without_binlog`` (MySQL) writes nothing to the server's binary log, so
    the restore reaches neither replicas nor the binlog archive (a PITR's dump
    restore; it needs the SUPER or BINLOG ADMIN privilege).
    """

    clean: bool = False
    tables: tuple[str, ...] = ()
    with_globals: bool = False
    parallel: int = 1
    without_binlog: bool = False


@dataclass
class Dump:
    """A dump in progress.

    ``stream`` is read to its end by the caller; reading past a failed tool
    raises ToolError with the tool's own message. ``meta`` holds facts
    (versions, positions; the engine may add end positions when the stream
    ends). ``manifest`` is the row-count manifest of the dump's snapshot (see
    ``Engine.row_counts``). ``extras`` are small named artifacts stored,
    encrypted, beside the dump (e.g. "globals.sql"), complete before the
    stream's end.
    """

    stream: BinaryIO
    extension: str
    meta: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
    extras: dict[str, bytes] = field(default_factory=dict)


@dataclass
class RestoreResult:
    """What a restore produced, for the catalog and the operator."""

    location: str
    detail: dict = field(default_factory=dict)


class Engine:
    """Base of every database engine. Subclasses implement the methods that raise NotImplementedError."""

    name = "abstract"

    def __init__(self, connection: ConnectionParams, tmp_dir: str):
        self.connection = connection
        self.tmp_dir = tmp_dir

    def estimate_size(self, database: str) -> int | None:
        """Return the expected size of a dump of ``database`` in bytes, or None if unknown."""
        raise NotImplementedError

    def dump(self, database: str, options: DumpOptions = DumpOptions()) -> ContextManager[Dump]:
        """Return a context manager yielding a consistent dump of ``database``; it cleans up on exit."""
        raise NotImplementedError

    def base_backup(self, label: str) -> ContextManager[Dump]:
        """Return a context manager yielding a physical backup of the whole server (PostgreSQL only)."""
        raise UsageError(f"{self.name} targets have no base (physical) backups; take a logical backup instead")

    def estimate_server_size(self) -> int | None:
        """Return the expected size of a base backup of the whole server, or None if unknown."""
        return None

    def restore(self, stream: BinaryIO, target: str, options: RestoreOptions = RestoreOptions(),
                extras: dict[str, bytes] | None = None) -> RestoreResult:
        """Restore the plaintext dump read from ``stream`` into ``target``.

        An existing, non-empty target is refused unless ``options.clean``.
        A failed restore leaves no half-made new target behind.
        """
        raise NotImplementedError

    def row_counts(self, database: str, tables: tuple[str, ...] = ()) -> dict:
        """Return exact row counts of ``database`` (only ``tables`` when given) in manifest form.

        Manifest form: {"tables": {NAME: {"rows": N, "exact": bool}}, "consistent": bool}, NAME as the
        engine's restore takes it in ``RestoreOptions.tables`` ("schema.name" for PostgreSQL and SQLite,
        the bare table name for MySQL, whose restore renames the schema);
        "exact" false marks an estimate, "consistent" false a count not taken
        in the dump's snapshot. Both kinds are reported but never compared as
        differences.
        """
        raise NotImplementedError


def compared_tables(expected: dict, tables: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Return the tables whose counts ``compare_manifests`` compares (the rest need no counting after a restore)."""
    if not expected.get("consistent", False):
        return ()
    return tuple(sorted(name for name, entry in expected.get("tables", {}).items()
                        if entry.get("exact") and (not tables or name in tables)))


def compare_manifests(expected: dict, actual: dict, tables: tuple[str, ...] = ()) -> dict:
    """Compare a backup's manifest with counts after a restore.

    Return {"compared": N, "differences": [...], "skipped": [...]}: only exact
    counts from a consistent snapshot are compared; the rest are listed as
    skipped, never reported as differences.
    """
    wanted = set(tables) if tables else None
    differences, skipped, compared = [], [], 0
    consistent = expected.get("consistent", False)
    for name, entry in sorted(expected.get("tables", {}).items()):
        if wanted is not None and name not in wanted:
            continue
        restored = actual.get("tables", {}).get(name)
        if not (consistent and entry.get("exact")):
            skipped.append(name)
        elif restored is None:
            differences.append({"table": name, "expected": entry["rows"], "restored": None})
        else:
            compared += 1
            if restored["rows"] != entry["rows"]:
                differences.append({"table": name, "expected": entry["rows"], "restored": restored["rows"]})
    return {"compared": compared, "differences": differences, "skipped": skipped}
