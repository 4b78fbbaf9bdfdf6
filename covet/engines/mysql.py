"""MySQL and MariaDB: logical dumps with mariadb-dump/mysqldump, binlog coordinates, users and grants.

Consistency: a brief global read lock (FLUSH TABLES WITH READ LOCK) is held
while a counting connection starts its consistent snapshot, the binlog
coordinates are read, and the dump tool starts its own --single-transaction
snapshot. No transaction can commit while the lock is held, so the counts,
the coordinates and the dump all describe one state. The lock is released as
soon as the dump tool reports that its transaction has started.

The password travels in a --defaults-extra-file (0600, in a private
directory, removed afterwards) to the tools, and in memory to PyMySQL.
"""

import contextlib
import getpass
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pymysql

from covet.engines import mysql_grants
from covet.engines.base import (ROW_COUNT_EXACT_LIMIT, Dump, DumpOptions, Engine)
from covet.engines.tools import EndHook, ToolStream, private_dir, read_password, tool_env, \
    write_secret_file
from covet.engines.mysql_restore import MysqlRestore
from covet.engines.mysql_tools import find_tool, server_message, tool_message
from covet.errors import NotFoundError, ToolError, UsageError

DUMP_TOOLS = ("mariadb-dump", "mysqldump")
# Where MariaDB and MySQL packages put the server socket, in the order clients look.
SOCKET_PATHS = ("/run/mysqld/mysqld.sock", "/var/run/mysqld/mysqld.sock", "/var/lib/mysql/mysql.sock",
                "/tmp/mysql.sock")
DEFAULT_PORT = 3306
# Engines whose reads join the consistent snapshot; others are counted but
# labelled approximate, because the dump reads them later without a snapshot.
SNAPSHOT_ENGINES = {"InnoDB"}
# Waiting for FLUSH TABLES WITH READ LOCK: a long query on any table delays it,
# and writers queue behind it meanwhile, so give up rather than stall them.
LOCK_WAIT_TIMEOUT = 30
# How long the dump tool may take to connect and start its transaction.
SNAPSHOT_START_TIMEOUT = 60
TRANSACTION_STARTED = b"-- Starting transaction...\n"
ER_DBACCESS_DENIED = 1044
ER_SPECIFIC_ACCESS_DENIED = 1227
ER_BAD_DB = 1049
ER_NO_SUCH_TABLE = 1146
ER_TABLE_DEF_CHANGED = 1412


@dataclass(frozen=True)
class Endpoint:
    """Where the server listens: a Unix socket or host and port."""

    socket: str | None
    host: str
    port: int

    def describe(self) -> str:
        return f"localhost ({self.socket})" if self.socket else f"{self.host}:{self.port}"

    def url(self, database: str) -> str:
        return f"mysql://localhost/{database}?socket={self.socket}" if self.socket \
            else f"mysql://{self.host}:{self.port}/{database}"


def default_socket() -> str:
    """Return the server socket the client tools would use by default."""
    configured = os.environ.get("MYSQL_UNIX_PORT")
    if configured:
        return configured
    for path in SOCKET_PATHS:
        if os.path.exists(path):
            return path
    return SOCKET_PATHS[0]




def _option_value(value: str) -> str:
    # Option-file values: double-quoted, with the escapes the option-file reader understands.
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
               .replace("\t", "\\t"))
    return f'"{escaped}"'




