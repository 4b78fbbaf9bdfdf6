"""Progress, heartbeat and cancellation for a running job row.

A JobTracker counts bytes as the pipeline reads them and, from a background
thread, writes bytes done, ETA and a heartbeat onto the row every few
seconds; it also reads the row's cancel flag, so a cancel from the CLI, API or
page stops the job at its next read. The housekeeper treats a heartbeat older
than COVET_HEARTBEAT_TIMEOUT as a dead worker.
"""

import threading
import time
from typing import BinaryIO, Callable

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from covet.errors import CancelledError

ProgressCallback = Callable[[int, int | None], None]


class JobTracker:
    """Track one running row (Backup, RestoreRequest or VerificationRun)."""

    def __init__(self, row, bytes_expected: int | None = None, on_progress: ProgressCallback | None = None):
        self.row = row
        self.model = type(row)
        self.bytes_done = 0
        self.bytes_expected = bytes_expected
        self.on_progress = on_progress
        self.cancelled = threading.Event()
        self._count_lock = threading.Lock()  # several threads may count (WAL fetched while a base backup unpacks)
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{row.pk}", daemon=True)

    def __enter__(self) -> "JobTracker":
        self._write()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def add(self, nbytes: int) -> None:
        """Count ``nbytes`` more processed; raise CancelledError once a cancel was requested."""
        with self._count_lock:
            self.bytes_done += nbytes
        if self.on_progress:
            self.on_progress(self.bytes_done, self.bytes_expected)
        if self.cancelled.is_set():
            raise CancelledError(f"{self.model._meta.verbose_name} {self.row.pk} was cancelled")

    def eta_seconds(self) -> float | None:
        """Return the estimated seconds left, from the rate so far."""
        elapsed = time.monotonic() - self._started
        if not self.bytes_expected or not self.bytes_done or elapsed <= 0:
            return None
        left = max(0, self.bytes_expected - self.bytes_done)
        return round(left / (self.bytes_done / elapsed), 1)

    def _beat(self) -> None:
        try:
            while not self._stop.wait(settings.COVET_HEARTBEAT_INTERVAL):
                self._write()
        finally:
            connection.close()

    def _write(self) -> None:
        close_old_connections()
        expected = self.bytes_expected
        if expected is not None and self.bytes_done > expected:
            expected = self.bytes_done  # the estimate was low; never show more than 100 %
        self.model.objects.filter(pk=self.row.pk).update(
            bytes_done=self.bytes_done,
            bytes_expected=expected,
            eta_seconds=self.eta_seconds(),
            heartbeat_at=timezone.now(),
        )
        if self.model.objects.filter(pk=self.row.pk, cancel_requested=True).exists():
            self.cancelled.set()


class CountingReader:
    """A readable stream that reports every byte read to a JobTracker."""

    def __init__(self, stream: BinaryIO, tracker: JobTracker):
        self.stream = stream
        self.tracker = tracker

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.tracker.add(len(data))
        return data

    def readinto(self, buffer) -> int:
        count = self.stream.readinto(buffer)
        self.tracker.add(count or 0)
        return count

    def close(self) -> None:
        self.stream.close()
