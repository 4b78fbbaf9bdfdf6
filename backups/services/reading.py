"""Reading a backup back: its plaintext, authenticated frame by frame, and the stored object's checksum."""

import contextlib
from typing import BinaryIO, Iterator

from backups.models import Backup, JobStatus, Storage
from backups.services import keys
from backups.services.storages import storage_backend
from core.progress import CountingReader, JobTracker
from covet.errors import DamagedError, NotFoundError, UsageError
from covet.pipeline import crypto
from covet.pipeline.container import DecodingStream
from covet.pipeline.container_format import Header
from covet.streams import CheckedReader


def checked_object(stream: BinaryIO, expected_sha256: str, backup_id: str) -> CheckedReader:
    """Wrap a stored object so that, read to its end, it is checked against the SHA-256 the catalog recorded."""
    return CheckedReader(stream, expected_sha256, lambda actual: DamagedError(
        f"backup {backup_id}: stored object's SHA-256 is {actual}, the catalog recorded {expected_sha256}; "
        "the object was altered or replaced"))


@contextlib.contextmanager
def open_plaintext(backup: Backup, passphrase_file: str | None = None, key_file: str | None = None,
                   tracker: JobTracker | None = None, extra: str | None = None,
                   storage: Storage | None = None) -> Iterator[tuple[DecodingStream, CheckedReader]]:
    """Yield a stream of the backup's plaintext, authenticated frame by frame, and its checksum reader.

    Read the plaintext to its end and then call the checksum reader's ``finish`` so the
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
        keys.check_data_key_id(header.data_key_id, backup.key_id, f"backup {backup.id}")
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
    checked = checked_object(raw, sha256, backup.id)
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
            checked.finish()
    return extras
