"""The life of a job row (Backup, RestoreRequest, VerificationRun): started, ended, and what its failure says."""

from pathlib import Path

from django.conf import settings
from django.utils import timezone

from backups.models import JobStatus
from covet.errors import CancelledError, CovetError


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


def error_text(exc: BaseException) -> str:
    """Return the text stored on a row for a failure: the message, or the type for unexpected errors."""
    if isinstance(exc, CovetError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def job_tmp_dir(row) -> Path:
    """Return the private scratch directory of one job row; the housekeeper removes it if the job dies."""
    return Path(settings.COVET_TMP_DIR) / f"{row._meta.model_name}-{row.pk}"
