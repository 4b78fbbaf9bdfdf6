"""Verification: read a stored backup back whole — checksum, decrypt, decompress."""


from covet.errors import DamagedError
from covet.streams import drain
from backups.models import Backup, JobStatus
from core.progress import JobTracker, ProgressCallback
from verification.models import VerificationRun
from backups.services.reading import open_plaintext
from core.audit import audit
from core.lifecycle import end_job, error_text, failure_status, start_job


def create_verification(backup: Backup, requested_by: str, source: str = "") -> VerificationRun:
    """Record a pending verification of ``backup``."""
    run = VerificationRun.objects.create(backup=backup, requested_by=requested_by)
    audit(requested_by, "verification.create", "backup", backup.id, source, run=run.pk)
    return run


def run_verification(run_id: int, passphrase_file: str | None = None, key_file: str | None = None,
                     on_progress: ProgressCallback | None = None) -> VerificationRun:
    """Verify a backup all the way through; the run ends completed (all checks ok) or failed (with the damage)."""
    run = VerificationRun.objects.select_related("backup__target", "backup__storage").get(pk=run_id)
    backup = run.backup
    start_job(run)
    checks = {}
    try:
        with JobTracker(run, backup.stored_bytes, on_progress) as tracker, \
                open_plaintext(backup, passphrase_file, key_file, tracker) as (plain, checked):
            size = drain(plain)
            checked.finish()
        checks["checksum"] = {"ok": True, "detail": f"SHA-256 {backup.sha256}"}
        checks["decrypt"] = {"ok": True, "detail": "every frame authenticated" if backup.cipher != "none"
                             else "unencrypted; every frame checksum matched"}
        checks["decompress"] = {"ok": True, "detail": f"{size} bytes"}
        if backup.source_bytes is not None and size != backup.source_bytes:
            checks["size"] = {"ok": False, "detail": f"{size} bytes, catalog says {backup.source_bytes}"}
            raise DamagedError(f"decoded {size} bytes but the catalog recorded {backup.source_bytes}")
        checks["size"] = {"ok": True, "detail": f"{size} bytes as recorded"}
    except BaseException as exc:
        status = failure_status(exc)
        checks.setdefault("read", {"ok": False, "detail": error_text(exc)})
        error = error_text(exc)
        end_job(run, status, f"backup {backup.id}: {error}" if status == JobStatus.FAILED else error,
                         checks=checks)
        audit(run.requested_by, "backup.verify", "backup", backup.id, result=status, run=run.pk,
                       error=run.error)
        raise
    end_job(run, JobStatus.COMPLETED, checks=checks)
    audit(run.requested_by, "backup.verify", "backup", backup.id, run=run.pk)
    return run
