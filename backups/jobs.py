"""RQ entry points of backups: thin callers of the services through the job core."""

from core.queue import enqueue, run_job
# Jobs queued by earlier versions name these paths; they stay importable until such jobs are gone.
from restores.jobs import run_restore_job  # noqa: F401
from verification.jobs import run_verification_job  # noqa: F401


def enqueue_backup(backup) -> str:
    """Hand a pending backup to a worker; return the RQ job id."""
    return enqueue("backups", run_backup_job, backup)


def run_backup_job(backup_id: str) -> None:
    """Run one backup in a worker."""
    run_job("backup", backup_id)
