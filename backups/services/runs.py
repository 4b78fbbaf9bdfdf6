"""Backup requests and runs: validate and record a backup, then dump, compress, encrypt and store it."""

import io
import json
import shutil
from dataclasses import dataclass, field
from datetime import timedelta

from django.utils import timezone

from backups.models import Backup, BackupCopy, BackupPolicy, DatabaseTarget, JobStatus, Storage
from backups.services import keys
from backups.services.copies import replicate_backup
from backups.services.objects import backup_object_key, extra_key, try_remove_backup_objects
from backups.services.sidecars import sidecar
from backups.services.storages import default_storage, storage_backend
from backups.services.targets import target_engine
from backups.signals import backup_completed
from core.audit import audit
from core.lifecycle import end_job, error_text, failure_status, job_tmp_dir, start_job
from core.progress import CountingReader, JobTracker, ProgressCallback
from covet.engines import DumpOptions
from covet.errors import BusyError, UsageError
from covet.pipeline import codecs, crypto
from covet.pipeline.container import EncodingStream
from covet.pipeline.container_format import Header

def parse_tags(text: str | None) -> dict:
    """Parse 'k=v,k2=v2' into a dict."""
    tags = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"bad tag {item!r}: tags are key=value pairs separated by commas")
        tags[key.strip()] = value.strip()
    return tags


@dataclass
class BackupRequest:
    """What to back up and how; built by the CLI, the API and the pages."""

    target: DatabaseTarget
    database: str = ""
    storage: Storage | None = None
    compression: str = "zstd"
    compression_level: int | None = None
    cipher: str = "aes-256-gcm"
    passphrase_file: str | None = None
    key_file: str | None = None
    retention_days: int | None = None
    copy_to: Storage | None = None
    parallel: int = 1
    backup_type: str = "logical"
    storage_tier: str = ""
    policy: BackupPolicy | None = None
    tags: dict = field(default_factory=dict)
    initiated_by: str = ""
    source: str = ""


def policy_request(policy: BackupPolicy, **overrides) -> BackupRequest:
    """Return the request a policy makes: its target, database, storages, codec, cipher, key, retention, tier, tags."""
    source = policy.key_source or {}
    values = dict(
        target=policy.target, database=policy.database, storage=policy.storage, copy_to=policy.secondary_storage,
        compression=policy.compression, compression_level=policy.compression_level, cipher=policy.cipher,
        key_file=source.get("path") if source.get("kind") == "keyfile" else None,
        passphrase_file=source.get("path") if source.get("kind") == "passphrase" else None,
        retention_days=policy.retention_days, storage_tier=policy.storage_tier, tags=dict(policy.tags),
        policy=policy)
    values.update({key: value for key, value in overrides.items() if value is not None})
    return BackupRequest(**values)


def create_backup(request: BackupRequest) -> Backup:
    """Validate a request and record a pending Backup; nothing is read or written yet."""
    if request.compression not in codecs.CODECS:
        raise UsageError(f"unknown compression {request.compression!r}; choose from {', '.join(codecs.CODECS)}")
    if request.cipher not in crypto.CIPHERS:
        raise UsageError(f"unknown cipher {request.cipher!r}; choose from {', '.join(crypto.CIPHERS)}")
    level = codecs.validate_level(request.compression, request.compression_level)
    storage = request.storage or default_storage()
    tier = storage_backend(storage).check_tier(request.storage_tier) if request.storage_tier else ""
    if not 1 <= request.parallel <= 64:
        raise UsageError(f"--parallel must be between 1 and 64, not {request.parallel}")
    if request.backup_type == "base":
        if request.target.engine != "postgresql":
            raise UsageError(f"--type base is for PostgreSQL targets; {request.target.name} is {request.target.engine}")
        if request.parallel != 1 or request.database:
            raise UsageError("a base backup copies the whole server: it takes no --parallel and no database name")
    elif request.backup_type != "logical":
        raise UsageError(f"--type is logical or base, not {request.backup_type!r}")
    key_source = {}
    if request.cipher != "none":
        key_source = keys.encryption_ref(request.passphrase_file, request.key_file)
        keys.load_source(key_source)  # fail now, not in a worker, on a bad path or mode
    elif request.passphrase_file or request.key_file:
        raise UsageError("a key was given but --encrypt none stores the backup unencrypted")
    busy = Backup.objects.filter(target=request.target, status=JobStatus.RUNNING).first()
    if busy:
        raise BusyError(f"backup {busy.id} of target {request.target.name} is still running; "
                        "wait for it or cancel it")
    now = timezone.now()
    backup = Backup.objects.create(
        target=request.target,
        database_name="" if request.backup_type == "base" else request.database or request.target.database,
        backup_type=request.backup_type,
        usable=request.backup_type != "base",
        storage=storage,
        storage_tier=tier,
        policy=request.policy,
        compression=request.compression,
        compression_level=level,
        cipher=request.cipher,
        key_source=key_source,
        initiated_by=request.initiated_by,
        tags=request.tags,
        parallel=request.parallel,
        expires_at=now + timedelta(days=request.retention_days) if request.retention_days else None,
    )
    if request.copy_to:
        if request.copy_to.pk == backup.storage_id:
            raise UsageError("the copy must go to another storage than the backup itself")
        BackupCopy.objects.create(backup=backup, storage=request.copy_to)
    audit(request.initiated_by, "backup.create", "backup", backup.id, request.source,
          target=request.target.name, database=backup.database_name)
    return backup


