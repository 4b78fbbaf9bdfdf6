"""PostgreSQL logical restores: pg_restore into a new (or, with clean, an emptied) database, globals first.

The restore half of PostgresEngine: it lives apart from the dump because the
two share only the connection and tool helpers of covet.engines.postgres.
"""

import contextlib
import logging
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

import psycopg
from psycopg import sql

from covet.engines import pg_toc
from covet.engines.base import RestoreOptions, RestoreResult
from covet.engines.pg_tools import (GLOBALS, MAINTENANCE_DATABASES, MAX_NAME_BYTES, ROLE_EXISTS, ROLE_MISSING,
                                    SAFE_MEMBER, SYSTEM_SCHEMAS_SQL, TAR_BLOCK, PgTools, one_line,
                                    write_private_bytes)
from covet.engines.tools import stderr_tail
from covet.errors import CovetError, DamagedError, ToolError, UsageError
from covet.streams import COPY_BUFFER, PrefixedStream, copy_stream, drain

log = logging.getLogger(__name__)


class PostgresRestore:
    """Restoring a pg_dump archive (custom format, or a directory format's tar) into a database."""

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
                raise ToolError(f"cannot create PostgreSQL database {target!r}: {one_line(exc)}") from None

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
        path = write_private_bytes(work / GLOBALS, globals_sql)  # holds password hashes: 0600, removed with work
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
        stream = PrefixedStream(head, stream)
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
                copy_stream(stream, out)
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
        drain(stream)  # to the end, so the stored object's checksum is checked

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
                drain(stream)  # pg_restore needed no more; read on so the stored object's checksum is checked
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            with contextlib.suppress(OSError):
                process.stdin.close()
