"""RQ entry points of restores: thin callers of the services through the job core."""

from django.conf import settings

from core.queue import enqueue, run_job
from covet.errors import UsageError


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
    return enqueue(restore_queue(request), run_restore_job, request)


def run_restore_job(request_id: int) -> None:
    """Run one restore in a worker."""
    run_job("restore", request_id)
