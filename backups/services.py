"""Orchestration of backups: targets, the backup run, sidecars, cancellation, dead-job reaping.

Commands, jobs and views call these functions; they hold the multi-step work.
Every step that a user can get wrong raises a typed CovetError.
"""

import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import getpass
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO, Iterator

from django.conf import settings
from django.utils import timezone

from backups import keys
from covet.engines import ConnectionParams, DumpOptions, open_engine
from covet.errors import (BusyError, CancelledError, CovetError, DamagedError, NotFoundError, StorageError,
                            UsageError)
from backups.models import (ACTIVE_STATUSES, AuditEvent, Backup, BackupCopy, BackupPolicy, DatabaseTarget, JobStatus,
                            Storage)
from covet.pipeline import codecs, crypto
from covet.pipeline.container import DecodingStream, EncodingStream, Header
from backups.progress import CountingReader, JobTracker, ProgressCallback
from covet.storage import object_key, open_storage, safe_component

logger = logging.getLogger(__name__)

OBJECT_EXTENSION = "covet"
SIDECAR_VERSION = 1


def cli_source() -> str:
    """Return where a command-line action comes from, for audit events."""
    return f"cli:{getpass.getuser()}@{socket.gethostname()}"


def audit(actor: str, action: str, object_type: str = "", object_id: str = "", source: str = "",
          result: str = "ok", **detail) -> AuditEvent:
    """Record who did what; ``detail`` must never hold a secret."""
    return AuditEvent.objects.create(
        actor=actor or "system", action=action, object_type=object_type, object_id=str(object_id),
        source=source, result=result, detail=detail,
    )


# Storages ---------------------------------------------------------------

def default_storage() -> Storage:
    """Return the default storage, creating the local one under COVET_BACKUP_DIR on first use."""
    storage = Storage.objects.filter(is_default=True).first()
    if storage:
        return storage
    storage, _ = Storage.objects.get_or_create(
        name="default",
        defaults={"kind": "local", "config": {"root": str(settings.COVET_BACKUP_DIR)}, "is_default": True},
    )
    return storage


def get_storage(name: str | None) -> Storage:
    """Return the storage called ``name`` (the default one when ``name`` is empty)."""
    if not name:
        return default_storage()
    try:
        return Storage.objects.get(name=name)
    except Storage.DoesNotExist:
        raise NotFoundError(f"no storage named {name!r}; see the Storage list in the admin") from None


SECRET_WORDS = ("password", "secret", "account_key", "sas_token", "connection_string", "access_key")


def add_storage(name: str, kind: str, config: dict, make_default: bool = False) -> Storage:
    """Register a storage; its config must name secrets by reference (``*_env`` / ``*_file``), never hold them."""
    if Storage.objects.filter(name=name).exists():
        raise UsageError(f"a storage named {name!r} already exists")
    for key in config:
        if any(word in key for word in SECRET_WORDS) and not key.endswith(("_env", "_file")):
            raise UsageError(f"storage setting {key!r} would put a secret in the catalog; "
                             f"name it by reference instead ({key}_env=VARIABLE or {key}_file=/path)")
    storage = Storage(name=name, kind=kind, config=config)
    storage_backend(storage)  # a bad setting fails here, not in the middle of a backup
    storage.save()
    if make_default:
        Storage.objects.exclude(pk=storage.pk).update(is_default=False)
        Storage.objects.filter(pk=storage.pk).update(is_default=True)
        storage.is_default = True
    return storage


def remove_storage(name: str) -> None:
    """Remove a storage that no backup lives on."""
    storage = get_storage(name)
    count = storage.backups.count()
    if count:
        raise UsageError(f"storage {name!r} still holds {count} backup(s) in the catalog; delete them first")
    storage.delete()


def check_storage(storage: Storage) -> str:
    """Write, stat, read back and delete a small object; return what happened, in words."""
    backend = storage_backend(storage)
    key = object_key("covet-check", f"{socket.gethostname()}-{os.getpid()}.txt")
    probe = f"covet storage check {timezone.now().isoformat()}".encode()
    backend.put_bytes(key, probe)
    try:
        if backend.get_bytes(key) != probe:
            raise StorageError(f"storage {storage.name} returned different bytes than were written")
    finally:
        backend.delete(key)
    free = backend.free_bytes()
    return f"storage {storage.name} ok: wrote, read back and deleted {backend.describe(key)}" + (
        f"; {free / 2**30:.1f} GiB free" if free is not None else "")


def storage_backend(storage: Storage):
    """Open the backend behind a Storage row (one per distinct configuration, reused: SDK clients are costly)."""
    return _backend(storage.kind, json.dumps(storage.config, sort_keys=True))


@functools.lru_cache(maxsize=32)
def _backend(kind: str, config_json: str):
    return open_storage(kind, json.loads(config_json))


# Targets ------------------------------------------------------------------

def get_target(name: str) -> DatabaseTarget:
    """Return the target called ``name`` or raise NotFoundError."""
    try:
        return DatabaseTarget.objects.get(name=name)
    except DatabaseTarget.DoesNotExist:
        raise NotFoundError(f"no target named {name!r}; 'manage.py target list' shows them") from None


