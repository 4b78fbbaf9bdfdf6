"""The JSON sidecar beside each backup object: alone, with the key, enough to rebuild its catalog row."""

from backups.models import Backup

SIDECAR_VERSION = 1


def sidecar(backup: Backup) -> dict:
    """Return the JSON sidecar: alone, with the key, enough to rebuild the catalog row and restore."""
    target = backup.target
    return {
        "sidecar_version": SIDECAR_VERSION,
        "backup_id": backup.id,
        "backup_type": backup.backup_type,
        "target": {"name": target.name, "engine": target.engine, "host": target.host, "port": target.port,
                   "user": target.user, "database": target.database},
        "database_name": backup.database_name,
        "started_at": backup.started_at.isoformat() if backup.started_at else None,
        "finished_at": backup.finished_at.isoformat() if backup.finished_at else None,
        "source_bytes": backup.source_bytes,
        "stored_bytes": backup.stored_bytes,
        "compression": backup.compression,
        "compression_level": backup.compression_level,
        "cipher": backup.cipher,
        "key_id": backup.key_id,
        "key_record": backup.key_record,
        "key_source": backup.key_source,
        "sha256": backup.sha256,
        "object_key": backup.storage_key,
        "storage_tier": backup.storage_tier,
        "initiated_by": backup.initiated_by,
        "tags": backup.tags,
        "expires_at": backup.expires_at.isoformat() if backup.expires_at else None,
        "engine_meta": backup.engine_meta,
        "manifest": backup.manifest,
        "extras": backup.extras,
        "parallel": backup.parallel,
    }
