"""Handing job rows to RQ workers and running them there: one entry point, retries decided by the error.

A job's failure is recorded on its row by the service (status, error text);
the exception is not the record. A CovetError whose ``retryable`` flag says
trying again can help (a storage or queue that is briefly down, a target
still busy) is retried by RQ when the row's kind allows retries: the row goes
back to pending with the attempt's error, and RQ runs it again after a delay
(COVET_JOB_RETRY_DELAYS). Any other user error ends the job quietly, since
the row already says why; an unexpected exception reaches RQ's failed registry.
"""

import uuid

import django_rq
from django.conf import settings
from django.utils import timezone
from redis.exceptions import RedisError
from rq import Retry, get_current_job
from rq.job import Job

from backups.models import JobStatus
from core import registry
from core.audit import audit
from covet.errors import CovetError, QueueUnavailableError


def enqueue(queue: str, func, row) -> str:
    """Hand a pending job row to the workers of ``queue``; return the RQ job id."""
    # The id is chosen here because inside a transaction django-rq defers the
    # enqueue to the commit and returns no job.
    job_id = uuid.uuid4().hex
    kind = registry.kind_of(row)
    retry = Retry(max=kind.retries, interval=list(settings.COVET_JOB_RETRY_DELAYS)) if kind.retries else None
    try:
        django_rq.get_queue(queue).enqueue(func, row.pk, job_id=job_id, job_timeout=settings.COVET_JOB_TIMEOUT,
                                           result_ttl=86400, failure_ttl=7 * 86400, retry=retry)
    except RedisError as exc:
        message = (f"the job queue (Redis at {settings.REDIS_URL.split('@')[-1]}) is unavailable: {exc}; "
                   "start Redis and try again")
        type(row).objects.filter(pk=row.pk).update(status=JobStatus.FAILED, error=message, finished_at=timezone.now())
        raise QueueUnavailableError(message) from exc
    type(row).objects.filter(pk=row.pk).update(job_id=job_id)
    row.job_id = job_id
    return job_id


def cancel_queued_job(job_id: str) -> None:
    """Take a job that has not started off its queue."""
    try:
        Job.fetch(job_id, connection=django_rq.get_connection("backups")).cancel()
    except Exception:  # noqa: BLE001 - the job may have expired or already started; the row says cancelled
        pass


def run_job(kind_name: str, pk) -> None:
    """Run one job row in a worker through its kind's service, retrying what a retry can mend."""
    kind = registry.kind(kind_name)
    try:
        kind.run_service(pk)
    except CovetError as exc:
        job = get_current_job()
        if not (exc.retryable and job is not None and job.retries_left):
            return
        row = kind.model.objects.get(pk=pk)
        if row.status != JobStatus.FAILED:
            return  # cancelled, or failed before it started: nothing a retry would mend
        attempt = kind.retries - job.retries_left + 1
        kind.model.objects.filter(pk=pk, status=JobStatus.FAILED).update(
            status=JobStatus.PENDING, error=f"attempt {attempt} failed: {exc}; trying again",
            started_at=None, finished_at=None, heartbeat_at=None, bytes_done=0, eta_seconds=None)
        audit("system", f"{kind.name}.retry", kind.name, pk, result="pending", attempt=attempt, error=str(exc))
        raise  # RQ schedules the next attempt
