"""The spool a PostgreSQL recovery replays from: archived WAL, staged and then decoded, beside the data directory.

Filled in two steps so that the server can start before the last segment is
decoded, yet nothing starts when a file is missing or damaged:

1. ``stage`` copies every planned file's stored object in (``NAME.stored``),
   checks its stored SHA-256 against the catalog and authenticates its header
   with the archive key: a missing, truncated or altered object, or one the
   key does not open, is named before any server starts. This is the cheap part
   (no decryption or decompression) and runs beside the base backup's unpack.
2. ``decode`` authenticates, decrypts and decompresses each staged file into
   ``NAME`` in the order recovery asks for them, removing ``NAME.stored``;
   either all at once (the operator starts the server later) or in the
   background while the started server replays: the restore_command
   (``covet_wal.py fetch``) waits for a staged file, and stops recovery
   (exit 126, FATAL) when one fails to decode or this process is gone, so a
   recovery never ends early on a file it was meant to have.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

from archiving.services.archive import Archive
from covet.errors import CovetError, DamagedError
from backups.models import ArchivedLog
from archiving import covet_wal


class WalSpool:
    """The WAL files ``rows`` (in the order recovery reads them) of ``store``, spooled in ``path``."""

    def __init__(self, path: Path, store: Archive, rows: list[ArchivedLog]):
        self.path = path
        self.store = store
        self.rows = rows
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: CovetError | None = None

    def _staged(self, row: ArchivedLog) -> Path:
        return self.path / (row.name + covet_wal.SPOOL_STAGED)

    def stage(self, on_file: Callable[[int], None]) -> None:
        """Copy every stored object in, checked (see Archive.stage); ``on_file(stored bytes)`` after each.

        Stops early (quietly) once ``stop`` was called. Raise DamagedError
        naming the first file that is missing or altered.
        """
        for row in self.rows:
            if self._stop.is_set():
                return
            self.store.stage(row, self._staged(row))
            on_file(row.stored_bytes)

    def decode_all(self) -> None:
        """Decode every staged file now; raise DamagedError naming the first that fails."""
        for row in self.rows:
            self._decode(row)

    def start_decoding(self) -> None:
        """Decode in the background, for a server replaying from the spool meanwhile (see ``check``)."""
        (self.path / covet_wal.SPOOL_DECODER).write_text(str(os.getpid()))
        self._thread = threading.Thread(target=self._decode_in_background, name="covet-wal-decode", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raise the error that stopped background decoding, if one did."""
        if self._error is not None:
            raise self._error

    def finish(self) -> None:
        """Wait until background decoding has ended; raise its error, if any."""
        if self._thread is not None:
            self._thread.join()
        self.check()

    def stop(self) -> None:
        """Stop staging or background decoding after the file in hand (the rest is not needed)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _decode_in_background(self) -> None:
        try:
            for row in self.rows:
                if self._stop.is_set():
                    return
                self._decode(row)
        except CovetError as exc:
            self._error = exc
        except Exception as exc:  # unexpected, yet the restore must fail with it rather than hang
            self._error = DamagedError(f"decoding the spooled WAL failed: {type(exc).__name__}: {exc}")

    def _decode(self, row: ArchivedLog) -> None:
        staged, decoded = self._staged(row), self.path / (row.name + ".decoded")
        try:
            self.store.decode_staged(row, staged, decoded)
            self._give_to_owner(decoded)
            decoded.rename(self.path / row.name)
        except Exception as exc:
            decoded.unlink(missing_ok=True)
            # The restore_command reads this and stops recovery instead of waiting.
            (self.path / (row.name + covet_wal.SPOOL_FAILED)).write_text(str(exc) or type(exc).__name__)
            raise
        # Only after NAME exists: covet_wal.fetch relies on this order.
        staged.unlink()

    def _give_to_owner(self, path: Path) -> None:
        # The spool belongs to the server's OS user by now; a file this
        # process (root) writes must be readable by its restore_command.
        owner = self.path.stat()
        if os.geteuid() == 0 and owner.st_uid != 0:
            os.chown(path, owner.st_uid, owner.st_gid)
