"""Restores: read a backup back, authenticated, into a new target or a plain file."""

import shutil
from dataclasses import asdict
from pathlib import Path


from covet.engines import RestoreOptions, compare_manifests, compared_tables
from covet.engines.tools import EndHook
from covet.errors import DamagedError, NotFoundError, UsageError
from covet.streams import drain, write_atomically
from backups.models import Backup, JobStatus
from core.progress import JobTracker, ProgressCallback
from restores.models import RestoreRequest
from restores.services import pitr
from restores.services.pitr import run_pitr
from backups.services.copies import backup_locations, mark_location_bad
from backups.services.reading import open_plaintext, read_extras
from backups.services.targets import target_engine
from core.audit import audit
from core.lifecycle import end_job, error_text, failure_status, job_tmp_dir, start_job

PARTIAL_SUFFIX = ".restoring"


def create_restore(backup: Backup, target_database: str = "", download_only: bool = False,
                   output_dir: str = "", requested_by: str = "", source: str = "",
                   options: RestoreOptions = RestoreOptions()) -> RestoreRequest:
    """Validate and record a pending restore of ``backup``."""
    if backup.status != JobStatus.COMPLETED:
        raise UsageError(f"backup {backup.id} is {backup.status}; only completed backups can be restored")
    if not 1 <= options.parallel <= 64:
        raise UsageError(f"--parallel must be between 1 and 64, not {options.parallel}")
    if backup.backup_type == "base" and not download_only:
        raise UsageError(f"backup {backup.id} is a base backup of the whole server: recover it with "
                         f"--data-directory DIR and a recovery target (--pitr-target latest, or a time), "
                         "or write its tar with --download-only")
    if options.with_globals and not backup.extras:
        raise UsageError(f"backup {backup.id} holds no globals, users or grants to restore")
    if download_only:
        if not output_dir:
            raise UsageError("--download-only needs --output-dir DIR")
        if not Path(output_dir).is_dir():
            raise NotFoundError(f"output directory {output_dir} does not exist")
        output_path = str(Path(output_dir).resolve() / f"{backup.id}.{backup.engine_meta.get('extension', 'dump')}")
        if Path(output_path).exists():
            raise UsageError(f"{output_path} already exists")
    else:
        if not target_database:
            raise UsageError("say where to restore: --target-database NAME (for SQLite a new file path)")
        if backup.target.engine == "sqlite":
            target_database = str(Path(target_database).resolve())
            if Path(target_database).exists() and not options.clean:
                raise UsageError(f"{target_database} already exists; restore into a new file "
                                 "(or pass --clean to replace it)")
        output_path = target_database
    request = RestoreRequest.objects.create(backup=backup, target_database=target_database,
                                            download_only=download_only, output_path=output_path,
                                            requested_by=requested_by, options=asdict(options))
    audit(requested_by, "restore.create", "backup", backup.id, source, restore=request.pk,
                   target_database=target_database, download_only=download_only, options=request.options)
    return request


def run_restore(request_id: int, passphrase_file: str | None = None, key_file: str | None = None,
                on_progress: ProgressCallback | None = None) -> RestoreRequest:
    """Run a pending restore; nothing existing is replaced before the whole stream was authenticated.

    After a restore into a database the row counts are compared with the
    backup's manifest; any difference fails the request (the restored data is
    left in place for inspection) with the tables named.
    """
    request = RestoreRequest.objects.select_related("backup__target", "backup__storage").get(pk=request_id)
    backup = request.backup
    options = RestoreOptions(**{**request.options, "tables": tuple(request.options.get("tables", ()))})
    start_job(request)
    result = {}
    try:
        if request.pitr:
            result = run_pitr(request, passphrase_file, key_file, on_progress)
        else:
            result = _restore_from_a_healthy_copy(request, options, passphrase_file, key_file, on_progress)
        if not request.download_only and not request.pitr and backup.manifest:
            engine = target_engine(backup.target, job_tmp_dir(request))
            # Only exact counts are compared, so only those tables are counted:
            # the estimated ones are the largest, and scanning them is slow.
            counted = compared_tables(backup.manifest, options.tables)
            actual = engine.row_counts(request.target_database, counted) if counted else {"tables": {}}
            result["row_counts"] = compare_manifests(backup.manifest, actual, options.tables)
            _check_row_counts(backup, result)
    except BaseException as exc:
        end_job(request, failure_status(exc), error_text(exc), result=result)
        audit(request.requested_by, "backup.restore", "backup", backup.id, result=request.status,
                       restore=request.pk, error=request.error)
        raise
    finally:
        shutil.rmtree(job_tmp_dir(request), ignore_errors=True)
    end_job(request, JobStatus.COMPLETED, result=result)
    audit(request.requested_by, "backup.restore", "backup", backup.id, restore=request.pk,
                   location=result["location"])
    return request


