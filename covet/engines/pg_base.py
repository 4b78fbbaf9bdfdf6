"""PostgreSQL base backups: ``pg_basebackup`` as one tar stream, and its unpacking into a new data directory.

The backup is ``pg_basebackup --format=tar --pgdata=- --wal-method=fetch``:
one tar on stdout (streamed WAL would need a directory), holding the data
directory, the WAL written during the backup and the backup manifest. Its
start and end WAL positions and timeline come from pg_basebackup's verbose
output; a base backup becomes usable for PITR once the archive holds every
segment from its start to its end.
"""

import contextlib
import os
import re
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

import psycopg

from covet.engines.base import Dump
from covet.engines.tools import EndHook, PipeFeeder, ToolStream
from covet.errors import DamagedError, ToolError, UsageError
from covet.streams import COPY_BUFFER

START_POINT = re.compile(r"write-ahead log start point: ([0-9A-F]+/[0-9A-F]+) on timeline (\d+)")
END_POINT = re.compile(r"write-ahead log end point: ([0-9A-F]+/[0-9A-F]+)")
SERVER_FACTS_SQL = """
    SELECT current_setting('server_version'), current_setting('server_version_num')::int,
           (SELECT system_identifier::text FROM pg_control_system()),
           current_setting('wal_segment_size'), current_setting('data_directory'),
           (SELECT sum(pg_database_size(oid))::bigint FROM pg_database),
           pg_is_in_recovery(), current_setting('archive_mode')
"""


def server_size(engine) -> int | None:
    """Return the size of every database of the server: what a base backup will read, roughly."""
    with engine._connect_maintenance() as conn:
        return conn.execute("SELECT sum(pg_database_size(oid))::bigint FROM pg_database").fetchone()[0]


@contextlib.contextmanager
def base_backup(engine, label: str) -> Iterator[Dump]:
    """Yield the running base backup of ``engine``'s whole server as a Dump (a tar stream).

    ``meta`` gains end_lsn and stop_time once the stream has ended well.
    """
    with engine._session("covet-pg-base-") as (work, env), engine._connect_maintenance() as conn:
        tools = engine._tools_for(conn)
        try:
            version, version_num, system_id, segment_size, data_dir, size, standby, archive_mode = \
                conn.execute(SERVER_FACTS_SQL).fetchone()
        except psycopg.Error as exc:
            raise ToolError(f"cannot read the server's facts for a base backup: {exc}".splitlines()[0]) from None
        if archive_mode == "off":
            raise UsageError("this server does not archive WAL (archive_mode = off), so a base backup could "
                             "never be recovered; run 'manage.py setup_pitr' for this target first")
        basebackup = str(Path(tools["pg_dump"]).with_name("pg_basebackup"))
        meta = {"server_version": version, "server_version_num": version_num, "system_identifier": system_id,
                "wal_segment_size": _segment_bytes(segment_size), "source_data_directory": data_dir,
                "database_size": size, "standby": standby, "pg_basebackup_version": tools.version,
                "tools_dir": str(Path(basebackup).parent), "format": "tar", "wal_method": "fetch",
                "start_time": datetime.now(timezone.utc).isoformat()}
        stderr_path = work / "pg_basebackup.stderr"
        raw = ToolStream([basebackup, "--pgdata=-", "--format=tar", "--wal-method=fetch", "--checkpoint=fast",
                          "--verbose", "--no-password", f"--label={label}", f"--dbname={engine._conninfo(None)}"],
                         env, "pg_basebackup", stderr_path)

        def finish() -> None:
            text = stderr_path.read_text(errors="replace")
            start, end = START_POINT.search(text), END_POINT.search(text)
            if not start or not end:
                raise ToolError(f"pg_basebackup ended without reporting its WAL positions: {text[-500:]}")
            meta.update(start_lsn=start.group(1), timeline=int(start.group(2)), end_lsn=end.group(1),
                        stop_time=datetime.now(timezone.utc).isoformat())

        stream = EndHook(raw, finish)
        try:
            yield Dump(stream=stream, extension="pgbase.tar", meta=meta)
        finally:
            stream.close()


def _segment_bytes(setting: str) -> int:
    match = re.match(r"^(\d+)\s*([kMG]?B)$", setting.strip())
    if not match:
        return 16 * 1024 * 1024
    return int(match.group(1)) * {"B": 1, "kB": 1024, "MB": 1 << 20, "GB": 1 << 30}[match.group(2)]


def unpack(stream: BinaryIO, directory: Path, as_user: Sequence[str] = ()) -> int:
    """Unpack a base backup's tar stream into ``directory`` with GNU tar; return the number of files.

    ``as_user`` prefixes the tar command (e.g. runuser -u postgres --), so
    the files are created by the server's OS user and nothing can be written
    that it could not write. tar extracts in C while this process decrypts
    and decompresses the next frames (a PipeFeeder writes to tar): two cores
    at work. The stream is authenticated frame by frame before tar sees it.
    """
    with tempfile.TemporaryFile() as errors:
        try:
            tar = subprocess.Popen([*as_user, "tar", "--extract", "--file=-", f"--directory={directory}"],
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors)
        except FileNotFoundError as exc:
            raise ToolError("GNU tar is not installed; it unpacks base backups") from exc
        feeder = PipeFeeder(tar.stdin)
        fed = False
        try:
            while chunk := stream.read(COPY_BUFFER):
                if not feeder.put(chunk):
                    break  # tar stopped early: its status and message say why
            feeder.close()
            fed = True
        finally:
            if not fed:
                if tar.poll() is None:
                    tar.kill()
                feeder.abandon()
            returncode = tar.wait()
        if returncode != 0:
            errors.seek(0)
            message = errors.read()[-2000:].decode(errors="replace").strip()
            raise DamagedError(f"the base backup did not unpack: {message or f'tar exit status {returncode}'}")
    if not (directory / "PG_VERSION").exists() or not (directory / "backup_label").exists():
        raise DamagedError("the base backup has no PG_VERSION or backup_label: it is not a complete data directory")
    return sum(len(files) for _, _, files in os.walk(directory))