def _error_code(exc: BaseException) -> int | None:
    if isinstance(exc, pymysql.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None




class _DumpToolStream(ToolStream):
    """The dump tool's stdout; its failure carries the tool's own message, a missing database is NotFoundError."""

    def check(self) -> None:
        returncode = self.process.wait()
        if returncode != 0:
            message = tool_message(self.stderr_path) or f"exit status {returncode}"
            error = NotFoundError if f"Got error: {ER_BAD_DB}:" in message else ToolError
            raise error(f"{self.tool} failed: {message}")

    def transaction_started(self) -> bool:
        """Say whether the tool has started its snapshot transaction (or already ended)."""
        if self.process.poll() is not None:
            return True
        try:
            text = self.stderr_path.read_bytes()
        except OSError:
            return False
        # "Starting transaction" is printed before START TRANSACTION is sent;
        # any later line is printed after it returned.
        index = text.find(TRANSACTION_STARTED)
        return index >= 0 and len(text) > index + len(TRANSACTION_STARTED)


class _Counter(threading.Thread):
    """Count rows on the snapshot connection while the dump streams; fill ``manifest`` in place."""

    def __init__(self, conn, database: str, tables: list[tuple[str, str | None, int | None, int | None]],
                 manifest: dict):
        super().__init__(name="mysql-row-counts", daemon=True)
        self.conn = conn
        self.database = database
        self.tables = tables
        self.manifest = manifest
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            counts = {}
            with self.conn.cursor() as cur:
                for name, engine, estimate, size in self.tables:
                    counts[name] = self._count(cur, name, engine, estimate, size)
                cur.execute("COMMIT")
            self.manifest["tables"] = counts
        except BaseException as exc:  # reported at the end of the stream
            self.error = exc

    def _count(self, cur, name: str, engine: str | None, estimate: int | None, size: int | None) -> dict:
        if size is not None and size >= ROW_COUNT_EXACT_LIMIT:
            return {"rows": estimate or 0, "exact": False,
                    "note": f"estimate: table data above {ROW_COUNT_EXACT_LIMIT >> 20} MiB"}
        table = f"{mysql_grants.quote_identifier(self.database)}.{mysql_grants.quote_identifier(name)}"
        try:
            cur.execute(f"SELECT COUNT(*) FROM {table}")
        except pymysql.MySQLError as exc:
            if _error_code(exc) in (ER_NO_SUCH_TABLE, ER_TABLE_DEF_CHANGED):
                return {"rows": estimate or 0, "exact": False, "note": "table changed during the backup"}
            raise
        rows = cur.fetchone()[0]
        if engine not in SNAPSHOT_ENGINES:
            return {"rows": rows, "exact": False,
                    "note": f"{engine or 'unknown'} engine: not in the snapshot, the dump may differ"}
        return {"rows": rows, "exact": True}


def _check_counter(counter: _Counter | None) -> None:
    """Wait for the row counts of the manifest; raise ToolError if counting failed."""
    if counter is not None:
        counter.join()
        if counter.error is not None:
            raise ToolError(f"counting rows for the manifest failed: {server_message(counter.error)}")


class MysqlEngine(MysqlRestore, Engine):
    """A MySQL or MariaDB server; ``database`` is one schema on it."""

    name = "mysql"

    # Connections -----------------------------------------------------------

    def endpoint(self) -> Endpoint:
        """Return where to connect: "" or "localhost" mean the default socket, a path a socket."""
        host = self.connection.host or ""
        if host in ("", "localhost"):
            return Endpoint(socket=default_socket(), host="localhost", port=self.connection.port or DEFAULT_PORT)
        if host.startswith("/"):
            return Endpoint(socket=host, host="localhost", port=self.connection.port or DEFAULT_PORT)
        return Endpoint(socket=None, host=host, port=self.connection.port or DEFAULT_PORT)

    def _user(self) -> str:
        return self.connection.user or getpass.getuser()

    def _connect(self, database: str | None = None):
        endpoint = self.endpoint()
        kwargs = {"user": self._user(), "password": read_password(self.connection.password_file) or "",
                  "charset": "utf8mb4", "autocommit": True, "connect_timeout": 15}
        if endpoint.socket:
            kwargs["unix_socket"] = endpoint.socket
        else:
            kwargs.update(host=endpoint.host, port=endpoint.port)
        if database is not None:
            kwargs["database"] = database
        try:
            return pymysql.connect(**kwargs)
        except pymysql.MySQLError as exc:
            code = _error_code(exc)
            if code == ER_BAD_DB:
                raise NotFoundError(f"MySQL server at {endpoint.describe()}: {server_message(exc)}") from None
            raise ToolError(f"cannot connect to the MySQL server at {endpoint.describe()} as {self._user()}: "
                            f"{server_message(exc)}") from None

    def _defaults_file(self, directory: Path) -> Path:
        """Write the [client] options file the tools get as their first argument."""
        endpoint = self.endpoint()
        lines = ["[client]", f"user={_option_value(self._user())}"]
        password = read_password(self.connection.password_file)
        if password is not None:
            lines.append(f"password={_option_value(password)}")
        if endpoint.socket:
            lines += ["protocol=SOCKET", f"socket={_option_value(endpoint.socket)}"]
        else:
            lines += ["protocol=TCP", f"host={_option_value(endpoint.host)}", f"port={endpoint.port}"]
        return write_secret_file(directory, "client.cnf", "\n".join(lines) + "\n")

    def _tool_env(self, directory: Path) -> dict:
        # HOME points at the private directory so a ~/.my.cnf cannot override the target's credentials.
        return tool_env(HOME=str(directory))

    # The contract ----------------------------------------------------------

    def estimate_size(self, database: str) -> int | None:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (database,))
                if not cur.fetchone()[0]:
                    return None  # missing or not visible: the dump tool will say which
                cur.execute("SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) FROM information_schema.TABLES "
                            "WHERE TABLE_SCHEMA = %s", (database,))
                return int(cur.fetchone()[0])
        except pymysql.MySQLError as exc:
            raise ToolError(f"cannot estimate the size of {database}: {server_message(exc)}") from None
        finally:
            conn.close()

    @contextlib.contextmanager
    def dump(self, database: str, options: DumpOptions = DumpOptions()) -> Iterator[Dump]:
        if options.parallel > 1:
            raise UsageError("MySQL/MariaDB dumps are single-threaded; --parallel is for PostgreSQL")
        tool = find_tool(DUMP_TOOLS, "dump tool")
        with private_dir(self.tmp_dir, "covet-mysql-") as directory, contextlib.ExitStack() as stack:
            defaults = self._defaults_file(directory)
            control = self._connect()
            stack.callback(control.close)
            meta = self._server_meta(control)
            meta.update(dump_tool=Path(tool).name, dump_tool_version=_tool_version(tool),
                        row_count_threshold=ROW_COUNT_EXACT_LIMIT)
            extras = self._grants(control, database, meta)
            self._warn_about_self_references(control, database, meta)
            tables = self._tables(control, database)
            snapshot = self._connect()
            stack.callback(snapshot.close)
            manifest: dict = {"tables": {}, "consistent": False}
            stream = self._start_dump_consistently(tool, defaults, directory, database, control, snapshot,
                                                   meta, manifest)
            stack.callback(stream.close)
            counter = _Counter(snapshot, database, tables, manifest)
            counter.start()
            stack.callback(self._stop_counter, counter, control, snapshot)
            yield Dump(stream=EndHook(stream, lambda: _check_counter(counter)), extension="sql", meta=meta, manifest=manifest,
                       extras=extras)

    def row_counts(self, database: str, tables: tuple[str, ...] = ()) -> dict:
        conn = self._connect()
        try:
            counts = {}
            with conn.cursor() as cur:
                for name, _engine, _estimate, _size in self._tables(conn, database):
                    if tables and name not in tables:
                        continue
                    cur.execute(f"SELECT COUNT(*) FROM {mysql_grants.quote_identifier(database)}."
                                f"{mysql_grants.quote_identifier(name)}")
                    counts[name] = {"rows": cur.fetchone()[0], "exact": True}
        except pymysql.MySQLError as exc:
            raise ToolError(f"cannot count rows in {database}: {server_message(exc)}") from None
        finally:
            conn.close()
        return {"tables": counts, "consistent": True}

    # Dump steps ------------------------------------------------------------

    def _server_meta(self, conn) -> dict:
        with conn.cursor() as cur:
            cur.execute("SELECT VERSION(), @@GLOBAL.log_bin")
            version, log_bin = cur.fetchone()
        flavor = "MariaDB" if "mariadb" in version.lower() else "MySQL"
        meta = {"server_version": version, "flavor": flavor, "binlog_enabled": bool(log_bin)}
        if not log_bin:
            meta["pitr_possible"] = False
            meta["pitr_reason"] = ("the server's binary log is off (log_bin=OFF), so there is nothing to replay "
                                   "after this dump; enable log_bin for point-in-time recovery")
        return meta

    def _grants(self, conn, database: str, meta: dict) -> dict[str, bytes]:
        try:
            data, accounts = mysql_grants.collect(conn, database, meta["server_version"])
        except pymysql.MySQLError as exc:
            meta["grants_saved"] = False
            meta["grants_reason"] = f"cannot read accounts and grants: {server_message(exc)}"
            return {}
        meta["grants_saved"] = True
        meta["grant_accounts"] = accounts
        return {"grants.sql": data}

    @staticmethod
    def _warn_about_self_references(conn, database: str, meta: dict) -> None:
        """Note triggers, routines and events whose text names their own database.

        The server keeps their text as written, so after a restore under
        another name they still act on the original database.
        """
        quoted = mysql_grants.quote_identifier(database)
        names = re.compile(rf"{re.escape(quoted)}\s*\.|(?<![\w$`]){re.escape(database)}\s*\.", re.I)
        found = []
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s",
                            (database,))
                for (trigger,) in cur.fetchall():
                    cur.execute(f"SHOW CREATE TRIGGER {quoted}.{mysql_grants.quote_identifier(trigger)}")
                    if names.search(cur.fetchone()[2] or ""):
                        found.append(f"trigger {trigger}")
                cur.execute("SELECT ROUTINE_TYPE, ROUTINE_NAME, ROUTINE_DEFINITION FROM information_schema.ROUTINES "
                            "WHERE ROUTINE_SCHEMA = %s UNION ALL SELECT 'EVENT', EVENT_NAME, EVENT_DEFINITION "
                            "FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s", (database, database))
                found += [f"{kind.lower()} {name}" for kind, name, text in cur.fetchall()
                          if names.search(text or "")]
        except pymysql.MySQLError:
            return  # a hint only; the dump tool reports what it cannot read
        if found:
            meta["warnings"] = [f"{', '.join(found)} name database {quoted} in their definition: restored under "
                                "another name they still refer to the original database"]

    @staticmethod
    def _tables(conn, database: str) -> list[tuple[str, str | None, int | None, int | None]]:
        """Return (name, engine, estimated rows, data bytes) of each table of ``database``."""
        with conn.cursor() as cur:
            cur.execute("SELECT TABLE_NAME, ENGINE, TABLE_ROWS, DATA_LENGTH FROM information_schema.TABLES "
                        "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') "
                        "ORDER BY TABLE_NAME", (database,))
            return [tuple(row) for row in cur.fetchall()]

    def _start_dump_consistently(self, tool: str, defaults: Path, directory: Path, database: str, control,
                                 snapshot, meta: dict, manifest: dict) -> _DumpToolStream:
        """Under a brief global read lock: start the counting snapshot, read the coordinates, start the dump."""
        locked = self._lock(control, meta)
        locked_at = time.monotonic()
        try:
            with snapshot.cursor() as cur:
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            self._coordinates(control, snapshot, meta, locked)
            args = [tool, f"--defaults-extra-file={defaults}", "--single-transaction", "--quick", "--routines",
                    "--triggers", "--events", "--hex-blob", "--default-character-set=utf8mb4", "--no-tablespaces",
                    "--verbose", *_flavor_flags(tool), "--", database]
            stream = _DumpToolStream(args, self._tool_env(directory), Path(tool).name, directory / "dump.stderr")
            try:
                deadline = time.monotonic() + SNAPSHOT_START_TIMEOUT
                while not stream.transaction_started():
                    if time.monotonic() > deadline:
                        raise ToolError(f"{Path(tool).name} did not start its transaction within "
                                        f"{SNAPSHOT_START_TIMEOUT} s; nothing was stored")
                    time.sleep(0.002)
            except BaseException:
                stream.close()
                raise
        finally:
            if locked:
                try:
                    with control.cursor() as cur:
                        cur.execute("UNLOCK TABLES")
                except pymysql.MySQLError:
                    control.close()  # a closed session holds no lock
                meta["global_read_lock_seconds"] = round(time.monotonic() - locked_at, 4)
        manifest["consistent"] = locked
        if not locked:
            manifest["note"] = meta["consistency_note"]
        return stream

    @staticmethod
    def _lock(conn, meta: dict) -> bool:
        started = time.monotonic()
        try:
            with conn.cursor() as cur:
                cur.execute(f"SET SESSION lock_wait_timeout = {LOCK_WAIT_TIMEOUT}")
                cur.execute("FLUSH TABLES WITH READ LOCK")
        except pymysql.MySQLError as exc:
            if _error_code(exc) not in (ER_SPECIFIC_ACCESS_DENIED, ER_DBACCESS_DENIED):
                raise ToolError(f"cannot take the brief global read lock within {LOCK_WAIT_TIMEOUT} s "
                                f"(a long query or transaction holds tables?): {server_message(exc)}") from None
            meta["consistency_note"] = (
                f"no global read lock ({server_message(exc)}): the row counts and binlog coordinates are "
                "approximate; grant the backup user RELOAD for exact ones")
            meta["lock_wait_seconds"] = round(time.monotonic() - started, 4)
            return False
        meta["lock_wait_seconds"] = round(time.monotonic() - started, 4)
        return True

    @staticmethod
    def _coordinates(control, snapshot, meta: dict, locked: bool) -> None:
        if not meta["binlog_enabled"]:
            return
        try:
            with control.cursor() as cur:
                try:
                    cur.execute("SHOW MASTER STATUS")
                except pymysql.err.ProgrammingError:
                    cur.execute("SHOW BINARY LOG STATUS")  # MySQL 8.4 renamed it
                row = cur.fetchone()
        except pymysql.MySQLError as exc:
            meta["pitr_possible"] = False
            meta["pitr_reason"] = (f"cannot read the binlog position ({server_message(exc)}); grant the backup "
                                   "user BINLOG MONITOR (MariaDB) or REPLICATION CLIENT (MySQL)")
            return
        if not row:
            meta["pitr_possible"] = False
            meta["pitr_reason"] = "SHOW MASTER STATUS returned nothing although log_bin is on"
            return
        meta["binlog_file"], meta["binlog_position"] = row[0], int(row[1])
        # Under the lock nothing commits: a point-in-time recovery from this dump
        # can target any time from here on (restores/services/pitr_mysql.py). [issue 7]
        meta["binlog_read_at"] = datetime.now(timezone.utc).isoformat()
        with control.cursor() as cur:
            if meta["flavor"] == "MariaDB":
                cur.execute("SELECT @@GLOBAL.gtid_binlog_pos")
            else:
                cur.execute("SELECT @@GLOBAL.gtid_executed")
            gtid = (cur.fetchone()[0] or "").replace("\n", "")
        if gtid:
            meta["gtid"] = gtid
        if meta["flavor"] == "MariaDB":
            # The snapshot's own binlog position: equal to the one above when the lock held.
            with snapshot.cursor() as cur:
                cur.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
                status = dict(cur.fetchall())
            meta["snapshot_binlog_file"] = status.get("Binlog_snapshot_file")
            meta["snapshot_binlog_position"] = int(status.get("Binlog_snapshot_position") or 0)
        if locked:
            meta["pitr_possible"] = True
        else:
            meta["pitr_possible"] = False
            meta["pitr_reason"] = "the binlog coordinates were read without the global read lock"

    @staticmethod
    def _stop_counter(counter: _Counter, control, snapshot) -> None:
        if counter.is_alive():
            # The dump ended early (a failure elsewhere): stop a long COUNT(*)
            # from the control connection; the snapshot one belongs to the counter.
            with contextlib.suppress(Exception):
                control.kill(snapshot.thread_id())
            counter.join(timeout=30)



def _flavor_flags(tool: str) -> list[str]:
    # Oracle's mysqldump writes SET @@GLOBAL.GTID_PURGED by default, which
    # breaks a restore into any server with GTIDs of its own.
    return [] if "mariadb" in _tool_version(tool).lower() else ["--set-gtid-purged=OFF"]


_versions: dict[str, str] = {}


def _tool_version(tool: str) -> str:
    if tool not in _versions:
        try:
            done = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=30, env=tool_env())
            _versions[tool] = done.stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            _versions[tool] = "unknown"
    return _versions[tool]
