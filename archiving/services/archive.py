"""The WAL/binlog archive of a target: its data key, where files go, storing and fetching them.

Every archived file is a container encrypted with the target's archive data
key: one random key per target, wrapped by a key-encryption key like a
backup's, recorded in the catalog (DatabaseTarget.archive_key) and once in
storage under ``<engine>/<target>/keys/<key_id>.json`` so the archive can be
read without the catalog. A shipper unwraps it once and keeps it for its
life. Files live at ``<engine>/<target>/wal/<timeline>/<name>.covet`` and
``<engine>/<target>/binlog/<name>.covet``.

An archived name is never overwritten: storing it again with the same
plaintext (same SHA-256) succeeds, with different plaintext it fails.
"""

import io
import json
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import BinaryIO

from django.db import IntegrityError, transaction
from django.utils import timezone

from backups.services import keys
from covet.errors import ArchiveConflictError, CovetError, DamagedError, NotFoundError, UsageError
from backups.models import ArchivedLog, DatabaseTarget, Storage
from covet.pipeline import crypto
from covet.pipeline.container import DecodingStream, EncodingStream
from covet.pipeline.container_format import Header

from covet.storage import object_key
from covet.streams import COPY_BUFFER, CheckedReader, HashingReader, drain, sha256_of
from backups.services.objects import OBJECT_EXTENSION
from backups.services.storages import default_storage, storage_backend

log = logging.getLogger(__name__)

ARCHIVE_CODEC = "zstd"
ARCHIVE_LEVEL = 3
ARCHIVE_CIPHER = "aes-256-gcm"



def archive_storage(target: DatabaseTarget) -> Storage:
    """Return the storage a target's WAL/binlogs go to: its own setting, else the default storage."""
    return target.archive_storage or default_storage()


def log_kind(target: DatabaseTarget) -> str:
    """Return 'wal' for PostgreSQL targets and 'binlog' for MySQL/MariaDB ones."""
    kinds = {"postgresql": "wal", "mysql": "binlog"}
    if target.engine not in kinds:
        raise UsageError(f"target {target.name} is {target.engine}; PITR needs a PostgreSQL or MySQL/MariaDB target")
    return kinds[target.engine]


def key_record_key(target: DatabaseTarget, key_id: str) -> str:
    return object_key(target.engine, target.name, "keys", f"{key_id}.json")


def log_object_key(target: DatabaseTarget, name: str, timeline: int | None = None, partial: bool = False) -> str:
    """Return where an archived file lives; WAL files under their timeline (8 hex digits).

    A partial (live) binlog lives at ``<name>.partial.covet``, apart from the
    completed file: a completed file's object is written once and never
    overwritten, and a listing tells the two apart without the catalog.
    """
    if log_kind(target) == "wal":
        return object_key(target.engine, target.name, "wal", f"{timeline:08X}", f"{name}.{OBJECT_EXTENSION}")
    suffix = ".partial" if partial else ""
    return object_key(target.engine, target.name, "binlog", f"{name}{suffix}.{OBJECT_EXTENSION}")


def enable_pitr(target: DatabaseTarget, key_source: dict | None = None, storage: Storage | None = None,
                cipher: str = ARCHIVE_CIPHER) -> DatabaseTarget:
    """Turn archiving on for a target: choose its storage and create its archive key once.

    An existing archive key is kept (changing it would orphan what was
    archived); ``key_source`` is the key-encryption key reference, by default
    the site's (see keys.encryption_ref).
    """
    log_kind(target)
    if storage is not None:
        target.archive_storage = storage
    if not target.archive_key:
        if cipher == "none":
            target.archive_key = {"cipher": "none"}
        else:
            source = key_source or keys.encryption_ref()
            key_id, data_key = crypto.new_data_key()
            record = crypto.make_key_record(key_id, data_key, [keys.load_source(source)])
            storage_backend(archive_storage(target)).put_bytes(
                key_record_key(target, key_id),
                json.dumps({"target": target.name, "engine": target.engine, "key_record": record,
                            "key_source": source, "cipher": cipher}, indent=2).encode())
            target.archive_key = {"key_id": key_id, "key_record": record, "key_source": source, "cipher": cipher}
    target.pitr_enabled = True
    target.save()
    return target


