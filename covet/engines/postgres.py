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
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from covet.engines import pg_base, pg_toc
from covet.engines.base import (ROW_COUNT_EXACT_LIMIT, Dump, DumpOptions, Engine, RestoreOptions,
                                  RestoreResult)
from covet.engines.tools import (EndHook, ToolStream, private_dir, read_password, run_tool, stderr_tail, tool_env,
                                   write_secret_file)
from covet.errors import CovetError, DamagedError, NotFoundError, ToolError, UsageError

log = logging.getLogger(__name__)

# Where Debian/Ubuntu (and the PGDG packages) install one set of client tools per major version.
# Module-level so tests (and unusual installations) can point the search elsewhere.
PG_LIB_DIR = Path("/usr/lib/postgresql")
# None: search the PATH of this process for fallback tools.
TOOL_SEARCH_PATH: str | None = None
TOOLS = ("pg_dump", "pg_restore", "pg_dumpall", "psql")

MAINTENANCE_DATABASES = ("postgres", "template1")
CONNECT_TIMEOUT = 10  # seconds, for psycopg and every tool
COPY_BUFFER = 1024 * 1024
TAR_BLOCK = 512
GLOBALS = "globals.sql"
MAX_NAME_BYTES = 63  # NAMEDATALEN - 1: the server would silently truncate a longer name
SYSTEM_SCHEMAS_SQL = ("n.nspname NOT IN ('pg_catalog', 'information_schema') "
                      "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'")
# A data file name inside a directory-format dump: never a path.
SAFE_MEMBER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
FINISHED_ITEM = re.compile(r"^pg_dump: finished item (\d+) ")
ROLE_MISSING = re.compile(r'role "((?:[^"]|"")+)" does not exist')
ROLE_EXISTS = re.compile(r'role "((?:[^"]|"")+)" already exists')

POSITION_SQL = """
    SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text,
           CASE WHEN pg_is_in_recovery() THEN NULL
                ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END
"""


# Tools ------------------------------------------------------------------------

@dataclass(frozen=True)
class PgTools:
    """One matching set of client tools: their paths and major version."""

    major: int
    version: str
    paths: dict

    def __getitem__(self, tool: str) -> str:
        return self.paths[tool]


def _tool_version(path: str) -> tuple[int, str] | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10,
                             env=tool_env(LC_MESSAGES="C"), check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", out)
    if not match:
        return None
    major = int(match.group(1))
    return major, out.strip().split(") ", 1)[-1]


def find_tools(server_major: int, lib_dir: Path | None = None, search_path: str | None = None) -> PgTools:
    """Return client tools of at least ``server_major``: the smallest such /usr/lib/postgresql/N, else PATH.

    Raise ToolError naming what is installed and what is needed when none fits.
    """
    lib_dir = Path(lib_dir or PG_LIB_DIR)
    search_path = search_path if search_path is not None else TOOL_SEARCH_PATH
    installed = []
    versions = sorted(int(p.name) for p in lib_dir.iterdir() if p.name.isdigit()) if lib_dir.is_dir() else []
    for major in versions:
        bin_dir = lib_dir / str(major) / "bin"
        paths = {tool: str(bin_dir / tool) for tool in TOOLS}
        if not all(os.access(path, os.X_OK) for path in paths.values()):
            if (bin_dir / "pg_dump").exists():
                installed.append(f"an incomplete set in {bin_dir}")
            continue
        installed.append(f"version {major} in {bin_dir}")
        if major >= server_major:
            found = _tool_version(paths["pg_dump"])
            return PgTools(major, found[1] if found else str(major), paths)
    paths = {tool: shutil.which(tool, path=search_path) for tool in TOOLS}
    if all(paths.values()):
        found = _tool_version(paths["pg_dump"])
        restore = _tool_version(paths["pg_restore"])
        if found and restore and min(found[0], restore[0]) >= server_major:
            return PgTools(found[0], found[1], paths)
        installed.append(f"version {found[0] if found else 'unknown'} on PATH ({paths['pg_dump']})")
    elif paths["pg_dump"]:
        installed.append(f"an incomplete set on PATH ({paths['pg_dump']})")
    have = "; ".join(installed) if installed else "none"
    raise ToolError(f"no PostgreSQL client tools ({', '.join(TOOLS)}) of version {server_major} or newer found "
                    f"for this version {server_major} server; installed: {have}. Install the client package of "
                    f"version {server_major} or newer (e.g. postgresql-client-{server_major})")


# Streams ---------------------------------------------------------------------------

