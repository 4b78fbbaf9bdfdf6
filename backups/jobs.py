"""RQ entry points: thin callers of the services, one queue per kind of work."""

import uuid

import django_rq
from django.conf import settings
from django.utils import timezone
from redis.exceptions import RedisError
from rq.job import Job

from backups import services
from covet.errors import CovetError, QueueUnavailableError, UsageError
from backups.models import JobStatus


def _enqueue(queue: str, func, row) -> str:
    # The id is chosen here because inside a transaction django-rq defers the
    # enqueue to the commit and returns no job.
    job_id = uuid.uuid4().hex
    try:
        django_rq.get_queue(queue).enqueue(func, row.pk, job_id=job_id, job_timeout=settings.COVET_JOB_TIMEOUT,
                                           result_ttl=86400, failure_ttl=7 * 86400)
    except RedisError as exc:
        message = f"the job queue (Redis at {settings.REDIS_URL.split('@')[-1]}) is unavailable: {exc}; start Redis and try again"
        type(row).objects.filter(pk=row.pk).update(status=JobStatus.FAILED, error=message, finished_at=timezone.now())
        raise QueueUnavailableError(message) from exc
    type(row).objects.filter(pk=row.pk).update(job_id=job_id)
    row.job_id = job_id
    return job_id


def enqueue_backup(backup) -> str:
    """Hand a pending backup to a worker; return the RQ job id."""
    return _enqueue("backups", run_backup_job, backup)


def enqueue_verification(run) -> str:
    """Hand a pending verification to a worker; return the RQ job id."""
    return _enqueue("verification", run_verification_job, run)


def restore_queue(request) -> str:
    """Return the queue of a restore: a PITR into a data directory runs on the host that will hold it."""
    destination = request.pitr.get("destination", {}) if request.pitr else {}
    if destination.get("data_directory"):
        return host_queue(destination.get("host") or settings.COVET_HOST)
    return "restores"


def host_queue(host: str) -> str:
    """Return the restore queue of ``host``; its workers run there (make run starts one for this host)."""
    name = f"restores-{host}"
    if name not in settings.RQ_QUEUES:
        raise UsageError(f"no worker queue for host {host!r}; known hosts: {', '.join(settings.COVET_PITR_HOSTS)} "
                         "(COVET_PITR_HOSTS)")
    return name


def enqueue_restore(request) -> str:
    """Hand a pending restore to a worker; return the RQ job id."""
    return _enqueue(restore_queue(request), run_restore_job, request)


def cancel_queued_job(job_id: str) -> None:
    """Take a job that has not started off its queue."""
    try:
        Job.fetch(job_id, connection=django_rq.get_connection("backups")).cancel()
    except Exception:  # noqa: BLE001 - the job may have expired or already started; the row says cancelled
        pass


def _swallow_user_errors(func, pk) -> None:
    # The row already holds status and error text; re-raising a user error
    # would only duplicate it in RQ's failed registry as a traceback.
    try:
        func(pk)
    except CovetError:
        pass


def run_backup_job(backup_id: str) -> None:
    """Run one backup in a worker."""
    _swallow_user_errors(services.run_backup, backup_id)


def run_verification_job(run_id: int) -> None:
    """Run one verification in a worker."""
    from verification.services import run_verification

    _swallow_user_errors(run_verification, run_id)


def run_restore_job(request_id: int) -> None:
    """Run one restore in a worker."""
    from restores.services import run_restore

    _swallow_user_errors(run_restore, request_id)
