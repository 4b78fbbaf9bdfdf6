"""Rebuilding backups from their sidecars: every sidecar becomes its Backup row (and target, and copy records) again.

Idempotent: rows that exist are never duplicated or overwritten; a sidecar
found on a storage other than its backup's own records a copy there instead.
archiving.services.rebuild drives the whole rebuild (archive keys and archived files too).
"""

import json
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction

from backups.models import Backup, BackupCopy, DatabaseTarget, JobStatus, Storage

SIDECAR_SUFFIX = ".json"


@dataclass
class RebuildReport:
    """What a rebuild found and did."""

    created: list[str] = field(default_factory=list)
    archived: list[str] = field(default_factory=list)
    copies: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

def restore_sidecar(storage: Storage, backend, key: str, report: RebuildReport) -> None:
    """Recreate the Backup row (and its target, and copy records) a sidecar describes, unless it exists."""
    meta = json.loads(backend.get_bytes(key))
    if isinstance(meta, dict) and "sidecar_version" in meta:
        _restore_row(storage, backend, meta, report)


def _restore_row(storage: Storage, backend, meta: dict, report: RebuildReport) -> None:
    backup_id = meta["backup_id"]
    existing = Backup.objects.filter(pk=backup_id).first()
    if existing is not None:
        if existing.storage_id != storage.pk:
            _, created = BackupCopy.objects.get_or_create(
                backup=existing, storage=storage, defaults={"state": BackupCopy.State.OK})
            if created:
                report.copies.append(backup_id)
                return
        report.existing.append(backup_id)
        return
    backend.stat(meta["object_key"])  # a sidecar whose object is gone describes nothing restorable
    with transaction.atomic():
        Backup.objects.create(
            id=backup_id,
            target=target_from_facts(meta["target"]),
            database_name=meta["database_name"],
            backup_type=meta["backup_type"],
            status=JobStatus.COMPLETED,
            created_at=_when(meta["started_at"]),
            started_at=_when(meta["started_at"]),
            finished_at=_when(meta["finished_at"]),
            source_bytes=meta["source_bytes"],
            stored_bytes=meta["stored_bytes"],
            bytes_done=meta["source_bytes"] or 0,
            bytes_expected=meta["source_bytes"],
            compression=meta["compression"],
            compression_level=meta["compression_level"],
            cipher=meta["cipher"],
            key_id=meta["key_id"],
            key_record=meta["key_record"],
            key_source=meta["key_source"],
            sha256=meta["sha256"],
            storage=storage,
            storage_key=meta["object_key"],
            storage_tier=meta.get("storage_tier", ""),
            initiated_by=meta["initiated_by"],
            tags=meta["tags"],
            expires_at=_when(meta["expires_at"]),
            engine_meta=meta["engine_meta"],
            manifest=meta.get("manifest", {}),
            extras=meta.get("extras", {}),
            parallel=meta.get("parallel", 1),
        )
    report.created.append(backup_id)


def target_from_facts(facts: dict) -> DatabaseTarget:
    """Return the target named in a sidecar or key record, creating it from those facts if missing."""
    target = DatabaseTarget.objects.filter(name=facts["name"]).first()
    if target is not None:
        return target
    # The password reference is not in the sidecar (it is local to a machine); set it again after a rebuild.
    return DatabaseTarget.objects.create(name=facts["name"], engine=facts["engine"], host=facts.get("host") or "",
                                         port=facts.get("port"), user=facts.get("user") or "",
                                         database=facts.get("database") or "")


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