class Archive:
    """One target's archive, with its data key unwrapped once: store and fetch WAL/binlog files.

    Safe to share between threads: catalog writes are serialised (the
    SQLite catalog has one writer), storage calls run in parallel.
    """

    def __init__(self, target: DatabaseTarget, passphrase_file: str | None = None, key_file: str | None = None):
        if not target.pitr_enabled or not target.archive_key:
            raise UsageError(f"archiving is not set up for target {target.name}; "
                             f"run 'manage.py setup_pitr --target {target.name}' first")
        self.target = target
        self.kind = log_kind(target)
        self.storage = archive_storage(target)
        self.backend = storage_backend(self.storage)
        self.cipher = target.archive_key.get("cipher", ARCHIVE_CIPHER)
        self.key_id = target.archive_key.get("key_id", "")
        self.data_key = None
        if self.cipher != "none":
            sources = keys.decryption_sources(f"archive of {target.name}", target.archive_key.get("key_source"),
                                              passphrase_file, key_file)
            self.data_key = crypto.unwrap_key_record(target.archive_key["key_record"], sources)
        self._catalog_lock = threading.Lock()

    def _header(self, name: str) -> Header:
        return Header(codec=ARCHIVE_CODEC, level=ARCHIVE_LEVEL, cipher=self.cipher,
                      data_key_id=self.key_id or None, backup_id=f"{self.target.name}/{name}")

    def _key_lookup(self, header: Header) -> bytes | None:
        if self.cipher == "none":
            return None
        keys.check_data_key_id(header.data_key_id, self.key_id, f"archive of {self.target.name}")
        return self.data_key

    def existing(self, name: str, timeline: int | None = None) -> ArchivedLog | None:
        return ArchivedLog.objects.filter(target=self.target, kind=self.kind, name=name, timeline=timeline).first()

    def store(self, name: str, stream: BinaryIO, timeline: int | None = None, size_hint: int | None = None,
              replace_partial: bool = False, **fields) -> tuple[ArchivedLog, bool]:
        """Archive ``stream`` as ``name``; return (row, stored) where stored is False when it was already there.

        Raise ArchiveConflictError when ``name`` is archived with other
        content. ``replace_partial`` lets a completed binlog replace the
        partial row of the same name. ``fields`` are extra ArchivedLog
        columns (positions, event times, GTID range, partial).
        """
        row = self.existing(name, timeline)
        if row is not None and not (replace_partial and row.partial):
            self._check_same(name, row.plaintext_sha256, sha256_of(stream))
            return row, False
        # Partial binlogs: see log_object_key. [binlog PITR, issue 7]
        key = log_object_key(self.target, name, timeline, partial=bool(fields.get("partial")))
        replaced = row.storage_key if row is not None and row.storage_key != key else None
        if (row is None or row.partial) and not fields.get("partial") and self._stored_without_row(key):
            # Stored before (the catalog was lost, or a crash came between
            # the upload and the row): keep that object, adopt it if equal.
            stored_sha256, plain, size = self._digests(key)
            self._check_same(name, plain, sha256_of(stream))
            adopted = self._record(name, timeline, key, sha256=stored_sha256, plaintext_sha256=plain, size=size,
                                   stored_bytes=self.backend.stat(key).size, row=row, **fields)
            self._remove_replaced(replaced)
            return adopted, False
        plain = HashingReader(stream)
        encoded = EncodingStream(plain, self._header(name), self.data_key)
        try:
            info = self.backend.put(key, encoded, size_hint=size_hint)
        finally:
            encoded.close()
        stored = self._record(name, timeline, key, sha256=encoded.sha256, plaintext_sha256=plain.digest.hexdigest(),
                              size=encoded.source_bytes, stored_bytes=info.size, row=row, **fields)
        self._remove_replaced(replaced)
        return stored, True

    def _remove_replaced(self, key: str | None) -> None:
        # The completed binlog's row now points at its own object; the partial
        # one is garbage. Left behind after a crash, it is overwritten by the
        # next partial of that name or is harmless (the catalog no longer names it).
        if key is not None:
            try:
                self.backend.delete(key)
            except CovetError as exc:
                log.warning("could not remove the replaced partial %s: %s", key, exc)

    def adopt(self, name: str, timeline: int | None, key: str, **fields) -> ArchivedLog:
        """Record a row for an object found in storage without one (rebuild_catalog): read it whole,
        authenticated, for its stored and plaintext SHA-256 and size."""
        stored_sha256, plain, size = self._digests(key)
        return self._record(name, timeline, key, sha256=stored_sha256, plaintext_sha256=plain, size=size,
                            stored_bytes=self.backend.stat(key).size, **fields)

    def _digests(self, key: str) -> tuple[str, str, int]:
        """Read a stored object once, authenticated: its stored SHA-256, plaintext SHA-256 and plaintext size."""
        with self.backend.get(key) as raw:
            decoded = DecodingStream(raw, self._key_lookup)
            plain = HashingReader(decoded)
            size = drain(plain)
        return decoded.sha256, plain.digest.hexdigest(), size

    def _stored_without_row(self, key: str) -> bool:
        try:
            self.backend.stat(key)
        except NotFoundError:
            return False
        return True

    def _check_same(self, name: str, archived: str, offered: str) -> None:
        if archived != offered:
            raise ArchiveConflictError(
                f"{name} is already archived for target {self.target.name} with different content "
                f"(SHA-256 {archived[:12]}… archived, {offered[:12]}… offered); it is never overwritten. "
                "Two servers may be archiving into one target: give each its own target")

    def _record(self, name, timeline, key, *, sha256, plaintext_sha256, size, stored_bytes, row=None, **fields):
        values = dict(storage=self.storage, storage_key=key, stored_bytes=stored_bytes, sha256=sha256,
                      plaintext_sha256=plaintext_sha256, size=size, key_id=self.key_id, archived_at=timezone.now(),
                      **fields)
        with self._catalog_lock:
            if row is not None:
                for field, value in values.items():
                    setattr(row, field, value)
                row.save()
                return row
            try:
                with transaction.atomic():
                    return ArchivedLog.objects.create(target=self.target, kind=self.kind, name=name,
                                                      timeline=timeline, **values)
            except IntegrityError:  # another process recorded it first
                return self.existing(name, timeline)

    def open(self, row: ArchivedLog, stored: BinaryIO | None = None) -> "_CheckedPlaintext":
        """Return a reader of an archived file's plaintext; at its end both SHA-256 sums have been checked.

        ``stored`` reads the stored object from elsewhere (a staged copy, see
        ``stage``) instead of the storage.
        """
        return _CheckedPlaintext(self.open_stored(row) if stored is None else stored, row, self._key_lookup)

    def fetch(self, row: ArchivedLog, destination: Path) -> None:
        """Write an archived file's plaintext to ``destination`` (atomically), authenticated and checksummed.

        Raise DamagedError naming the file when it is missing, altered or
        does not decrypt; nothing is left at ``destination`` then.
        """
        self._decode_to(row, None, destination)

    def stage(self, row: ArchivedLog, destination: Path) -> None:
        """Copy an archived file's stored object to ``destination`` and check its stored SHA-256.

        Cheaper than ``fetch`` (no decryption or decompression) yet it finds
        a missing, truncated or altered object, and a header the archive key
        does not authenticate; ``decode_staged`` finishes the job later.
        Raise DamagedError naming the file; nothing is left at
        ``destination`` then.
        """
        try:
            with self.open_stored(row) as raw, open(destination, "wb") as out:
                shutil.copyfileobj(CheckedReader(raw, row.sha256, lambda _actual: _altered(row)), out, COPY_BUFFER)
            with open(destination, "rb") as staged:
                DecodingStream(staged, self._key_lookup)  # reads and authenticates the header only
        except CovetError as exc:
            destination.unlink(missing_ok=True)
            if row.name in str(exc):
                raise
            raise DamagedError(f"archived {row.name} cannot be used: {exc}") from exc
        except BaseException:
            destination.unlink(missing_ok=True)
            raise

    def open_stored(self, row: ArchivedLog) -> BinaryIO:
        """Return a reader of an archived file's stored object; DamagedError naming it when storage lacks it."""
        try:
            return self.backend.get(row.storage_key)
        except NotFoundError:
            raise DamagedError(f"{row.name} is in the catalog but missing from storage {self.storage.name} "
                               f"({row.storage_key})") from None

    def decode_staged(self, row: ArchivedLog, staged: Path, destination: Path) -> None:
        """Write the plaintext of a copy made by ``stage`` to ``destination`` (atomically), authenticated."""
        self._decode_to(row, staged, destination)

    def _decode_to(self, row: ArchivedLog, staged: Path | None, destination: Path) -> None:
        partial = destination.with_name(destination.name + ".fetching")
        try:
            with self.open(row, open(staged, "rb") if staged else None) as plain, open(partial, "wb") as out:
                shutil.copyfileobj(plain, out, COPY_BUFFER)
                plain.finish()
            os.replace(partial, destination)
        except CovetError as exc:
            partial.unlink(missing_ok=True)
            if isinstance(exc, DamagedError) and row.name in str(exc):
                raise
            raise DamagedError(f"archived {row.name} cannot be used: {exc}") from exc
        except BaseException:
            partial.unlink(missing_ok=True)
            raise


class _CheckedPlaintext(HashingReader):
    """Plaintext of one archived file; ``finish`` checks the stored and plaintext SHA-256 the catalog holds."""

    def __init__(self, raw: BinaryIO, row: ArchivedLog, key_lookup):
        self.raw = raw
        self.row = row
        self.decoded = DecodingStream(raw, key_lookup)
        super().__init__(self.decoded)

    def finish(self) -> None:
        # The decoder hashes every stored byte and refuses any after the final frame.
        drain(self)
        if self.row.sha256 and self.decoded.sha256 != self.row.sha256:
            raise _altered(self.row)
        if self.row.plaintext_sha256 and self.digest.hexdigest() != self.row.plaintext_sha256:
            raise DamagedError(f"archived {self.row.name}: its content differs from what was archived")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.raw.close()


def _altered(row: ArchivedLog) -> DamagedError:
    return DamagedError(f"archived {row.name}: the stored object's SHA-256 differs from the catalog's; "
                        "it was altered or replaced")


def store_bytes(archive: Archive, name: str, data: bytes, timeline: int | None = None, **fields):
    """Archive a small file held in memory (history and backup-label files, tests)."""
    return archive.store(name, io.BytesIO(data), timeline, size_hint=len(data), **fields)
