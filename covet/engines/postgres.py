"""PostgreSQL: consistent logical backups with pg_dump and restores with pg_restore.

A dump runs in one exported snapshot: this engine opens a REPEATABLE READ
transaction, exports its snapshot, counts rows and reads the WAL position in
it, and hands it to ``pg_dump --snapshot``, so the row-count manifest and the
dump describe the same instant. The globals (roles, tablespaces) from
``pg_dumpall --globals-only`` travel with every dump as the extra
"globals.sql".

Formats: ``parallel == 1`` streams ``pg_dump -Fc -Z0`` (we compress
ourselves); ``parallel > 1`` runs ``pg_dump -Fd -j N -Z0`` into a temporary
directory and streams it as a tar, each table's file as soon as it is done.

Tools and passwords: client tools come from ``/usr/lib/postgresql/N/bin``
with the smallest N at least the server's major version (else from PATH, if
new enough). A password reaches the tools only through a PGPASSFILE written
0600 in a private directory that is removed afterwards, and psycopg as a
connect argument in memory. Database names reach the tools only inside a
``--dbname=`` connection string, never as a bare argument, so a name like
``--foo`` stays a name.
"""

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Iterator

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from covet.engines import pg_base
from covet.engines.base import (ROW_COUNT_EXACT_LIMIT, Dump, DumpOptions, Engine)
from covet.engines.tools import (EndHook, ToolStream, private_dir, read_password, run_tool, tool_env,
                                   write_secret_file)
from covet.engines.pg_restore import PostgresRestore
from covet.engines.pg_tools import (CONNECT_TIMEOUT, GLOBALS, MAINTENANCE_DATABASES, SAFE_MEMBER, SYSTEM_SCHEMAS_SQL,
                                    TAR_BLOCK, PgTools, find_tools, one_line, pg_errors, pgpass_line,
                                    safe_pg_dumpall_database)
from covet.errors import NotFoundError, ToolError, UsageError
from covet.streams import COPY_BUFFER, IterStream

log = logging.getLogger(__name__)

FINISHED_ITEM = re.compile(r"^pg_dump: finished item (\d+) ")

POSITION_SQL = """
    SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text,
           CASE WHEN pg_is_in_recovery() THEN NULL
                ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END
"""


def _tar_member(path: Path, name: str) -> Iterator[bytes]:
    """Yield one regular file as tar blocks, read in chunks (never whole in memory)."""
    size = path.stat().st_size
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    info.mtime = int(time.time())
    yield info.tobuf(format=tarfile.PAX_FORMAT)
    sent = 0
    with open(path, "rb") as handle:
        while sent < size and (chunk := handle.read(min(COPY_BUFFER, size - sent))):
            sent += len(chunk)
            yield chunk
    if sent != size:
        raise ToolError(f"pg_dump's file {name} changed size while it was packed ({sent} of {size} bytes)")
    if size % TAR_BLOCK:
        yield b"\0" * (TAR_BLOCK - size % TAR_BLOCK)


# The engine ------------------------------------------------------------------------

