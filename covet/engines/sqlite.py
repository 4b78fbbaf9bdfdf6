"""SQLite: the online backup API for a consistent copy while the application writes."""

import contextlib
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from covet.engines.base import Dump, DumpOptions, Engine, RestoreOptions, RestoreResult
from covet.errors import DamagedError, NotFoundError, ToolError, UsageError
from covet.streams import copy_stream

SQLITE_MAGIC = b"SQLite format 3\x00"


def _check_sqlite_file(path: Path) -> None:
    if not path.exists():
        raise NotFoundError(f"SQLite database {path} does not exist")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise ToolError(f"cannot read SQLite database {path}: {exc.strerror}") from exc
    if magic and magic != SQLITE_MAGIC:
        raise UsageError(f"{path} is not a SQLite database")


class SqliteEngine(Engine):
    """A SQLite database file; ``database`` is its path."""

    name = "sqlite"

    def estimate_size(self, database: str) -> int | None:
        path = Path(database)
        _check_sqlite_file(path)
        return path.stat().st_size

    @contextlib.contextmanager
    def dump(self, database: str, options: DumpOptions = DumpOptions()) -> Iterator[Dump]:
        source_path = Path(database)
        _check_sqlite_file(source_path)
        os.makedirs(self.tmp_dir, mode=0o700, exist_ok=True)
        # The backup API writes a database, not a stream, so this engine needs
        # one temporary copy; it is private (0600) and always removed.
        fd, tmp_name = tempfile.mkstemp(prefix="covet-sqlite-", suffix=".db", dir=self.tmp_dir)
        os.close(fd)
        try:
            meta = self._copy(source_path, Path(tmp_name))
            # Counted on the copy, so the manifest describes exactly the snapshot stored.
            manifest = self.row_counts(tmp_name)
            with open(tmp_name, "rb") as stream:
                yield Dump(stream=stream, extension="sqlite3", meta=meta, manifest=manifest)
        finally:
            Path(tmp_name).unlink(missing_ok=True)

    @staticmethod
    def _copy(source_path: Path, dest_path: Path) -> dict:
        try:
            source = sqlite3.connect(f"{source_path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
        except sqlite3.Error as exc:
            raise ToolError(f"cannot open SQLite database {source_path}: {exc}") from exc
        try:
            dest = sqlite3.connect(dest_path)
            try:
                # One step (pages=-1) copies a single snapshot: with smaller
                # steps a concurrent writer restarts the copy, forever under load.
                source.backup(dest, pages=-1)
                page_count = dest.execute("PRAGMA page_count").fetchone()[0]
                # A WAL-mode source gives a WAL-mode copy; make the copy one
                # self-contained file.
                dest.execute("PRAGMA journal_mode=DELETE")
            finally:
                dest.close()
            version = sqlite3.sqlite_version
        except sqlite3.Error as exc:
            raise ToolError(f"SQLite backup of {source_path} failed: {exc}") from exc
        finally:
            source.close()
        return {"sqlite_version": version, "page_count": page_count, "source_path": str(source_path)}

    def restore(self, stream: BinaryIO, target: str, options: RestoreOptions = RestoreOptions(),
                extras: dict[str, bytes] | None = None) -> RestoreResult:
        if options.tables:
            raise UsageError("SQLite restores whole files; --table is for PostgreSQL and MySQL")
        target_path = Path(target).resolve()
        if target_path.exists() and not options.clean:
            raise UsageError(f"{target_path} already exists; restore into a new file (or pass --clean to replace it)")
        if not target_path.parent.is_dir():
            raise NotFoundError(f"directory {target_path.parent} does not exist")
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target_path.name}.", suffix=".restoring", dir=target_path.parent)
        tmp_path = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                size = copy_stream(stream, out)
                out.flush()
                os.fsync(out.fileno())
            check = integrity_check(tmp_path)
            os.replace(tmp_path, target_path)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
        return RestoreResult(location=str(target_path), detail={"bytes": size, "integrity_check": check})


    def row_counts(self, database: str, tables: tuple[str, ...] = ()) -> dict:
        conn = sqlite3.connect(f"{Path(database).resolve().as_uri()}?mode=ro", uri=True)
        try:
            names = [row[0] for row in conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
            counts = {}
            for name in names:
                if tables and f"main.{name}" not in tables and name not in tables:
                    continue
                quoted = '"' + name.replace('"', '""') + '"'
                counts[f"main.{name}"] = {"rows": conn.execute(f"SELECT count(*) FROM {quoted}").fetchone()[0],
                                          "exact": True}
        except sqlite3.Error as exc:
            raise ToolError(f"cannot count rows in {database}: {exc}") from exc
        finally:
            conn.close()
        return {"tables": counts, "consistent": True}


def integrity_check(path: Path) -> str:
    """Run PRAGMA integrity_check on ``path``; raise DamagedError unless it says ok."""
    try:
        with open(path, "rb") as handle:
            if handle.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
                raise DamagedError(f"restored file {path.name} is not a SQLite database")
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            rows = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise DamagedError(f"integrity check of {path.name} failed: {exc}") from exc
    if rows != ["ok"]:
        raise DamagedError(f"integrity check of {path.name} failed: {'; '.join(rows[:5])}")
    return "ok"
