"""Storing WAL files for the shipper: a thread pool, one store per name at a time, and read-ahead.

PostgreSQL archives one file at a time and waits for each: alone, that
would leave storage, compression and the archive command's start-up in
series. So when it pushes pg_wal/X, the ready files after X (listed in
pg_wal/archive_status) start storing too, a bounded number at once, and
its later push of one of them is answered as soon as that store ends.
"""

import collections
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable

from django.db import close_old_connections

from archiving.services.archive import Archive
from covet.engines import pg_wal
from covet.errors import UsageError

log = logging.getLogger("archiving.shipper")

# Recently stored names, so a push that follows its read-ahead is answered
# without touching the catalog; far more than PostgreSQL can have ready.
REMEMBERED = 4096


@dataclass(frozen=True)
class Outcome:
    """What storing one file did: ``stored`` is False when the same content was already archived."""

    name: str
    stored: bool
    size: int
    stored_bytes: int
    seconds: float
    read_ahead: bool
    identity: tuple  # (device, inode, size, mtime, owner) of the file read: did a read-ahead read the pushed file?
    dropped: bool = False


@dataclass
class Counters:
    """What the heartbeat reports; changed under WalStore's lock."""

    archived: int = 0
    already_archived: int = 0
    dropped: int = 0
    last_dropped: str = ""
    read_ahead_hits: int = 0
    failures: int = 0
    ready_backlog: int | None = None
    last_archived: str = ""
    last_archived_at: float | None = None
    last_error: str = ""
    last_error_at: float | None = None
    in_flight: list[str] = field(default_factory=list)


