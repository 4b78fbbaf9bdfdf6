"""Verification: read a stored backup back whole — checksum, decrypt, decompress."""

from backups import services
from covet.errors import DamagedError
from backups.models import Backup, JobStatus
from backups.progress import JobTracker, ProgressCallback
from verification.models import VerificationRun

READ_SIZE = 1024 * 1024


def create_verification(backup: Backup, requested_by: str, source: str = "") -> VerificationRun:
    """Record a pending verification of ``backup``."""
    run = VerificationRun.objects.create(backup=backup, requested_by=requested_by)
    services.audit(requested_by, "verification.create", "backup", backup.id, source, run=run.pk)
    return run


def run_verification(run_id: int, passphrase_file: str | None = None, key_file: str | None = None,
                     on_progress: ProgressCallback | None = None) -> VerificationRun:
    """Verify a backup all the way through; the run ends completed (all checks ok) or failed (with the damage)."""
    run = VerificationRun.objects.select_related("backup__target", "backup__storage").get(pk=run_id)
    backup = run.backup
    services.start_job(run)
    checks = {}
    try:
        with JobTracker(run, backup.stored_bytes, on_progress) as tracker, \
                services.open_plaintext(backup, passphrase_file, key_file, tracker) as (plain, checked):
            size = 0
            while chunk := plain.read(READ_SIZE):
                size += len(chunk)
            services.finish_reading(checked)
        checks["checksum"] = {"ok": True, "detail": f"SHA-256 {backup.sha256}"}
        checks["decrypt"] = {"ok": True, "detail": "every frame authenticated" if backup.cipher != "none"
                             else "unencrypted; every frame checksum matched"}
        checks["decompress"] = {"ok": True, "detail": f"{size} bytes"}
        if backup.source_bytes is not None and size != backup.source_bytes:
            checks["size"] = {"ok": False, "detail": f"{size} bytes, catalog says {backup.source_bytes}"}
            raise DamagedError(f"decoded {size} bytes but the catalog recorded {backup.source_bytes}")
        checks["size"] = {"ok": True, "detail": f"{size} bytes as recorded"}
    except BaseException as exc:
        status = services.failure_status(exc)
        checks.setdefault("read", {"ok": False, "detail": services.error_text(exc)})
        error = services.error_text(exc)
        services.end_job(run, status, f"backup {backup.id}: {error}" if status == JobStatus.FAILED else error,
                         checks=checks)
        services.audit(run.requested_by, "backup.verify", "backup", backup.id, result=status, run=run.pk,
                       error=run.error)
        raise
    services.end_job(run, JobStatus.COMPLETED, checks=checks)
    services.audit(run.requested_by, "backup.verify", "backup", backup.id, run=run.pk)
    return run
