"""Rebuilding the catalog from storage alone: every sidecar becomes its Backup row again, every
archive key record its target's archive key, every archived WAL segment or binlog its ArchivedLog row.

Idempotent: rows that exist are never duplicated or overwritten; a sidecar
found on a storage other than its backup's own records a copy there instead.
Archived files are read whole (authenticated with the archive key) for their
checksums; their archive time becomes the time of the rebuild.
"""

import json
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction

from archiving.services import archive
from covet.engines import pg_wal
from covet.errors import CovetError
from backups.models import ArchivedLog, Backup, BackupCopy, DatabaseTarget, JobStatus, Storage
from backups.services.objects import OBJECT_EXTENSION
from backups.services.storages import storage_backend
from core.audit import audit

SIDECAR_SUFFIX = ".json"


@dataclass
class RebuildReport:
    """What a rebuild found and did."""

    created: list[str] = field(default_factory=list)
    archived: list[str] = field(default_factory=list)
    copies: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def rebuild_catalog(storage: Storage, actor: str = "system") -> RebuildReport:
    """Recreate missing Backup rows (and their targets), archive keys and ArchivedLog rows from ``storage``."""
    backend = storage_backend(storage)
    report = RebuildReport()
    objects = list(backend.list(""))
    # Archive keys first: the archived files can only be read with them.
    for info in objects:
        if _is_key_record(info.key):
            _guarded(report, info.key, lambda key=info.key: _restore_archive_key(storage, backend, key))
    for info in objects:
        if info.key.endswith(SIDECAR_SUFFIX) and not _is_key_record(info.key):
            _guarded(report, info.key, lambda key=info.key: _restore_sidecar(storage, backend, key, report))
    for info in objects:
        if _archived_file(info.key):
            _guarded(report, info.key, lambda key=info.key: _restore_log(storage, key, report))
    audit(actor, "catalog.rebuild", "storage", storage.name, created=len(report.created),
                   archived=len(report.archived), copies=len(report.copies), problems=len(report.problems))
    return report


def _guarded(report: RebuildReport, key: str, step) -> None:
    try:
        step()
    except (CovetError, KeyError, ValueError) as exc:
        report.problems.append(f"{key}: {exc}")


def _is_key_record(key: str) -> bool:
    parts = key.split("/")
    return len(parts) == 4 and parts[2] == "keys" and key.endswith(SIDECAR_SUFFIX)


def _archived_file(key: str) -> tuple[str, int | None, str] | None:
    """Return (kind, timeline, name) for an archived WAL file or binlog object key, else None."""
    parts = key.split("/")
    suffix = f".{OBJECT_EXTENSION}"
    if not key.endswith(suffix):
        return None
    name = parts[-1][:-len(suffix)]
    if len(parts) == 5 and parts[2] == "wal" and pg_wal.kind_of(name):
        return "wal", int(parts[3], 16), name
    if len(parts) == 4 and parts[2] == "binlog" and not name.endswith(".partial"):
        return "binlog", None, name
    return None


def _restore_archive_key(storage: Storage, backend, key: str) -> None:
    record = json.loads(backend.get_bytes(key))
    target = _target({"name": record["target"], "engine": record["engine"]})
    if target.archive_key:
        return  # never replace the key a target archives with
    target.archive_key = {"key_id": record["key_record"]["data_key_id"], "key_record": record["key_record"],
                          "key_source": record["key_source"], "cipher": record.get("cipher", archive.ARCHIVE_CIPHER)}
    target.archive_storage = storage
    target.pitr_enabled = True
    target.save()


def _restore_log(storage: Storage, key: str, report: RebuildReport) -> None:
    kind, timeline, name = _archived_file(key)
    target = DatabaseTarget.objects.filter(name=key.split("/")[1]).first()
    if target is None or not target.archive_key:
        raise ValueError("no archive key record for this target was found; it cannot be read")
    if ArchivedLog.objects.filter(target=target, kind=kind, timeline=timeline, name=name).exists():
        return
    archive.Archive(target).adopt(name, timeline, key)
    report.archived.append(name)


def _restore_sidecar(storage: Storage, backend, key: str, report: RebuildReport) -> None:
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
            target=_target(meta["target"]),
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


def _target(facts: dict) -> DatabaseTarget:
    target = DatabaseTarget.objects.filter(name=facts["name"]).first()
    if target is not None:
        return target
    # The password reference is not in the sidecar (it is local to a machine); set it again after a rebuild.
    return DatabaseTarget.objects.create(name=facts["name"], engine=facts["engine"], host=facts.get("host") or "",
                                         port=facts.get("port"), user=facts.get("user") or "",
                                         database=facts.get("database") or "")


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
