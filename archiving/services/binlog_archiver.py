"""The binlog archiver of one MySQL/MariaDB target: pull binlogs as a replication client, ship them to the archive.

``mariadb-binlog --read-from-remote-server --raw --stop-never`` copies the
server's binlogs, byte for byte, into a private spool directory as the
server writes them. The loop here ships what it finds there:

- a file is complete once a newer file appears (the server rotated) or it
  ends with a rotate or stop event; it is archived with its positions, event
  times and GTID range, then removed from the spool;
- the live file is archived as a *partial* at least every
  ``archive_timeout`` seconds (up to its last whole event), replaced by the
  completed file later, so the archive lags the server by a bounded time
  without changing the server's rotation settings.

Restarts lose and duplicate nothing: the catalog says which files are
complete, and the reader restarts at the first file after them (rewriting
that spool file from its start). A file the server purged before it was
archived is reported as a gap in ``archiver_status["purged"]``. Storing is
idempotent (Archive.store), so a file shipped twice is recorded once.
"""

import contextlib
import fcntl
import logging
import os
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pymysql
from django.conf import settings

from archiving.services import binlog_window
from archiving.services.archive import Archive
from covet.engines import mysql_tools
from covet.engines.tools import private_dir, stderr_tail
from covet.errors import BusyError, CovetError, ToolError
from backups.models import DatabaseTarget
from covet.engines.mysql_binlog import BinlogFile, BinlogFormatError
from backups.services.targets import target_engine

log = logging.getLogger(__name__)

BINLOG_TOOLS = ("mariadb-binlog", "mysqlbinlog")
# The archiver registers as a replica with this server id plus the target's
# id: it must differ from every server and replica of the topology, or the
# server drops one of the two connections. 0xFA000000 is far above the small
# ids people give servers.
REPLICA_ID_BASE = 0xFA000000
POLL_SECONDS = 0.25
STATUS_SECONDS = 5.0
# After the reader fails (server down or restarting), wait this long before
# reconnecting, doubling up to the maximum.
RETRY_MIN_SECONDS = 0.5
RETRY_MAX_SECONDS = 15.0


def spool_root() -> Path:
    """Return the directory holding every target's binlog spool."""
    return Path(settings.COVET_TMP_DIR) / "binlog-spool"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class _BoundedReader:
    """The first ``limit`` bytes of a file: a live binlog up to its last whole event."""

    def __init__(self, handle, limit: int):
        self.handle = handle
        self.left = limit

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        data = self.handle.read(self.left if size is None or size < 0 else min(size, self.left))
        self.left -= len(data)
        return data