class _IterStream:
    """A readable stream over an iterator of byte chunks; ``on_close`` runs once when it is closed."""

    def __init__(self, chunks: Iterable[bytes], on_close: Callable[[], None] | None = None):
        self._chunks = iter(chunks)
        self._buffer = bytearray()
        self._ended = False
        self._on_close = on_close

    def read(self, size: int = -1) -> bytes:
        while not self._ended and (size is None or size < 0 or len(self._buffer) < size):
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                self._ended = True
        if size is None or size < 0:
            size = len(self._buffer)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if self._on_close:
            on_close, self._on_close = self._on_close, None
            on_close()


class _Prefixed:
    """A stream whose first bytes were already read (to sniff the format) and are given back first."""

    def __init__(self, head: bytes, stream):
        self.head = head
        self.stream = stream

    def read(self, size: int = -1) -> bytes:
        if self.head:
            if size is None or size < 0:
                data, self.head = self.head + self.stream.read(), b""
                return data
            data, self.head = self.head[:size], self.head[size:]
            return data
        return self.stream.read(size)


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


def _pg_errors(text: str, tool: str) -> str:
    """Return the error lines of a verbose tool's stderr: its own messages, without the progress chatter."""
    kept = []
    for line in text.splitlines():
        if not line.startswith(f"{tool}: ") or re.match(rf"^{tool}: (error|detail|hint|warning|fatal):", line):
            kept.append(line)
    return "\n".join(kept)[-4000:].strip()


def _pgpass_line(password: str) -> str:
    if "\n" in password or "\r" in password:
        raise UsageError("the database password contains a line break, which a PGPASSFILE cannot hold")
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    return f"*:*:*:*:{escaped}\n"


