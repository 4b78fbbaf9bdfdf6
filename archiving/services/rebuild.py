"""Rebuilding the catalog from a storage alone: backups from their sidecars, archive keys, archived files."""

import json

from archiving.services import archive
from backups.models import ArchivedLog, DatabaseTarget, Storage
from backups.services.objects import OBJECT_EXTENSION
from backups.services.rebuild import SIDECAR_SUFFIX, RebuildReport, restore_sidecar, target_from_facts
from backups.services.storages import storage_backend
from core.audit import audit
from covet.engines import pg_wal
from covet.errors import CovetError


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
            _guarded(report, info.key, lambda key=info.key: restore_sidecar(storage, backend, key, report))
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
    target = target_from_facts({"name": record["target"], "engine": record["engine"]})
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