def _claim_target(backup: Backup) -> None:
    # A conditional UPDATE with a row count: two workers can never both win.
    won = DatabaseTarget.objects.filter(pk=backup.target_id, running_backup="").update(running_backup=backup.id)
    if not won:
        holder = DatabaseTarget.objects.get(pk=backup.target_id).running_backup
        raise BusyError(f"backup {holder} of target {backup.target.name} is still running; "
                        "this one was refused — run it again when that one ends")


def _release_target(backup: Backup) -> None:
    DatabaseTarget.objects.filter(pk=backup.target_id, running_backup=backup.id).update(running_backup="")


def run_backup(backup_id: str, on_progress: ProgressCallback | None = None) -> Backup:
    """Run a pending backup: dump, compress, encrypt, store, write sidecar, then mark it completed.

    On any failure the partial object is removed and the row says failed (or
    cancelled) with the error; the error is then raised again for the caller.
    """
    backup = Backup.objects.select_related("target", "storage").get(pk=backup_id)
    if backup.status != JobStatus.PENDING:
        raise UsageError(f"backup {backup.id} is {backup.status}, not pending")
    try:
        _claim_target(backup)
    except BusyError as exc:
        end_job(backup, JobStatus.FAILED, str(exc))
        raise
    backend = storage_backend(backup.storage)
    backup.storage_key = backup_object_key(backup)
    backup.save(update_fields=["storage_key"])
    start_job(backup)
    # The target is released before the final status is written, so whoever
    # sees the backup ended also finds the target free.
    try:
        _store_backup(backup, backend, on_progress)
    except BaseException as exc:
        leftovers = try_remove_backup_objects(backup, backend)
        _release_target(backup)
        end_job(backup, failure_status(exc), error_text(exc) + leftovers)
        audit(backup.initiated_by, "backup.run", "backup", backup.id, result=backup.status, error=backup.error)
        raise
    finally:
        shutil.rmtree(job_tmp_dir(backup), ignore_errors=True)
    _release_target(backup)
    backup.status = JobStatus.COMPLETED
    backup.error = ""  # an earlier attempt's failure (see core.queue) is kept in the audit trail, not here
    backup.save()
    audit(backup.initiated_by, "backup.run", "backup", backup.id, stored_bytes=backup.stored_bytes)
    replicate_backup(backup)
    backup_completed.send(sender=Backup, backup=backup)
    return backup


def _store_backup(backup: Backup, backend, on_progress: ProgressCallback | None) -> None:
    engine = target_engine(backup.target, job_tmp_dir(backup))
    base = backup.backup_type == "base"
    expected = engine.estimate_server_size() if base else engine.estimate_size(backup.database_name)
    data_key = None
    if backup.cipher != "none":
        key_id, data_key = crypto.new_data_key()
        backup.key_id = key_id
        backup.key_record = crypto.make_key_record(key_id, data_key, [keys.load_source(backup.key_source)])

    def header() -> Header:
        # One header per stored object: each gets its own stream id, so frames
        # can never be moved from one object to another.
        return Header(codec=backup.compression, level=backup.compression_level, cipher=backup.cipher,
                      data_key_id=backup.key_id or None, backup_id=backup.id)

    dumping = (engine.base_backup(f"covet {backup.id}") if base
               else engine.dump(backup.database_name, DumpOptions(parallel=backup.parallel)))
    with dumping as dump, JobTracker(backup, expected, on_progress) as tracker:
        encoded = EncodingStream(CountingReader(dump.stream, tracker), header(), data_key)
        try:
            info = backend.put(backup.storage_key, encoded, size_hint=expected, tier=backup.storage_tier or None)
        finally:
            encoded.close()
        backup.engine_meta = {**dump.meta, "extension": dump.extension}
        backup.manifest = dump.manifest
        _store_extras(backup, backend, dump.extras, header, data_key)
    backup.source_bytes = encoded.source_bytes
    backup.stored_bytes = info.size
    backup.sha256 = encoded.sha256
    backup.bytes_done = encoded.source_bytes
    backup.bytes_expected = encoded.source_bytes
    backup.eta_seconds = 0
    backup.finished_at = timezone.now()
    # The sidecar goes last but one and the completed row last, so a
    # half-written backup is never listed as complete.
    backend.put_bytes(backup.sidecar_key, json.dumps(sidecar(backup), indent=2, sort_keys=True).encode())


def _store_extras(backup: Backup, backend, extras: dict[str, bytes], header, data_key: bytes | None) -> None:
    # Planned keys are saved first so the housekeeper can remove a half-written extra.
    backup.extras = {name: {"key": extra_key(backup, name)} for name in extras}
    Backup.objects.filter(pk=backup.pk).update(extras=backup.extras)
    for name, data in extras.items():
        encoded = EncodingStream(io.BytesIO(data), header(), data_key)
        info = backend.put(backup.extras[name]["key"], encoded, size_hint=len(data))
        backup.extras[name].update(sha256=encoded.sha256, stored_bytes=info.size, source_bytes=len(data))


def clean_up_dead_backup(backup: Backup) -> str:
    """Release a dead backup's target and remove its partial objects; return what could not be removed."""
    _release_target(backup)
    return try_remove_backup_objects(backup)
