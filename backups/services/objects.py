"""A backup's objects in storage: where they live, thawing them, removing them, deleting a backup."""

import logging
from pathlib import Path

from backups.models import Backup
from backups.services.storages import storage_backend
from core.audit import audit
from covet.errors import BusyError, CovetError, UsageError
from covet.storage import object_key, safe_component

logger = logging.getLogger(__name__)

OBJECT_EXTENSION = "covet"


def backup_object_key(backup: Backup) -> str:
    """Return where a backup's object lives: <engine>/<target>/<database>/<YYYY>/<MM>/<DD>/<id>.covet.

    A base backup copies the whole server: its <database> is "base".
    """
    database = Path(backup.database_name).name if backup.target.engine == "sqlite" else backup.database_name
    if backup.backup_type == "base":
        database = "base"
    when = backup.created_at
    return object_key(backup.target.engine, backup.target.name, database or "all",
                      f"{when:%Y}", f"{when:%m}", f"{when:%d}", f"{backup.id}.{OBJECT_EXTENSION}")


def extra_key(backup: Backup, name: str) -> str:
    """Return the object key of one of a backup's extras, beside its main object."""
    return backup.storage_key.rsplit(".", 1)[0] + f".{safe_component(name)}.{OBJECT_EXTENSION}"


def backup_object_keys(backup: Backup) -> list[str]:
    """Return every object key a backup owns or may have started: main object, extras, sidecar."""
    if not backup.storage_key:
        return []
    return [backup.storage_key, *(entry["key"] for entry in backup.extras.values()), backup.sidecar_key]


def remove_backup_objects(backup: Backup, backend=None) -> None:
    """Remove a backup's objects and anything a killed upload of them left behind."""
    backend = backend or storage_backend(backup.storage)
    for key in backup_object_keys(backup):
        backend.abort(key)
        backend.delete(key)


def try_remove_backup_objects(backup: Backup, backend=None) -> str:
    """Remove a failed backup's leftovers; return what could not be removed instead of raising.

    Used where a failure is already being recorded: a storage that is down
    must not also keep the row running or the target claimed.
    """
    try:
        remove_backup_objects(backup, backend)
    except CovetError as exc:
        logger.warning("backup %s: leftovers not removed: %s", backup.id, exc)
        return f" (its partial objects could not be removed yet: {exc}; delete the backup to retry)"
    return ""


def thaw_backup(backup: Backup, options: dict, actor: str) -> list[tuple[str, str]]:
    """Ask the backup's storage to thaw each of its objects; return (key, outcome) pairs."""
    backend = storage_backend(backup.storage)
    if not hasattr(backend, "request_thaw"):
        raise UsageError(f"storage {backup.storage.name} ({backup.storage.kind}) has no archive tier to thaw from")
    try:
        outcomes = [(key, backend.request_thaw(key, **options) or "") for key in backup_object_keys(backup)]
    except TypeError as exc:
        raise UsageError(f"{backup.storage.kind} storage does not take these thaw options: {exc}") from exc
    audit(actor, "backup.thaw", "backup", backup.id, actor, options=options)
    return outcomes


def delete_backup(backup: Backup, actor: str, source: str = "") -> None:
    """Delete a backup's object, sidecar and catalog row."""
    if backup.is_active:
        raise BusyError(f"backup {backup.id} is {backup.status}; cancel it before deleting")
    remove_backup_objects(backup)
    for copy in backup.copies.select_related("storage"):
        remove_backup_objects(backup, storage_backend(copy.storage))
    backup_id = backup.id
    backup.delete()
    audit(actor, "backup.delete", "backup", backup_id, source)