def _password_ref(password_file: str | None) -> str:
    if not password_file:
        return ""
    path = Path(password_file).resolve()
    if not path.is_file():
        raise NotFoundError(f"password file {path} does not exist")
    return f"file:{path}"


def add_target(name: str, engine: str, database: str, host: str = "", port: int | None = None,
               user: str = "", password_file: str | None = None) -> DatabaseTarget:
    """Register a target; its password stays in ``password_file`` and only the path is kept."""
    if DatabaseTarget.objects.filter(name=name).exists():
        raise UsageError(f"a target named {name!r} already exists")
    if engine == "sqlite":
        database = str(Path(database).resolve())
    return DatabaseTarget.objects.create(
        name=name, engine=engine, database=database, host=host or "", port=port, user=user or "",
        password_ref=_password_ref(password_file),
    )


def remove_target(name: str) -> None:
    """Remove a target that has no backups left."""
    target = get_target(name)
    count = target.backups.count()
    if count:
        raise UsageError(f"target {name!r} still has {count} backup(s) in the catalog; delete them first")
    target.delete()


def set_target_password(target: DatabaseTarget, password: str) -> None:
    """Write ``password`` to a 0600 file in the secrets directory and keep only its path."""
    secrets_dir = Path(settings.COVET_SECRETS_DIR)
    secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = secrets_dir / f"target-{target.name}.password"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password)
    os.replace(tmp, path)
    target.password_ref = f"file:{path}"
    target.save(update_fields=["password_ref"])


def adhoc_target(engine: str, database: str, host: str = "", port: int | None = None, user: str = "",
                 password_file: str | None = None) -> DatabaseTarget:
    """Return the target for command-line connection flags, registering it on first use."""
    if engine == "sqlite":
        database = str(Path(database).resolve())
        base = Path(database).stem
    else:
        base = f"{host or 'local'}-{port or 'default'}"
    name = f"{engine}-{base}"[:90].lower()
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
    for candidate in [name] + [f"{name}-{i}" for i in range(2, 100)]:
        existing = DatabaseTarget.objects.filter(name=candidate).first()
        if existing is None:
            return add_target(candidate, engine, database, host, port, user, password_file)
        if (existing.engine, existing.host, existing.port, existing.user) == (engine, host or "", port, user or "") \
                and (engine != "sqlite" or existing.database == database):
            return existing
    raise UsageError("too many ad-hoc targets with the same name; register one with 'manage.py target add'")


def connection_params(target: DatabaseTarget) -> ConnectionParams:
    """Translate a target into the plain values an engine takes."""
    password_file = target.password_ref[5:] if target.password_ref.startswith("file:") else None
    return ConnectionParams(host=target.host, port=target.port, user=target.user, password_file=password_file)


def job_tmp_dir(row) -> Path:
    """Return the private scratch directory of one job row; the housekeeper removes it if the job dies."""
    return Path(settings.COVET_TMP_DIR) / f"{row._meta.model_name}-{row.pk}"


def target_engine(target: DatabaseTarget, tmp_dir: Path):
    """Open the engine for a target, with ``tmp_dir`` as its scratch space."""
    return open_engine(target.engine, connection_params(target), str(tmp_dir))


# Backups ------------------------------------------------------------------

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


def get_policy(name: str) -> BackupPolicy:
    """Return the policy called ``name`` or raise NotFoundError."""
    try:
        return BackupPolicy.objects.select_related("target", "storage", "secondary_storage").get(name=name)
    except BackupPolicy.DoesNotExist:
        names = ", ".join(BackupPolicy.objects.values_list("name", flat=True)) or "none yet (add one in the admin)"
        raise NotFoundError(f"no backup policy {name!r}; policies: {names}") from None


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
    backup.save()
    audit(backup.initiated_by, "backup.run", "backup", backup.id, stored_bytes=backup.stored_bytes)
    replicate_backup(backup)
    if backup.backup_type == "base":
        from backups.archive import await_base_wal  # archive.py builds on this module

        await_base_wal(backup, settings.COVET_BASE_WAL_WAIT)
    return backup


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
                    target.put(key, ChecksumReader(stream, sha256, backup.id), size_hint=size)
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