class BinlogArchiver:
    """Archive one target's binlogs; ``run`` loops until ``stop`` (or once, for cron and tests)."""

    def __init__(self, target: DatabaseTarget, archive_timeout: float = 60, spool_dir: Path | None = None,
                 passphrase_file: str | None = None, key_file: str | None = None):
        self.target = target
        self.archive = Archive(target, passphrase_file, key_file)
        self.archive_timeout = archive_timeout
        self.spool = Path(spool_dir) if spool_dir else spool_root() / target.name
        self.engine = target_engine(target, str(self.spool.parent))
        self.tool = mysql_tools.find_tool(BINLOG_TOOLS, "binlog tool")
        self.replica_id = REPLICA_ID_BASE + target.pk
        self.process: subprocess.Popen | None = None
        self.stopping = False
        self.retry_at = 0.0
        self.retry_delay = RETRY_MIN_SECONDS
        self.next_partial = time.monotonic() + archive_timeout
        self.next_status = 0.0
        self.started_at = _now()
        self.shipped: list[str] = []
        self.partial: str | None = None
        self.status = dict(target.archiver_status)
        self.status.update(kind="binlog-archiver", pid=os.getpid(), host=os.uname().nodename,
                           started_at=self.started_at, last_error=None, running=True)
        self._private: Path | None = None

    # The loop -----------------------------------------------------------------

    def run(self, once: bool = False) -> dict:
        """Archive until ``stop`` is called; with ``once`` copy up to the server's current end, ship, return.

        Return what was archived in this run (names of completed files, the
        partial live file). Raise BusyError when another archiver of the
        target holds the spool, ToolError when ``once`` cannot read the server.
        """
        self.spool.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._spool_lock(), private_dir(str(self.spool.parent), f".covet-{self.target.name}-") as private:
            self._private = private
            try:
                if once:
                    self._run_once()
                else:
                    self._run_forever()
            finally:
                self._stop_reader()
                self.status["running"] = False
                self._write_status(force=True)
        return {"archived": self.shipped, "partial": self.partial, "purged": self.status.get("purged", [])}

    def stop(self) -> None:
        """Ask the loop to end: it stops the reader, ships the live file as a partial and returns."""
        self.stopping = True

    def _run_forever(self) -> None:
        while not self.stopping:
            worked = self.ship_completed()
            worked = self.start_reader_if_needed() or worked
            worked = self.ship_partial_if_due() or worked
            self._write_status()
            if not worked:
                time.sleep(POLL_SECONDS)
        self._stop_reader()
        self.ship_completed()
        self.ship_partial_if_due(force=True)

    def _run_once(self) -> None:
        if not self.start_reader_if_needed(once=True):
            raise ToolError(f"cannot read binlogs from target {self.target.name}: {self.status.get('last_error')}")
        returncode = self.process.wait()
        self.ship_completed()
        self.ship_partial_if_due(force=True)
        if returncode != 0:
            raise ToolError(f"{Path(self.tool).name} failed reading from target {self.target.name}: "
                            f"{stderr_tail(self._private / 'reader.stderr') or f'exit status {returncode}'}")

    @contextlib.contextmanager
    def _spool_lock(self):
        handle = open(self.spool / ".lock", "w")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BusyError(f"another binlog archiver of target {self.target.name} is running (it holds "
                                f"{self.spool / '.lock'}); run only one per target") from None
            yield
        finally:
            handle.close()

    # The reader (mariadb-binlog) ----------------------------------------------

    def start_reader_if_needed(self, once: bool = False) -> bool:
        """Start the replication reader when it is not running; return True when it was started."""
        if self.process is not None:
            returncode = self.process.poll()
            if returncode is None:
                return False
            self.process = None
            if not self.stopping:
                message = stderr_tail(self._private / "reader.stderr") or f"exit status {returncode}"
                self._error(f"{Path(self.tool).name} stopped: {message}; reconnecting")
        if time.monotonic() < self.retry_at:
            return False
        try:
            first = self._first_file_to_read()
        except CovetError as exc:
            self._error(str(exc))
            return False
        args = [self.tool, f"--defaults-extra-file={self._defaults_file()}", "--read-from-remote-server", "--raw",
                f"--result-file={self.spool}/", first]
        args[-1:-1] = ["--to-last-log"] if once else ["--stop-never",
                                                      f"--stop-never-slave-server-id={self.replica_id}"]
        with open(self._private / "reader.stderr", "wb") as stderr:
            self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=stderr, env=self.engine._tool_env(self._private))
        self.status.update(reading_from=first, reader_started_at=_now())
        log.info("reading binlogs of %s from %s", self.target.name, first)
        return True

    def _defaults_file(self) -> Path:
        path = self._private / "client.cnf"
        if not path.exists():
            self.engine._defaults_file(self._private)
        return path

    def _first_file_to_read(self) -> str:
        """Return the first binlog not yet archived complete; record files purged before they were archived."""
        server = self._server_files()
        if not server:
            raise ToolError(f"target {self.target.name} lists no binary logs: is log_bin on? "
                            f"(manage.py setup_pitr --target {self.target.name} checks)")
        base = binlog_window.split_name(server[0][0])[0]
        numbers = [binlog_window.split_name(name)[1] for name, _ in server]
        archived = binlog_window.archived(self.target)
        complete = [number for number, row in archived.items() if not row.partial]
        partial = [number for number, row in archived.items() if row.partial]
        if complete:
            wanted = max(complete) + 1
        elif partial:
            wanted = min(partial)
        else:
            wanted = numbers[0]  # a new archive: everything the server still has
        if wanted < numbers[0]:
            gap = {"first_missing": binlog_window.file_name(base, wanted),
                   "last_missing": binlog_window.file_name(base, numbers[0] - 1)}
            purged = self.status.setdefault("purged", [])
            if gap not in purged:
                purged.append(gap)
                log.error("binlogs %s to %s of %s were purged on the server before they were archived",
                          gap["first_missing"], gap["last_missing"], self.target.name)
            wanted = numbers[0]
        wanted = min(wanted, numbers[-1])
        self._clear_spool()
        return binlog_window.file_name(base, wanted)

    def _server_files(self) -> list[tuple[str, int]]:
        conn = self.engine._connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW BINARY LOGS")
                return [(row[0], int(row[1])) for row in cur.fetchall()]
        except pymysql.MySQLError as exc:
            raise ToolError(f"cannot list the binary logs of target {self.target.name}: "
                            f"{mysql_tools.server_message(exc)}; grant the archiver's user BINLOG MONITOR (MariaDB) "
                            "or REPLICATION CLIENT (MySQL)") from None
        finally:
            conn.close()

    def _clear_spool(self) -> None:
        # What is left is re-read from the server from the first file the
        # catalog lacks; completed files were shipped before the reader restarts.
        for path, _ in self._spooled():
            path.unlink(missing_ok=True)

    def _stop_reader(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    # Shipping -----------------------------------------------------------------

    def _spooled(self) -> list[tuple[Path, int]]:
        found = []
        for path in self.spool.iterdir():
            if path.name.startswith("."):
                continue
            try:
                found.append((path, binlog_window.split_name(path.name)[1]))
            except ValueError:
                continue
        return sorted(found, key=lambda item: item[1])

    def ship_completed(self) -> bool:
        """Archive every completed file in the spool and remove it; return True when one was shipped."""
        files = self._spooled()
        shipped = False
        for index, (path, _) in enumerate(files):
            newer = index + 1 < len(files)
            try:
                with BinlogFile(path) as binlog:
                    summary = binlog.summary()
            except (BinlogFormatError, OSError, ValueError) as exc:
                if newer:
                    self._error(f"{path.name} in the spool cannot be read ({exc}); it is read again from the server")
                    self._restart_reader()
                return shipped
            if not (newer or summary.closed):
                break
            if self._ship(path, summary, complete=True):
                path.unlink(missing_ok=True)
                shipped = True
            else:
                return shipped
        return shipped

    def ship_partial_if_due(self, force: bool = False) -> bool:
        """Archive the live file as a partial when ``archive_timeout`` has passed (or ``force``) and it grew."""
        if not force and time.monotonic() < self.next_partial:
            return False
        self.next_partial = time.monotonic() + self.archive_timeout
        files = self._spooled()
        if not files:
            return False
        path = files[-1][0]
        try:
            with BinlogFile(path) as binlog:
                summary = binlog.summary()
        except (BinlogFormatError, OSError, ValueError):
            return False  # only its first bytes are written yet
        if summary.closed:
            return self.ship_completed()
        row = self.archive.existing(path.name)
        if row is not None and (not row.partial or row.end_position == summary.end_position):
            return False
        return self._ship(path, summary, complete=False)

    def _ship(self, path: Path, summary, complete: bool) -> bool:
        size = summary.end_position
        try:
            with open(path, "rb") as handle:
                self.archive.store(path.name, _BoundedReader(handle, size), size_hint=size, replace_partial=True,
                                   partial=not complete, start_position=summary.start_position,
                                   end_position=summary.end_position, first_event_at=summary.first_event_at,
                                   last_event_at=summary.last_event_at, gtid_range=summary.gtid_range)
        except CovetError as exc:
            self._error(f"archiving {path.name} failed: {exc}")
            return False
        if complete:
            self.shipped.append(path.name)
            self.status.update(last_archived=path.name, last_archived_at=_now())
        else:
            self.partial = path.name
            self.status.update(last_partial=path.name, last_partial_position=size, last_partial_at=_now())
        if summary.last_event_at:
            self.status["newest_event_at"] = summary.last_event_at.isoformat()
        self.retry_delay = RETRY_MIN_SECONDS
        self._write_status(force=True)
        return True

    def _restart_reader(self) -> None:
        self._stop_reader()
        self.retry_at = 0.0

    # Status -------------------------------------------------------------------

    def _error(self, message: str) -> None:
        log.warning("binlog archiver of %s: %s", self.target.name, message)
        self.status.update(last_error=message, last_error_at=_now())
        self.retry_at = time.monotonic() + self.retry_delay
        self.retry_delay = min(RETRY_MAX_SECONDS, self.retry_delay * 2)
        self._write_status(force=True)

    def _write_status(self, force: bool = False) -> None:
        """Record heartbeat, backlog and last error in target.archiver_status (this loop is its only writer)."""
        if not force and time.monotonic() < self.next_status:
            return
        self.next_status = time.monotonic() + STATUS_SECONDS
        self.status["heartbeat_at"] = _now()
        spooled = self._spooled() if self.spool.exists() else []
        self.status["spooled_files"] = [path.name for path, _ in spooled]
        with contextlib.suppress(OSError):
            self.status["backlog_bytes"] = self._backlog_bytes(spooled)
        DatabaseTarget.objects.filter(pk=self.target.pk).update(archiver_status=self.status)

    def _backlog_bytes(self, spooled: list[tuple[Path, int]]) -> int:
        # Bytes read from the server but not yet in the archive: what a loss of
        # this host now would cost. (Bytes not yet read show as the reader's lag.)
        backlog = 0
        for path, _ in spooled:
            row = self.archive.existing(path.name)
            backlog += max(0, path.stat().st_size - ((row.end_position or 0) if row else 0))
        return backlog