class PostgresEngine(PostgresRestore, Engine):
    """A PostgreSQL server; ``database`` is one database name on it."""

    name = "postgresql"

    def __init__(self, connection, tmp_dir: str):
        super().__init__(connection, tmp_dir)
        self._tools: PgTools | None = None

    # Connections

    def _conninfo(self, database: str | None) -> str:
        params = {"dbname": database, "host": self.connection.host or None,
                  "port": str(self.connection.port) if self.connection.port else None,
                  "user": self.connection.user or None, "connect_timeout": str(CONNECT_TIMEOUT),
                  "application_name": "covet-backup"}
        return make_conninfo("", **{key: value for key, value in params.items() if value is not None})

    def _where(self) -> str:
        host = self.connection.host or "the local socket"
        port = f":{self.connection.port}" if self.connection.port else ""
        user = f" as {self.connection.user}" if self.connection.user else ""
        return f"{host}{port}{user}"

    def _password(self) -> str | None:
        return read_password(self.connection.password_file)

    def _open(self, database: str, autocommit: bool = True) -> psycopg.Connection:
        password = self._password()
        kwargs = {"password": password} if password is not None else {}
        return psycopg.connect(self._conninfo(database), autocommit=autocommit, **kwargs)

    def _connect(self, database: str, autocommit: bool = True) -> psycopg.Connection:
        """Connect to ``database``; NotFoundError when it does not exist, ToolError with the server's words else."""
        try:
            return self._open(database, autocommit)
        except psycopg.Error as exc:
            message = one_line(exc)
            if self._database_missing(database):
                raise NotFoundError(f"PostgreSQL database {database!r} does not exist on {self._where()} "
                                    f"({message})") from None
            raise ToolError(f"cannot connect to PostgreSQL database {database!r} on {self._where()}: "
                            f"{message}") from None

    def _connect_maintenance(self) -> psycopg.Connection:
        errors = []
        for database in MAINTENANCE_DATABASES:
            try:
                return self._open(database)
            except psycopg.Error as exc:
                errors.append(one_line(exc))
        raise ToolError(f"cannot connect to PostgreSQL on {self._where()}: {errors[0]}")

    def _database_missing(self, database: str) -> bool:
        try:
            with self._connect_maintenance() as conn:
                return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None
        except (ToolError, psycopg.Error):
            return False

    def _tools_for(self, conn: psycopg.Connection) -> PgTools:
        if self._tools is None:
            self._tools = find_tools(conn.info.server_version // 10000)
            log.debug("using PostgreSQL client tools %s (%s)", self._tools.version, self._tools["pg_dump"])
        return self._tools

    @contextlib.contextmanager
    def _session(self, prefix: str) -> Iterator[tuple[Path, dict]]:
        """Yield a private work directory and the tools' environment (with a PGPASSFILE when there is a password)."""
        with private_dir(self.tmp_dir, prefix) as work:
            env = tool_env(LC_MESSAGES="C", PGCONNECT_TIMEOUT=str(CONNECT_TIMEOUT))
            env.pop("LC_ALL", None)  # it would override LC_MESSAGES; the tools' messages are parsed in English
            password = self._password()
            if password is not None:
                env["PGPASSFILE"] = str(write_secret_file(work, "pgpass", pgpass_line(password)))
            yield work, env

    # Size and counts

    def estimate_size(self, database: str) -> int | None:
        with self._connect(database) as conn:
            return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]

    def estimate_server_size(self) -> int | None:
        return pg_base.server_size(self)

    def base_backup(self, label: str) -> Iterator[Dump]:
        return pg_base.base_backup(self, label)

    def _tables(self, conn: psycopg.Connection) -> list[tuple]:
        return conn.execute(f"""
            SELECT n.nspname, c.relname, pg_relation_size(c.oid), c.reltuples::bigint,
                   has_table_privilege(c.oid, 'SELECT')
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'r' AND {SYSTEM_SCHEMAS_SQL}
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                              AND d.objid = c.oid AND d.deptype = 'e')
            ORDER BY 1, 2""").fetchall()

    @staticmethod
    def _count(conn: psycopg.Connection, schema: str, table: str) -> int:
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        return conn.execute(query).fetchone()[0]

    def _manifest(self, conn: psycopg.Connection) -> dict:
        # Tables the user may not read are estimated: pg_dump then reports the
        # permission problem in its own words.
        counts = {}
        for schema, table, size, estimate, readable in self._tables(conn):
            if readable and size < ROW_COUNT_EXACT_LIMIT:
                counts[f"{schema}.{table}"] = {"rows": self._count(conn, schema, table), "exact": True}
            else:
                counts[f"{schema}.{table}"] = {"rows": max(int(estimate), 0), "exact": False}
        return {"tables": counts, "consistent": True}

    def row_counts(self, database: str, tables: tuple[str, ...] = ()) -> dict:
        with self._connect(database, autocommit=False) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            counts = {}
            try:
                for schema, table, _size, _estimate, _readable in self._tables(conn):
                    name = f"{schema}.{table}"
                    if tables and name not in tables:
                        continue
                    counts[name] = {"rows": self._count(conn, schema, table), "exact": True}
            except psycopg.Error as exc:
                raise ToolError(f"cannot count rows in PostgreSQL database {database!r}: {one_line(exc)}") from None
            finally:
                conn.rollback()
        return {"tables": counts, "consistent": True}

    # Dump

    @contextlib.contextmanager
    def dump(self, database: str, options: DumpOptions = DumpOptions()) -> Iterator[Dump]:
        with self._session("covet-pg-dump-") as (work, env):
            conn = self._connect(database, autocommit=False)
            stream = None
            try:
                tools = self._tools_for(conn)
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                conn.read_only = True
                try:
                    # The transaction stays idle while pg_dump runs: a server-wide idle or
                    # statement timeout must not end it (SET takes no snapshot).
                    conn.execute("SET idle_in_transaction_session_timeout = 0; SET statement_timeout = 0")
                    # The first query takes the transaction's snapshot; export it, then read
                    # the WAL position right after.
                    snapshot, standby, version, version_num, size = conn.execute(
                        "SELECT pg_export_snapshot(), pg_is_in_recovery(), current_setting('server_version'), "
                        "current_setting('server_version_num')::int, pg_database_size(current_database())"
                    ).fetchone()
                    start_lsn, timeline = conn.execute(POSITION_SQL).fetchone()
                    if standby:
                        timeline = self._standby_timeline(conn)
                    manifest = self._manifest(conn)
                    superuser = conn.execute(
                        "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
                except psycopg.Error as exc:
                    raise ToolError(f"cannot take a snapshot of PostgreSQL database {database!r}: "
                                    f"{one_line(exc)}") from None
                meta = {"server_version": version, "server_version_num": version_num,
                        "pg_dump_version": tools.version, "tools_dir": str(Path(tools["pg_dump"]).parent),
                        "format": "directory" if options.parallel > 1 else "custom", "jobs": options.parallel,
                        "snapshot": snapshot, "standby": standby, "start_lsn": start_lsn, "end_lsn": None,
                        "timeline": timeline, "database_size": size,
                        "row_count_threshold": ROW_COUNT_EXACT_LIMIT}
                globals_sql, with_passwords = self._dump_globals(tools, env, database, superuser)
                meta["globals_role_passwords"] = with_passwords

                def finish() -> None:
                    try:
                        meta["end_lsn"] = conn.execute(POSITION_SQL).fetchone()[0]
                        conn.commit()
                    except psycopg.Error as exc:
                        raise ToolError(f"pg_dump finished but the end WAL position could not be read: "
                                        f"{one_line(exc)}") from None

                dbname_arg = f"--dbname={self._conninfo(database)}"
                if options.parallel > 1:
                    raw, extension = self._directory_dump(conn, tools, env, work, dbname_arg, snapshot,
                                                          options.parallel), "pgdir.tar"
                else:
                    raw = ToolStream([tools["pg_dump"], "--format=custom", "--compress=0", f"--snapshot={snapshot}",
                                      "--no-password", dbname_arg], env, "pg_dump", work / "pg_dump.stderr")
                    extension = "pgdump"
                stream = EndHook(raw, finish)
                yield Dump(stream=stream, extension=extension, meta=meta, manifest=manifest,
                           extras={GLOBALS: globals_sql})
            finally:
                if stream is not None:
                    stream.close()
                with contextlib.suppress(Exception):
                    conn.close()

    @staticmethod
    def _standby_timeline(conn: psycopg.Connection) -> int | None:
        try:
            with conn.transaction():
                return conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()[0]
        except psycopg.Error:
            return None

    def _dump_globals(self, tools: PgTools, env: dict, database: str, superuser: bool) -> tuple[bytes, bool]:
        """Return ``pg_dumpall --globals-only`` and whether it holds role passwords (only a superuser may read them)."""
        args = [tools["pg_dumpall"], "--globals-only", "--no-password", f"--dbname={self._conninfo(None)}"]
        if safe_pg_dumpall_database(database):
            args.append(f"--database={database}")
        if superuser:
            try:
                return run_tool(args, env, "pg_dumpall"), True
            except ToolError as exc:
                if "permission denied" not in str(exc):
                    raise
        return run_tool(args + ["--no-role-passwords"], env, "pg_dumpall"), False

    def _directory_dump(self, conn: psycopg.Connection, tools: PgTools, env: dict, work: Path, dbname_arg: str,
                        snapshot: str, jobs: int) -> IterStream:
        """Start ``pg_dump -Fd -j`` into ``work`` and return its files as a lazily produced tar stream."""
        need = conn.execute("SELECT (pg_database_size(current_database()) - "
                            "coalesce(sum(pg_relation_size(indexrelid)), 0))::bigint FROM pg_index").fetchone()[0]
        free = shutil.disk_usage(work).free
        if free < need:
            raise UsageError(f"--parallel dumps into a temporary directory first: it needs about {need >> 20} MiB "
                             f"and {work.parent} has {free >> 20} MiB free; free space there, point COVET_TMP_DIR "
                             "at a larger disk, or use --parallel 1 (which streams)")
        target = work / "dump"
        stderr_path = work / "pg_dump.stderr"
        args = [tools["pg_dump"], "--format=directory", f"--jobs={jobs}", "--compress=0", "--no-sync", "--verbose",
                f"--snapshot={snapshot}", f"--file={target}", "--no-password", dbname_arg]
        with open(stderr_path, "wb") as stderr:
            try:
                process = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                           stderr=stderr, start_new_session=True)
            except FileNotFoundError as exc:
                raise ToolError(f"pg_dump is not installed ({args[0]} not found)") from exc

        chunks = self._tar_chunks(process, target, stderr_path)

        def stop() -> None:
            chunks.close()
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # the leader and its worker processes
                process.wait()

        return IterStream(chunks, on_close=stop)

    @staticmethod
    def _tar_chunks(process: subprocess.Popen, target: Path, stderr_path: Path) -> Iterator[bytes]:
        # Each table's data file is sent as soon as pg_dump reports the item
        # finished (--verbose); the rest (toc.dat, large objects) once it exits.
        sent: set[str] = set()
        ready: list[str] = []
        partial = b""
        with open(stderr_path, "rb") as progress:
            while True:
                exited = process.poll() is not None
                partial += progress.read()
                *lines, partial = partial.split(b"\n")
                for line in lines:
                    match = FINISHED_ITEM.match(line.decode(errors="replace"))
                    if match:
                        ready.append(f"{match.group(1)}.dat")
                while ready:
                    name = ready.pop(0)
                    if name not in sent and (target / name).is_file():
                        sent.add(name)
                        yield from _tar_member(target / name, name)
                if exited:
                    break
                time.sleep(0.05)
        if process.returncode != 0:
            message = pg_errors(stderr_path.read_text(errors="replace"), "pg_dump")
            raise ToolError(f"pg_dump failed: {message or f'exit status {process.returncode}'}")
        for path in sorted(target.iterdir(), key=lambda p: (p.name == "toc.dat", p.name)):
            if path.name not in sent:
                if not path.is_file() or not SAFE_MEMBER.match(path.name):
                    raise ToolError(f"unexpected entry {path.name!r} in pg_dump's output directory")
                yield from _tar_member(path, path.name)
        yield b"\0" * (2 * TAR_BLOCK)