def error_text(exc: BaseException) -> str:
    """Return the text stored on a row for a failure: the message, or the type for unexpected errors."""
    if isinstance(exc, CovetError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def start_job(row) -> None:
    """Mark a job row running from now, with a first heartbeat."""
    row.status = JobStatus.RUNNING
    row.started_at = row.heartbeat_at = timezone.now()
    row.save(update_fields=["status", "started_at", "heartbeat_at"])


def end_job(row, status: str, error: str = "", **fields) -> None:
    """Mark a job row ended with ``status`` and ``error``, saving ``fields`` with it."""
    row.status = status
    row.error = error
    row.finished_at = timezone.now()
    for name, value in fields.items():
        setattr(row, name, value)
    row.save(update_fields=["status", "error", "finished_at", *fields])


def failure_status(exc: BaseException) -> str:
    """Return the status a job ends with after ``exc``: cancelled or failed."""
    return JobStatus.CANCELLED if isinstance(exc, CancelledError) else JobStatus.FAILED


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


def extra_key(backup: Backup, name: str) -> str:
    """Return the object key of one of a backup's extras, beside its main object."""
    return backup.storage_key.rsplit(".", 1)[0] + f".{safe_component(name)}.{OBJECT_EXTENSION}"


def _store_extras(backup: Backup, backend, extras: dict[str, bytes], header, data_key: bytes | None) -> None:
    # Planned keys are saved first so the housekeeper can remove a half-written extra.
    backup.extras = {name: {"key": extra_key(backup, name)} for name in extras}
    Backup.objects.filter(pk=backup.pk).update(extras=backup.extras)
    for name, data in extras.items():
        encoded = EncodingStream(io.BytesIO(data), header(), data_key)
        info = backend.put(backup.extras[name]["key"], encoded, size_hint=len(data))
        backup.extras[name].update(sha256=encoded.sha256, stored_bytes=info.size, source_bytes=len(data))


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


class ChecksumReader:
    """Read a stored object, and at its end check the SHA-256 the catalog recorded."""

    def __init__(self, stream: BinaryIO, expected_sha256: str, backup_id: str):
        self.stream = stream
        self.expected = expected_sha256
        self.backup_id = backup_id
        self.digest = hashlib.sha256()
        self.checked = False

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        if data:
            self.digest.update(data)
        elif not self.checked:
            self.checked = True
            actual = self.digest.hexdigest()
            if self.expected and actual != self.expected:
                raise DamagedError(f"backup {self.backup_id}: stored object's SHA-256 is {actual}, "
                                   f"the catalog recorded {self.expected}; the object was altered or replaced")
        return data

    def close(self) -> None:
        self.stream.close()


@contextlib.contextmanager
def open_plaintext(backup: Backup, passphrase_file: str | None = None, key_file: str | None = None,
                   tracker: JobTracker | None = None, extra: str | None = None,
                   storage: Storage | None = None) -> Iterator[tuple[DecodingStream, ChecksumReader]]:
    """Yield a stream of the backup's plaintext, authenticated frame by frame, and its checksum reader.

    Read the plaintext to its end and then call ``finish_reading`` so the
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
        if header.data_key_id != backup.key_id:
            raise DamagedError(f"backup {backup.id}: the object names data key {header.data_key_id}, "
                               f"the catalog {backup.key_id}; object and catalog do not belong together")
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
    checked = ChecksumReader(raw, sha256, backup.id)
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
            finish_reading(checked)
    return extras


def finish_reading(checked: ChecksumReader) -> None:
    """Drain what is left of the stored object so its checksum is compared."""
    while checked.read(1024 * 1024):
        pass


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


# Jobs: cancel and reap ------------------------------------------------------

def request_cancel(row, actor: str, source: str = "") -> str:
    """Cancel a pending or running job row; return what happened, in words."""
    if not row.is_active:
        raise UsageError(f"{row._meta.verbose_name} {row.pk} is already {row.status}")
    kind = row._meta.model_name
    pending = type(row).objects.filter(pk=row.pk, status=JobStatus.PENDING).update(
        status=JobStatus.CANCELLED, cancel_requested=True, finished_at=timezone.now(),
        error=f"cancelled by {actor} before it started")
    if pending:
        if row.job_id:
            from backups.jobs import cancel_queued_job

            cancel_queued_job(row.job_id)
        message = f"{kind} {row.pk} cancelled before it started"
    else:
        type(row).objects.filter(pk=row.pk, status__in=ACTIVE_STATUSES).update(cancel_requested=True)
        message = f"{kind} {row.pk} will stop at its next heartbeat"
    audit(actor, f"{kind}.cancel", kind, row.pk, source)
    return message


def reap_dead_jobs(now=None) -> list[str]:
    """Mark running rows whose heartbeat stopped as failed and remove what they left; return their ids."""
    from restores.models import RestoreRequest
    from verification.models import VerificationRun

    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.COVET_HEARTBEAT_TIMEOUT)
    reaped = []
    for model in (Backup, RestoreRequest, VerificationRun):
        for row in model.objects.filter(status=JobStatus.RUNNING, heartbeat_at__lt=stale):
            message = (f"the worker stopped responding (last heartbeat {row.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC); "
                       "its partial output was removed — run it again")
            won = model.objects.filter(pk=row.pk, status=JobStatus.RUNNING, heartbeat_at=row.heartbeat_at).update(
                status=JobStatus.FAILED, error=message, finished_at=now)
            if not won:
                continue  # it beat in the meantime, or another housekeeper took it
            if isinstance(row, Backup):
                _release_target(row)
                leftovers = try_remove_backup_objects(row)
                if leftovers:
                    model.objects.filter(pk=row.pk).update(error=message + leftovers)
            elif isinstance(row, RestoreRequest):
                from restores.services import remove_partial_restore

                remove_partial_restore(row)
            shutil.rmtree(job_tmp_dir(row), ignore_errors=True)
            audit("system", f"{model._meta.model_name}.reap", model._meta.model_name, row.pk, result="failed",
                  error=message)
            reaped.append(str(row.pk))
    return reaped