def _restore_from_a_healthy_copy(request: RestoreRequest, options: RestoreOptions, passphrase_file: str | None,
                                 key_file: str | None, on_progress: ProgressCallback | None) -> dict:
    # A copy that is missing or damaged is skipped for the next one. The
    # engines leave nothing behind when their stream fails, so the next
    # attempt starts clean. A wrong key is no reason to try elsewhere.
    backup = request.backup
    fallbacks = []
    locations = backup_locations(backup)
    for index, storage in enumerate(locations):
        try:
            result = _restore_from(request, options, storage, passphrase_file, key_file, on_progress)
        except (NotFoundError, DamagedError) as exc:
            if index + 1 == len(locations):
                raise
            mark_location_bad(backup, storage, exc)
            fallbacks.append({"storage": storage.name, "error": str(exc)})
            continue
        result["read_from"] = storage.name
        if fallbacks:
            result["fallbacks"] = fallbacks
        return result
    raise NotFoundError(f"backup {backup.id} has no readable copy")


def _restore_from(request: RestoreRequest, options: RestoreOptions, storage, passphrase_file: str | None,
                  key_file: str | None, on_progress: ProgressCallback | None) -> dict:
    backup = request.backup
    if options.clean and not request.download_only:
        _verifying_pass(backup, passphrase_file, key_file, storage)
    extras = read_extras(backup, passphrase_file, key_file, storage) if options.with_globals else {}
    with JobTracker(request, backup.stored_bytes, on_progress) as tracker, \
            open_plaintext(backup, passphrase_file, key_file, tracker, storage=storage) as (plain, checked):
        verified = EndHook(plain, checked.finish)
        if request.download_only:
            path = Path(request.output_path)
            write_atomically(verified, path, PARTIAL_SUFFIX)
            return {"location": str(path)}
        engine = target_engine(backup.target, job_tmp_dir(request))
        restored = engine.restore(verified, request.target_database, options, extras)
        return {"location": restored.location, **restored.detail}


def _verifying_pass(backup: Backup, passphrase_file: str | None, key_file: str | None, storage) -> None:
    # Replacing an existing database destroys it: read and authenticate the
    # whole backup first, so a damaged one can never get that far.
    with open_plaintext(backup, passphrase_file, key_file, storage=storage) as (plain, checked):
        drain(plain)
        checked.finish()


def _check_row_counts(backup: Backup, result: dict) -> None:
    differences = result["row_counts"]["differences"]
    if differences:
        listed = "; ".join(f"{d['table']}: {d['expected']} in the backup, {d['restored']} restored"
                           for d in differences[:10])
        raise DamagedError(f"restored {backup.id} into {result['location']}, but row counts differ from the "
                           f"backup's manifest ({len(differences)} table(s)): {listed}")


def remove_partial_restore(request: RestoreRequest) -> None:
    """Remove the temporary files a killed restore left beside its output path."""
    path = Path(request.output_path)
    if path.parent.is_dir():
        for leftover in path.parent.glob(f".{path.name}.*{PARTIAL_SUFFIX}"):
            leftover.unlink(missing_ok=True)


def clean_up_dead_restore(request: RestoreRequest) -> str:
    """Remove what a restore whose worker died left: partial files, or a recovery's spool and data directory."""
    if request.pitr:
        return pitr.clean_up_dead(request)
    remove_partial_restore(request)
    return ""
