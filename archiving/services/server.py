"""The shipper: one long-running process per target that archive_command hands WAL files to.

It listens on a Unix socket (directory 0755, socket 0666, every peer checked
with SO_PEERCRED: root, the shipper's own user and the target's OS user
may push), receives a request and the open file descriptor of the file
(so it can read it whatever user it runs as), stores the file through
``WalStore`` and answers ``ok`` only once it is durably stored. A loop of
small steps, as healthchecks' sendalerts: accept work, write the heartbeat,
end when ``stop`` is set (SIGTERM/SIGINT).
"""

import logging
import os
import pwd
import select
import socket
import stat
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from django.db import DatabaseError

from covet.errors import CovetError, UsageError
from backups.models import DatabaseTarget
from archiving import covet_wal
from archiving.services.store import WalStore

log = logging.getLogger("archiving.shipper")

# Connections waiting for their store; PostgreSQL's archiver sends one at a time.
CONNECTIONS = 16
REQUEST_TIMEOUT = 10.0  # seconds for a peer to send its request line
POLL = 0.5  # seconds between looks at the stop flag
MAX_FDS = 4


def _peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    """Return (pid, uid, gid) of the process at the other end of a Unix socket."""
    return struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))


class Shipper:
    """Serve one target's archive_command on ``path``, storing through ``store``."""

    def __init__(self, target: DatabaseTarget, store: WalStore, path: Path, os_user: str,
                 status_interval: float = 5.0):
        self.target = target
        self.store = store
        self.path = path
        self.allowed_uids = {0, os.getuid(), _uid_of(os_user)}
        self.os_user = os_user
        self.status_interval = status_interval
        self.stop = threading.Event()
        self.listener: socket.socket | None = None
        self.connections = ThreadPoolExecutor(CONNECTIONS, thread_name_prefix="covet-conn")
        self.started_at = _now()
        self.next_status = 0.0

    def open(self) -> None:
        """Create the socket (refusing when another shipper answers on it) and start listening."""
        directory = self.path.parent
        if not directory.is_dir():
            directory.mkdir(parents=True, mode=0o755)
            directory.chmod(0o755)  # mkdir's mode is cut by the umask
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise UsageError(f"{self.path} exists and is not a socket; remove it or choose another --socket-dir")
            if _answers(self.path):
                raise UsageError(f"another shipper is already listening on {self.path}; stop it first")
            self.path.unlink()  # left by a shipper that was killed
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        os.chmod(self.path, 0o666)  # anyone may connect; SO_PEERCRED decides who is served
        listener.listen(64)
        self.listener = listener
        log.info("shipper for target %s listening on %s (pushes accepted from uids %s)", self.target.name,
                 self.path, ", ".join(str(uid) for uid in sorted(self.allowed_uids)))

    def serve(self) -> None:
        """Accept and answer pushes until ``stop`` is set; write the heartbeat every few seconds."""
        while not self.stop.is_set():
            self.accept_one()
            self.write_status_if_due()

    def accept_one(self) -> bool:
        """Hand one waiting connection to a thread; return whether there was one."""
        ready, _, _ = select.select([self.listener], [], [], POLL)
        if not ready:
            return False
        conn, _ = self.listener.accept()
        self.connections.submit(self.answer, conn)
        return True

    def answer(self, conn: socket.socket) -> None:
        """Read one request from ``conn``, do it and reply; never raise (a bad peer must not stop the shipper)."""
        fds: list[int] = []
        try:
            with conn:
                _, uid, _ = _peer_credentials(conn)
                if uid not in self.allowed_uids:
                    log.warning("refused a connection from uid %d on %s", uid, self.path)
                    conn.sendall(covet_wal.encode_reply(False, (
                        f"uid {uid} may not push to the shipper of target {self.target.name}; only root, "
                        f"the shipper's own user and the OS user {self.os_user} may"), covet_wal.EXIT_FAILED))
                    return
                line, fds = self._receive(conn)
                conn.sendall(self._reply(line, fds))
        except Exception as exc:  # noqa: BLE001 - one failed conversation must not end the loop
            log.warning("a conversation on %s failed: %s", self.path, exc)
        finally:
            for fd in fds:
                _close_quietly(fd)

    def _receive(self, conn: socket.socket) -> tuple[bytes, list[int]]:
        conn.settimeout(REQUEST_TIMEOUT)
        data, fds, _, _ = socket.recv_fds(conn, covet_wal.MAX_MESSAGE, MAX_FDS)
        while data and not data.endswith(b"\n") and len(data) < covet_wal.MAX_MESSAGE:
            more = conn.recv(covet_wal.MAX_MESSAGE)
            if not more:
                break
            data += more
        conn.settimeout(None)  # a store may take as long as storage needs; the entry point has its own timeout
        return data, fds

    def _reply(self, line: bytes, fds: list[int]) -> bytes:
        """Do what a request line asks; the push's descriptor is consumed (closed) here."""
        try:
            op, target, name, path = covet_wal.parse_request(line)
        except (ValueError, UnicodeDecodeError):
            return covet_wal.encode_reply(False, "not a covet-wal request; is the entry point of the same version?",
                                          covet_wal.EXIT_USAGE)
        if target != self.target.name:
            return covet_wal.encode_reply(False, (
                f"this shipper serves target {self.target.name}, not {target}: the archive_command's --target "
                "and --socket do not match; run setup_pitr again"), covet_wal.EXIT_USAGE)
        if op == "ping":
            return covet_wal.encode_reply(True, f"shipper of {self.target.name} pid {os.getpid()}")
        if op != "push" or len(fds) != 1:
            return covet_wal.encode_reply(False, "a push needs exactly one open file", covet_wal.EXIT_USAGE)
        stream = os.fdopen(fds.pop(), "rb")
        try:
            outcome = self.store.push(name, stream, path)
        except CovetError as exc:
            return covet_wal.encode_reply(False, f"{name} not archived: {exc}", exc.exit_code)
        except Exception as exc:  # noqa: BLE001 - PostgreSQL must get an answer and retry
            log.exception("storing %s failed", name)
            return covet_wal.encode_reply(False, f"{name} not archived: {exc}", covet_wal.EXIT_FAILED)
        if outcome.dropped:
            return covet_wal.encode_reply(True, "dropped (queue limit)")
        return covet_wal.encode_reply(True, "stored" if outcome.stored else "already archived")

    def write_status_if_due(self, final: bool = False) -> None:
        """Record heartbeat, backlog and last error in target.archiver_status (this loop is its only writer)."""
        if not final and time.monotonic() < self.next_status:
            return
        self.next_status = time.monotonic() + self.status_interval
        self.store.ready_files()  # refreshes the backlog count
        counters = self.store.snapshot()
        status = {
            "kind": "wal-shipper", "pid": os.getpid(), "host": os.uname().nodename, "socket": str(self.path),
            "started_at": self.started_at, "heartbeat_at": _now(), "running": not final,
            "ready_backlog": counters.ready_backlog, "in_flight": counters.in_flight,
            "archived": counters.archived, "already_archived": counters.already_archived,
            "read_ahead_hits": counters.read_ahead_hits, "failures": counters.failures,
            "dropped": counters.dropped, "last_dropped": counters.last_dropped,
            "last_archived": counters.last_archived, "last_archived_at": _iso(counters.last_archived_at),
            "last_error": counters.last_error, "last_error_at": _iso(counters.last_error_at),
        }
        try:
            DatabaseTarget.objects.filter(pk=self.target.pk).update(archiver_status=status)
        except DatabaseError as exc:  # the heartbeat is news, not work: keep serving pushes
            log.warning("cannot record the shipper's status in the catalog: %s", exc)

    def close(self) -> None:
        """Stop listening, remove the socket, let the stores under way finish, write the last status."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            self.path.unlink(missing_ok=True)
        self.connections.shutdown(wait=True)
        self.store.close()
        self.write_status_if_due(final=True)
        log.info("shipper for target %s stopped", self.target.name)


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _uid_of(user: str) -> int:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise UsageError(f"the target's OS user {user!r} does not exist on this host; set the target's os_user "
                         "to the user PostgreSQL runs as") from None


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _iso(stamp: float | None) -> str | None:
    return datetime.fromtimestamp(stamp, timezone.utc).isoformat(timespec="seconds") if stamp else None
