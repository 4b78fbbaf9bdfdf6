"""Finding backups and policies in the catalog, and the summary of a backup that scripts read."""

from backups.models import Backup, BackupPolicy
from backups.services.storages import storage_backend
from covet.errors import NotFoundError

def get_policy(name: str) -> BackupPolicy:
    """Return the policy called ``name`` or raise NotFoundError."""
    try:
        return BackupPolicy.objects.select_related("target", "storage", "secondary_storage").get(name=name)
    except BackupPolicy.DoesNotExist:
        names = ", ".join(BackupPolicy.objects.values_list("name", flat=True)) or "none yet (add one in the admin)"
        raise NotFoundError(f"no backup policy {name!r}; policies: {names}") from None


def get_backup(backup_id: str) -> Backup:
    """Return the backup with ``backup_id`` or raise NotFoundError."""
    try:
        return Backup.objects.select_related("target", "storage").get(pk=backup_id)
    except Backup.DoesNotExist:
        raise NotFoundError(f"no backup with id {backup_id!r}; 'manage.py verify_backups --all' lists them") from None


def backup_summary(backup: Backup) -> dict:
    """Return the fields scripts read (JSON output of backup_database, the API's core fields)."""
    return {
        "backup_id": backup.id,
        "status": backup.status,
        "database_type": backup.target.engine,
        "database_name": backup.database_name,
        "target": backup.target.name,
        "backup_type": backup.backup_type,
        "usable": backup.usable,
        "source_bytes": backup.source_bytes,
        "stored_bytes": backup.stored_bytes,
        "compression": backup.compression,
        "compression_level": backup.compression_level,
        "compression_ratio": backup.compression_ratio,
        "cipher": backup.cipher,
        "key_id": backup.key_id,
        "sha256": backup.sha256,
        "storage": backup.storage.name,
        "storage_tier": backup.storage_tier,
        "policy": backup.policy.name if backup.policy_id else None,
        "storage_location": storage_backend(backup.storage).describe(backup.storage_key) if backup.storage_key else "",
        "started_at": backup.started_at.isoformat() if backup.started_at else None,
        "finished_at": backup.finished_at.isoformat() if backup.finished_at else None,
        "duration_seconds": backup.duration_seconds,
        "expires_at": backup.expires_at.isoformat() if backup.expires_at else None,
        "tags": backup.tags,
        "copies": [{"storage": copy.storage.name, "state": copy.state, "error": copy.error}
                   for copy in backup.copies.select_related("storage")],
        "error": backup.error,
    }
