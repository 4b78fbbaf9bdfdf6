"""RQ entry points of verification: thin callers of the services through the job core."""

from core.queue import enqueue, run_job


def enqueue_verification(run) -> str:
    """Hand a pending verification to a worker; return the RQ job id."""
    return enqueue("verification", run_verification_job, run)


def run_verification_job(run_id: int) -> None:
    """Run one verification in a worker."""
    run_job("verification", run_id)