class WalStore:
    """Store WAL files through ``archive`` on ``workers`` threads, with up to ``read_ahead`` stores begun early."""

    def __init__(self, archive: Archive, workers: int = 2, read_ahead: int = 2, queue_max: int | None = None):
        if workers < 1 or read_ahead < 0:
            raise UsageError("the shipper needs at least one worker and a read-ahead of zero or more")
        self.archive = archive
        self.read_ahead = read_ahead
        self.queue_max = queue_max
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="covet-store")
        # Reentrant: a future that is already done runs its callback (which locks) inside _submit.
        self.lock = threading.RLock()
        self.in_flight: dict[str, Future] = {}
        self.done: collections.OrderedDict[str, Outcome] = collections.OrderedDict()
        self.counters = Counters()
        self.wal_dir: Path | None = None

    def push(self, name: str, stream: BinaryIO, path: str) -> Outcome:
        """Store ``name`` (read from ``stream``, which this closes) and block until it is durably stored.

        A read-ahead of the same file (same inode, size and mtime) answers
        at once; anything else goes through Archive.store, which accepts the
        same content again and refuses other content. Raise CovetError when
        it cannot be stored: PostgreSQL is answered with an error and pushes
        the file again later. With a queue limit and a ready backlog over it,
        return an outcome marked ``dropped`` without storing anything.
        """
        _check_name(name)
        identity = _identity(stream)
        if path:
            self.wal_dir = Path(path).parent
        if self.queue_max is not None and len(self.ready_files()) * identity[2] > self.queue_max:
            stream.close()
            return self._drop(name, identity)
        with self.lock:
            known = self.done.get(name)
            future = None if known else self.in_flight.get(name)
            if known is None and future is None:
                future = self._submit(name, _given(stream), read_ahead=False)
                stream = None
        if path:
            self.start_read_ahead(self.wal_dir, owner=identity[4])
        try:
            if known is None:
                try:
                    known = future.result()
                except Exception:
                    if stream is None:
                        raise
                    # Only a read-ahead failed (storage was down, say): store PostgreSQL's own file now.
            if stream is None:
                return known
            if known is not None and known.identity == identity:
                self._count_hit()
                return known
            with self.lock:
                future = self._submit(name, _given(stream), read_ahead=False)
                stream = None
            return future.result()
        finally:
            if stream is not None:
                stream.close()

    def start_read_ahead(self, wal_dir: Path, owner: int) -> None:
        """Begin storing the oldest ready files of ``wal_dir`` that are not stored or storing yet.

        Only files owned by ``owner`` (the owner of the file pushed) are
        read: the directory comes from the peer, and the shipper may run as
        root.
        """
        self.wal_dir = wal_dir
        ready = self.ready_files()
        with self.lock:
            for name in ready:
                if len(self.in_flight) > self.read_ahead:
                    break
                if name not in self.done and name not in self.in_flight:
                    self._submit(name, _opener(wal_dir / name, owner), read_ahead=True)

    def ready_files(self) -> list[str]:
        """Return the files PostgreSQL has marked ready to archive, in the order it archives them.

        Also counts them as the backlog; empty when the status directory is
        unknown or unreadable (the shipper then simply waits to be asked).
        """
        if self.wal_dir is None:
            return []
        try:
            with os.scandir(self.wal_dir / "archive_status") as entries:
                names = [entry.name[:-6] for entry in entries if entry.name.endswith(".ready")]
        except OSError:
            return []
        names = [name for name in names if pg_wal.kind_of(name)]
        with self.lock:
            self.counters.ready_backlog = len(names)
        # History files first, then oldest first: the order PostgreSQL's archiver takes them.
        return sorted(names, key=lambda name: (pg_wal.kind_of(name) != "history", name))

    def snapshot(self) -> Counters:
        """Return a copy of the counters for the heartbeat."""
        with self.lock:
            return Counters(**{**self.counters.__dict__, "in_flight": sorted(self.in_flight)})

    def close(self) -> None:
        """Finish what is being stored, then stop the threads."""
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, name: str, opener: Callable[[], BinaryIO], read_ahead: bool) -> Future:
        future = self.pool.submit(self._store, name, opener, read_ahead)
        self.in_flight[name] = future
        future.add_done_callback(lambda done: self._finished(name, done, read_ahead))
        return future

    def _store(self, name: str, opener: Callable[[], BinaryIO], read_ahead: bool) -> Outcome:
        close_old_connections()
        started = time.monotonic()
        try:
            stream = opener()
        except OSError as exc:
            raise UsageError(f"cannot read {name}: {exc.strerror or exc}") from exc
        with stream:
            identity = _identity(stream)
            row, stored = self.archive.store(name, stream, pg_wal.timeline_of(name), size_hint=identity[2])
        outcome = Outcome(name, stored, row.size, row.stored_bytes, time.monotonic() - started, read_ahead, identity)
        log.info("%s %s (%.1f MiB -> %.1f MiB) in %.2fs%s", "archived" if stored else "already archived", name,
                 row.size / 2**20, row.stored_bytes / 2**20, outcome.seconds, ", read ahead" if read_ahead else "")
        return outcome

    def _finished(self, name: str, future: Future, read_ahead: bool) -> None:
        with self.lock:
            if self.in_flight.get(name) is future:
                del self.in_flight[name]
            if future.cancelled():
                return
            error = future.exception()
            if error is None:
                outcome = future.result()
                self.done[name] = outcome
                while len(self.done) > REMEMBERED:
                    self.done.popitem(last=False)
                if outcome.stored:
                    self.counters.archived += 1
                else:
                    self.counters.already_archived += 1
                self.counters.last_archived, self.counters.last_archived_at = name, time.time()
                return
            if read_ahead:
                # Not a failure yet: PostgreSQL's own push of it will try again (or the file was archived meanwhile).
                log.debug("read-ahead of %s failed: %s", name, error)
                return
            self.counters.failures += 1
            self.counters.last_error, self.counters.last_error_at = f"{name}: {error}", time.time()
        log.warning("cannot archive %s: %s", name, error)

    def _drop(self, name: str, identity: tuple) -> Outcome:
        """Answer a push as done without storing it: the queue limit chose PostgreSQL's disk over PITR."""
        with self.lock:
            self.counters.dropped += 1
            self.counters.last_dropped = name
        log.error("dropped %s without archiving it: PostgreSQL's ready backlog exceeds --queue-max; point-in-time "
                  "recovery is broken from here until the next base backup", name)
        return Outcome(name, False, identity[2], 0, 0.0, False, identity, dropped=True)

    def _count_hit(self) -> None:
        with self.lock:
            self.counters.read_ahead_hits += 1


def _identity(stream: BinaryIO) -> tuple:
    info = os.fstat(stream.fileno())
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_uid


def _given(stream: BinaryIO) -> Callable[[], BinaryIO]:
    return lambda: stream


def _opener(path: Path, owner: int) -> Callable[[], BinaryIO]:
    def opener() -> BinaryIO:
        stream = open(path, "rb")
        if os.fstat(stream.fileno()).st_uid != owner:
            stream.close()
            raise UsageError(f"{path} is not owned by the user whose file was pushed; not read ahead")
        return stream

    return opener


def _check_name(name: str) -> None:
    if pg_wal.kind_of(name) is None:
        raise UsageError(f"{name!r} is not a PostgreSQL WAL file name (segment, .partial, .history or .backup); "
                         "archive_command must pass %p")