def _write_private_bytes(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _safe_pg_dumpall_database(name: str) -> bool:
    # pg_dumpall expands a --database value that looks like a connection string.
    return "=" not in name and not name.startswith(("postgres://", "postgresql://"))


# The engine ------------------------------------------------------------------------

class PostgresEngine(Engine):
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
            message = _one_line(exc)
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
                errors.append(_one_line(exc))
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
                env["PGPASSFILE"] = str(write_secret_file(work, "pgpass", _pgpass_line(password)))
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
                raise ToolError(f"cannot count rows in PostgreSQL database {database!r}: {_one_line(exc)}") from None
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
                                    f"{_one_line(exc)}") from None
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
                                        f"{_one_line(exc)}") from None

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
        if _safe_pg_dumpall_database(database):
            args.append(f"--database={database}")
        if superuser:
            try:
                return run_tool(args, env, "pg_dumpall"), True
            except ToolError as exc:
                if "permission denied" not in str(exc):
                    raise
        return run_tool(args + ["--no-role-passwords"], env, "pg_dumpall"), False

    def _directory_dump(self, conn: psycopg.Connection, tools: PgTools, env: dict, work: Path, dbname_arg: str,
                        snapshot: str, jobs: int) -> _IterStream:
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

        return _IterStream(chunks, on_close=stop)

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
            message = _pg_errors(stderr_path.read_text(errors="replace"), "pg_dump")
            raise ToolError(f"pg_dump failed: {message or f'exit status {process.returncode}'}")
        for path in sorted(target.iterdir(), key=lambda p: (p.name == "toc.dat", p.name)):
            if path.name not in sent:
                if not path.is_file() or not SAFE_MEMBER.match(path.name):
                    raise ToolError(f"unexpected entry {path.name!r} in pg_dump's output directory")
                yield from _tar_member(path, path.name)
        yield b"\0" * (2 * TAR_BLOCK)

    # Restore

    def restore(self, stream: BinaryIO, target: str, options: RestoreOptions = RestoreOptions(),
                extras: dict[str, bytes] | None = None) -> RestoreResult:
        extras = extras or {}
        if options.with_globals and GLOBALS not in extras:
            raise UsageError("this backup holds no globals (roles, tablespaces) to restore; drop --with-globals")
        if not target:
            raise UsageError("say which database to restore into: --target-database NAME")
        if len(target.encode()) > MAX_NAME_BYTES:
            raise UsageError(f"database name {target!r} is longer than PostgreSQL's {MAX_NAME_BYTES} bytes; "
                             "choose a shorter --target-database")
        with self._session("covet-pg-restore-") as (work, env):
            with self._connect_maintenance() as maint:
                tools = self._tools_for(maint)
                server_num = maint.info.server_version
                exists = maint.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target,)).fetchone() is not None
            if exists and not options.clean:
                with self._connect(target) as conn:
                    objects = self._user_objects(conn)
                if objects:
                    raise UsageError(f"database {target!r} already exists and is not empty (it holds "
                                     f"{', '.join(objects[:5])}{' ...' if len(objects) > 5 else ''}); restore into "
                                     "a new name, or pass --clean to replace what the backup holds in it")
            detail = {"database": target, "created": not exists, "clean": options.clean}
            if options.with_globals:
                detail["globals"] = self._apply_globals(extras[GLOBALS], tools, env, work)
            if not exists:
                self._create_database(target)
            try:
                detail.update(self._restore_into(stream, target, options, tools, env, work, existed=exists))
            except BaseException:
                if not exists:
                    self._drop_database(target, server_num)
                raise
        host = self.connection.host or "localhost"
        port = self.connection.port or 5432
        return RestoreResult(location=f"postgresql://{host}:{port}/{quote(target, safe='')}", detail=detail)

    @staticmethod
    def _user_objects(conn: psycopg.Connection) -> list[str]:
        rows = conn.execute(f"""
            SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {SYSTEM_SCHEMAS_SQL}
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                              AND d.objid = c.oid AND d.deptype = 'e')
            UNION ALL
            SELECT n.nspname || '.' || p.proname || '()' FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE {SYSTEM_SCHEMAS_SQL}
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                              AND d.objid = p.oid AND d.deptype = 'e')
            ORDER BY 1""").fetchall()
        return [row[0] for row in rows]

    def _create_database(self, target: str) -> None:
        # template0: a restore must start from a database with nothing of template1's local additions.
        with self._connect_maintenance() as maint:
            try:
                maint.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(target)))
            except psycopg.Error as exc:
                raise ToolError(f"cannot create PostgreSQL database {target!r}: {_one_line(exc)}") from None

    def _drop_database(self, target: str, server_num: int) -> None:
        """Drop a database this restore created, so no half-made target remains."""
        try:
            with self._connect_maintenance() as maint:
                if server_num >= 130000:
                    maint.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target)))
                else:
                    maint.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                                  (target,))
                    maint.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(target)))
        except (CovetError, psycopg.Error) as exc:
            log.warning("could not drop the half-restored database %r: %s", target, exc)

    def _apply_globals(self, globals_sql: bytes, tools: PgTools, env: dict, work: Path) -> dict:
        """Run the saved globals with psql; roles that already exist are counted, not failures."""
        path = _write_private_bytes(work / GLOBALS, globals_sql)  # holds password hashes: 0600, removed with work
        args = [tools["psql"], "--no-psqlrc", "--no-password", "--quiet", "--set=ON_ERROR_STOP=0",
                f"--dbname={self._conninfo(MAINTENANCE_DATABASES[0])}", f"--file={path}"]
        done = subprocess.run(args, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=False)
        stderr = done.stderr.decode(errors="replace")
        if done.returncode != 0:
            raise ToolError(f"psql could not apply the backup's globals: {stderr[-4000:].strip()}")
        existing, errors = [], []
        for line in stderr.splitlines():
            if "ERROR:" not in line:
                continue
            message = line.split("ERROR:", 1)[1].strip()
            match = ROLE_EXISTS.search(message)
            if match:
                existing.append(match.group(1).replace('""', '"'))
            else:
                errors.append(line.removeprefix(f"psql:{path}:").strip())
        return {"statements_failed": len(errors), "errors": errors[:20], "roles_already_present": existing}

    def _restore_into(self, stream, target: str, options: RestoreOptions, tools: PgTools, env: dict, work: Path,
                      existed: bool) -> dict:
        head = b""
        while len(head) < TAR_BLOCK and (chunk := stream.read(TAR_BLOCK - len(head))):
            head += chunk
        if head.startswith(pg_toc.MAGIC):
            kind = "custom"
        elif head[257:262] == b"ustar":
            kind = "directory"
        else:
            raise DamagedError("the backup's dump is neither a pg_dump custom archive nor a directory-format tar")
        stream = _Prefixed(head, stream)
        args = [tools["pg_restore"], "--no-password", f"--dbname={self._conninfo(target)}", "--exit-on-error"]
        if options.clean:
            args += ["--clean", "--if-exists"]
        if options.parallel > 1:
            args.append(f"--jobs={options.parallel}")
        elif existed:
            # Into a database that was there before: all or nothing.
            args.append("--single-transaction")
        detail = {"format": kind, "jobs": options.parallel}
        if kind == "custom" and not options.tables and options.parallel == 1:
            self._pipe_restore(stream, args, env, work)
            return detail
        if kind == "custom":
            archive = work / "archive.pgdump"
            self._spool(stream, archive)
        else:
            archive = work / "dump"
            self._untar(stream, archive)
        if options.tables:
            selection = pg_toc.select_tables(pg_toc.read_toc_file(archive), options.tables)
            if existed:
                selection = self._without_existing_schemas(selection, archive, target)
            list_path = work / "restore.list"
            list_path.write_text(pg_toc.list_file(selection))
            args.append(f"--use-list={list_path}")
            detail.update(tables=selection.tables, dependencies=selection.dependencies, skipped=selection.skipped)
        self._run_restore(args + [str(archive)], env, work)
        return detail

    def _without_existing_schemas(self, selection: pg_toc.Selection, archive: Path, target: str) -> pg_toc.Selection:
        # A table restored into an existing database must not re-create (or, with --clean, drop) its schema.
        toc = {e.dump_id: e for e in pg_toc.read_toc_file(archive).entries}
        with self._connect(target) as conn:
            schemas = {row[0] for row in conn.execute("SELECT nspname FROM pg_namespace")}
        keep = [i for i in selection.dump_ids if not (toc[i].desc == "SCHEMA" and toc[i].tag in schemas)]
        return pg_toc.Selection(keep, selection.tables, selection.dependencies, selection.skipped)

    @staticmethod
    def _spool(stream, path: Path) -> None:
        # pg_restore -j and -L need a seekable archive; the stream is authenticated frame by frame as it is read.
        try:
            with open(path, "wb") as out:
                while chunk := stream.read(COPY_BUFFER):
                    out.write(chunk)
        except OSError as exc:
            raise CovetError(f"cannot spool the dump to {path.parent} for pg_restore: {exc.strerror or exc}; "
                             "free space there or point COVET_TMP_DIR at a larger disk") from None

    @staticmethod
    def _untar(stream, directory: Path) -> None:
        directory.mkdir(mode=0o700)
        try:
            with tarfile.open(fileobj=stream, mode="r|") as archive:
                for member in archive:
                    if not member.isfile() or not SAFE_MEMBER.match(member.name):
                        raise DamagedError(f"unexpected entry {member.name!r} in the backup's directory-format tar")
                    source = archive.extractfile(member)
                    with open(directory / member.name, "xb") as out:
                        shutil.copyfileobj(source, out, COPY_BUFFER)
        except tarfile.TarError as exc:
            raise DamagedError(f"the backup's directory-format tar cannot be read: {exc}") from None
        except OSError as exc:
            raise CovetError(f"cannot unpack the dump into {directory.parent}: {exc.strerror or exc}; "
                             "free space there or point COVET_TMP_DIR at a larger disk") from None
        while stream.read(COPY_BUFFER):
            pass  # to the end, so the stored object's checksum is checked

    @staticmethod
    def _restore_failed(message: str) -> ToolError:
        missing = sorted({m.replace('""', '"') for m in ROLE_MISSING.findall(message)})
        hint = ""
        if missing:
            hint = (f" — role(s) {', '.join(missing)} used by the backup do not exist on this server: pass "
                    "--with-globals to restore the roles saved with the backup, or create them first")
        return ToolError(f"pg_restore failed: {message}{hint}")

    def _run_restore(self, args: list[str], env: dict, work: Path) -> None:
        stderr_path = work / "pg_restore.stderr"
        with open(stderr_path, "wb") as stderr:
            try:
                done = subprocess.run(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=stderr, check=False)
            except FileNotFoundError as exc:
                raise ToolError(f"pg_restore is not installed ({args[0]} not found)") from exc
        if done.returncode != 0:
            raise self._restore_failed(stderr_tail(stderr_path) or f"exit status {done.returncode}")

    def _pipe_restore(self, stream, args: list[str], env: dict, work: Path) -> None:
        """Feed the stream to pg_restore's stdin; a damaged stream kills it, its failure is raised with its words."""
        stderr_path = work / "pg_restore.stderr"
        with open(stderr_path, "wb") as stderr:
            try:
                process = subprocess.Popen(args, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                           stderr=stderr)
            except FileNotFoundError as exc:
                raise ToolError(f"pg_restore is not installed ({args[0]} not found)") from exc
        try:
            broken = False
            while chunk := stream.read(COPY_BUFFER):
                try:
                    process.stdin.write(chunk)
                except BrokenPipeError:
                    broken = True
                    break
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
            returncode = process.wait()
            if returncode != 0:
                raise self._restore_failed(stderr_tail(stderr_path) or f"exit status {returncode}")
            if broken:
                while stream.read(COPY_BUFFER):
                    pass  # pg_restore needed no more; read on so the stored object's checksum is checked
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            with contextlib.suppress(OSError):
                process.stdin.close()
