"""MySQL/MariaDB logical restores: a dump piped into the client, into a new (or, with clean, replaced) schema.

The restore half of MysqlEngine, apart from the consistent dump it mirrors.
"""

import contextlib
import subprocess
from pathlib import Path
from typing import BinaryIO

import pymysql

from covet.engines import mysql_grants
from covet.engines.base import RestoreOptions, RestoreResult
from covet.engines.mysql_dumpfile import TableFilter
from covet.engines.mysql_tools import CLIENT_TOOLS, find_tool, server_message, tool_message
from covet.engines.tools import private_dir
from covet.errors import ToolError, UsageError
from covet.streams import COPY_BUFFER


class MysqlRestore:
    """Restoring a mariadb-dump/mysqldump stream into a schema."""

    def restore(self, stream: BinaryIO, target: str, options: RestoreOptions = RestoreOptions(),
                extras: dict[str, bytes] | None = None) -> RestoreResult:
        if options.parallel > 1:
            raise UsageError("MySQL/MariaDB restores run through one client; --parallel is for PostgreSQL")
        check_schema_name(target)
        if options.with_globals and not (extras or {}).get("grants.sql"):
            raise UsageError("this backup holds no users and grants (grants.sql) to restore")
        client = find_tool(CLIENT_TOOLS, "client")
        endpoint = self.endpoint()
        conn = self._connect()
        try:
            if options.without_binlog:
                with conn.cursor() as cur:
                    cur.execute("SET SESSION sql_log_bin = 0")
            created, undo = self._prepare_schema(conn, target, options.clean, bool(options.tables))
            if options.tables:
                stream = TableFilter(stream, options.tables)
            try:
                with private_dir(self.tmp_dir, "covet-mysql-") as directory:
                    size = self._pipe_into_client(client, directory, target, stream, options.without_binlog)
                grants = mysql_grants.apply(conn, extras["grants.sql"], target) if options.with_globals else None
            except BaseException:
                if undo is not False:
                    self._undo_schema(target, undo)
                raise
        finally:
            conn.close()
        detail = {"bytes": size, "schema_created": created}
        if grants is not None:
            detail["grants"] = grants
        return RestoreResult(location=endpoint.url(target), detail=detail)

    @staticmethod
    def _prepare_schema(conn, target: str, clean: bool,
                        some_tables: bool) -> tuple[bool, tuple[str, str] | None | bool]:
        """Create the target schema (or empty it under ``clean``).

        Return (created, undo): undo is None to drop the schema after a
        failure, (charset, collation) to drop and recreate it empty, False to
        leave it (``clean`` with some tables replaces just those tables).
        """
        quoted = mysql_grants.quote_identifier(target)
        with conn.cursor() as cur:
            cur.execute("SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA "
                        "WHERE SCHEMA_NAME = %s", (target,))
            existing = cur.fetchone()
            try:
                if existing is None:
                    cur.execute(f"CREATE DATABASE {quoted} CHARACTER SET utf8mb4")
                    return True, None
                if _schema_is_empty(cur, target):
                    return False, existing
                if not clean:
                    what = "the tables" if some_tables else "it"
                    raise UsageError(f"database {target!r} already exists and is not empty; restore into a new name "
                                     f"(or pass --clean to replace {what})")
                if some_tables:
                    return False, False  # the dump's DROP TABLE IF EXISTS replaces just those tables
                cur.execute(f"DROP DATABASE {quoted}")
                cur.execute(f"CREATE DATABASE {quoted} CHARACTER SET {existing[0]} COLLATE {existing[1]}")
                return True, None
            except pymysql.MySQLError as exc:
                raise ToolError(f"cannot create database {target!r}: {server_message(exc)}") from None

    def _undo_schema(self, schema: str, recreate: tuple[str, str] | None) -> None:
        """Undo a failed restore: drop the schema it created, or empty the empty one it was given."""
        quoted = mysql_grants.quote_identifier(schema)
        # A fresh connection: the restore's may have died with the failure.
        with contextlib.suppress(Exception):
            conn = self._connect()
            try:
                with conn.cursor() as cur:
                    cur.execute(f"DROP DATABASE IF EXISTS {quoted}")
                    if recreate is not None:
                        cur.execute(f"CREATE DATABASE {quoted} CHARACTER SET {recreate[0]} COLLATE {recreate[1]}")
            finally:
                conn.close()

    def _pipe_into_client(self, client: str, directory: Path, target: str, stream: BinaryIO,
                          without_binlog: bool = False) -> int:
        defaults = self._defaults_file(directory)
        stderr_path = directory / "client.stderr"
        args = [client, f"--defaults-extra-file={defaults}", "--binary-mode", "--batch", "--no-auto-rehash",
                "--default-character-set=utf8mb4", f"--database={target}"]
        if without_binlog:
            args.append("--init-command=SET SESSION sql_log_bin=0")
        size = 0
        with open(stderr_path, "wb") as stderr:
            try:
                process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr,
                                           env=self._tool_env(directory))
            except FileNotFoundError:
                raise ToolError(f"{client} is not installed") from None
            try:
                broken = False
                while chunk := stream.read(COPY_BUFFER):
                    size += len(chunk)
                    try:
                        process.stdin.write(chunk)
                    except BrokenPipeError:
                        broken = True  # the client stopped at an error; its message says which
                        break
                if not broken:
                    with contextlib.suppress(BrokenPipeError):
                        process.stdin.close()
                returncode = process.wait()
            except BaseException:
                # Kill before closing stdin, so a damaged stream's last statements never run.
                process.kill()
                process.wait()
                raise
            finally:
                with contextlib.suppress(OSError):
                    process.stdin.close()
        if returncode != 0 or broken:
            message = tool_message(stderr_path) or f"exit status {returncode}"
            raise ToolError(f"{Path(client).name} failed restoring into {target!r}: {message}")
        return size


def check_schema_name(name: str) -> None:
    if not name:
        raise UsageError("say which database to restore into: --target-database NAME")
    if len(name) > 64 or "\x00" in name or name != name.rstrip(" "):
        raise UsageError(f"{name!r} is not a valid MySQL database name (at most 64 characters, no NUL, "
                         "no trailing space)")


def _schema_is_empty(cur, schema: str) -> bool:
    for query in ("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
                  "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s",
                  "SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s"):
        cur.execute(query, (schema,))
        if cur.fetchone()[0]:
            return False
    return True
