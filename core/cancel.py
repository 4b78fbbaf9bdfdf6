"""Cancelling a job row: a pending one never starts, a running one stops at its next heartbeat."""

from django.utils import timezone

from backups.models import ACTIVE_STATUSES, JobStatus
from core.audit import audit
from core.queue import cancel_queued_job
from covet.errors import UsageError


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
            cancel_queued_job(row.job_id)
        message = f"{kind} {row.pk} cancelled before it started"
    else:
        type(row).objects.filter(pk=row.pk, status__in=ACTIVE_STATUSES).update(cancel_requested=True)
        message = f"{kind} {row.pk} will stop at its next heartbeat"
    audit(actor, f"{kind}.cancel", kind, row.pk, source)
    return message
