"""Reading a backup back: its plaintext, authenticated frame by frame, and the stored object's checksum."""

import contextlib
import hashlib
from typing import BinaryIO, Iterator

from backups.models import Backup, JobStatus, Storage
from backups.services import keys
from backups.services.storages import storage_backend
from core.progress import CountingReader, JobTracker
from covet.errors import DamagedError, NotFoundError, UsageError
from covet.pipeline import crypto
from covet.pipeline.container import DecodingStream
from covet.pipeline.container_format import Header

class ChecksumReader:
    """Read a stored object, and at its end check the SHA-256 the catalog recorded."""

    def __init__(self, stream: BinaryIO, expected_sha256: str, backup_id: str):
        self.stream = stream
        self.expected = expected_sha256
        self.backup_id = backup_id
        self.digest = hashlib.sha256()
        self.checked = False

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        if data:
            self.digest.update(data)
        elif not self.checked:
            self.checked = True
            actual = self.digest.hexdigest()
            if self.expected and actual != self.expected:
                raise DamagedError(f"backup {self.backup_id}: stored object's SHA-256 is {actual}, "
                                   f"the catalog recorded {self.expected}; the object was altered or replaced")
        return data

    def close(self) -> None:
        self.stream.close()


@contextlib.contextmanager
def open_plaintext(backup: Backup, passphrase_file: str | None = None, key_file: str | None = None,
                   tracker: JobTracker | None = None, extra: str | None = None,
                   storage: Storage | None = None) -> Iterator[tuple[DecodingStream, ChecksumReader]]:
    """Yield a stream of the backup's plaintext, authenticated frame by frame, and its checksum reader.

    Read the plaintext to its end and then call ``finish_reading`` so the
    stored object's checksum is checked too. With a ``tracker``, progress
    counts stored bytes read. ``extra`` names one of the backup's extras to
    read instead of the main object; ``storage`` one of its copies' storages
    instead of its own.
    """
    if backup.status != JobStatus.COMPLETED:
        raise UsageError(f"backup {backup.id} is {backup.status}; only completed backups can be read")
    sources = []
    if backup.cipher != "none":
        sources = keys.decryption_sources(backup.id, backup.key_source, passphrase_file, key_file)

    def key_lookup(header: Header) -> bytes | None:
        # Decided by the catalog, not the header: an object swapped for an
        # unencrypted one is refused instead of read.
        if backup.cipher == "none":
            return None
        if header.data_key_id != backup.key_id:
            raise DamagedError(f"backup {backup.id}: the object names data key {header.data_key_id}, "
                               f"the catalog {backup.key_id}; object and catalog do not belong together")
        return crypto.unwrap_key_record(backup.key_record, sources)

    if extra is None:
        key, sha256 = backup.storage_key, backup.sha256
    elif extra in backup.extras:
        key, sha256 = backup.extras[extra]["key"], backup.extras[extra]["sha256"]
    else:
        raise NotFoundError(f"backup {backup.id} has no {extra}")
    raw = storage_backend(storage or backup.storage).get(key)
    if tracker:
        raw = CountingReader(raw, tracker)
    checked = ChecksumReader(raw, sha256, backup.id)
    try:
        yield DecodingStream(checked, key_lookup), checked
    finally:
        checked.close()


def read_extras(backup: Backup, passphrase_file: str | None = None, key_file: str | None = None,
                storage: Storage | None = None) -> dict[str, bytes]:
    """Return every extra of a backup (globals, grants), authenticated and decrypted."""
    extras = {}
    for name in backup.extras:
        with open_plaintext(backup, passphrase_file, key_file, extra=name, storage=storage) as (plain, checked):
            extras[name] = plain.read()
            finish_reading(checked)
    return extras


def finish_reading(checked: ChecksumReader) -> None:
    """Drain what is left of the stored object so its checksum is compared."""
    while checked.read(1024 * 1024):
        pass
