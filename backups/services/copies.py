"""Further copies of a backup on other storages: making them, and reading from a healthy one."""

from django.utils import timezone

from backups.models import Backup, BackupCopy, Storage
from backups.services.reading import checked_object
from backups.services.storages import storage_backend
from core.audit import audit
from covet.errors import CovetError, NotFoundError

def replicate_backup(backup: Backup) -> list[BackupCopy]:
    """Copy a completed backup's objects to each of its pending copies' storages, checking every checksum.

    A failed copy is recorded on its row (state failed, error) and never
    fails the backup itself: the primary is complete and restorable.
    """
    done = []
    source = storage_backend(backup.storage)
    for copy in backup.copies.filter(state=BackupCopy.State.PENDING).select_related("storage"):
        target = storage_backend(copy.storage)
        try:
            for key, sha256, size in _objects_with_checksums(backup):
                with source.get(key) as stream:
                    target.put(key, checked_object(stream, sha256, backup.id), size_hint=size)
            copy.state, copy.error, copy.copied_at = BackupCopy.State.OK, "", timezone.now()
        except CovetError as exc:
            for key, _sha, _size in _objects_with_checksums(backup):
                target.abort(key)
                target.delete(key)
            copy.state, copy.error = BackupCopy.State.FAILED, str(exc)
        copy.save()
        audit(backup.initiated_by, "backup.copy", "backup", backup.id, result=copy.state,
              storage=copy.storage.name, error=copy.error)
        done.append(copy)
    return done


def _objects_with_checksums(backup: Backup) -> list[tuple[str, str, int | None]]:
    # The sidecar has no recorded checksum; it is copied last, like it is written last.
    objects = [(backup.storage_key, backup.sha256, backup.stored_bytes)]
    objects += [(e["key"], e["sha256"], e.get("stored_bytes")) for e in backup.extras.values()]
    return objects + [(backup.sidecar_key, "", None)]


def backup_locations(backup: Backup) -> list[Storage]:
    """Return the storages a backup can be read from: its own first, then its healthy copies."""
    copies = backup.copies.filter(state=BackupCopy.State.OK).select_related("storage")
    return [backup.storage, *(copy.storage for copy in copies)]


def mark_location_bad(backup: Backup, storage: Storage, exc: CovetError) -> None:
    """Record that reading ``backup`` from ``storage`` failed (missing or damaged)."""
    state = BackupCopy.State.MISSING if isinstance(exc, NotFoundError) else BackupCopy.State.DAMAGED
    BackupCopy.objects.filter(backup=backup, storage=storage).update(state=state, error=str(exc))
    audit("system", "backup.location_bad", "backup", backup.id, result=state, storage=storage.name,
          error=str(exc))
