"""A job that fails for a reason a retry can mend (CovetError.retryable) is run again by RQ; others are not."""

import django_rq
import pytest
from rq import SimpleWorker
from rq.job import Job
from rq.registry import ScheduledJobRegistry

from backups import jobs
from backups.models import AuditEvent, Backup, Storage
from backups.services.runs import BackupRequest, create_backup
from backups.services.targets import add_target

pytestmark = pytest.mark.django_db(transaction=True)  # django-rq defers enqueueing to the commit


@pytest.fixture
def blocked_storage(tmp_path):
    """A local storage where a file stands in the way of the SQLite backups' directory: every put fails."""
    root = tmp_path / "store"
    root.mkdir()
    blocker = root / "sqlite"
    blocker.write_text("in the way")
    return Storage.objects.create(name="blocked", kind="local", config={"root": str(root)}), blocker


def run_queued_jobs():
    queue = django_rq.get_queue("backups")
    SimpleWorker([queue], connection=queue.connection).work(burst=True)


def attempt_again(job_id: str) -> None:
    """Do what the scheduler does when a retry's delay is over: put the job back on its queue."""
    queue = django_rq.get_queue("backups")
    ScheduledJobRegistry(queue=queue).requeue(job_id)
    run_queued_jobs()


def test_a_storage_failure_is_tried_again_after_a_delay_and_the_backup_then_completes(
        settings, clean_queues, sample_sqlite, default_key, blocked_storage):
    settings.COVET_JOB_RETRY_DELAYS = [3600, 3600]
    storage, blocker = blocked_storage
    backup = create_backup(BackupRequest(target=add_target("app", "sqlite", str(sample_sqlite)), storage=storage))
    job_id = jobs.enqueue_backup(backup)
    run_queued_jobs()

    waiting = Backup.objects.get(pk=backup.pk)
    assert waiting.status == "pending" and waiting.error.startswith("attempt 1 failed: cannot write")
    assert waiting.target.running_backup == ""
    job = Job.fetch(job_id, connection=django_rq.get_connection("backups"))
    assert job.get_status() == "scheduled" and job.retries_left == 1
    assert AuditEvent.objects.filter(action="backup.retry", object_id=backup.id, result="pending").exists()

    blocker.unlink()
    attempt_again(job_id)
    done = Backup.objects.get(pk=backup.pk)
    assert done.status == "completed" and done.error == "" and done.sha256


def test_retries_end_and_the_backup_stays_failed(settings, clean_queues, sample_sqlite, default_key,
                                                 blocked_storage):
    settings.COVET_JOB_RETRY_DELAYS = [3600, 3600]
    storage, _ = blocked_storage
    backup = create_backup(BackupRequest(target=add_target("app", "sqlite", str(sample_sqlite)), storage=storage))
    job_id = jobs.enqueue_backup(backup)
    run_queued_jobs()
    attempt_again(job_id)
    assert Backup.objects.get(pk=backup.pk).error.startswith("attempt 2 failed")
    attempt_again(job_id)
    failed = Backup.objects.get(pk=backup.pk)
    assert failed.status == "failed" and failed.error.startswith("cannot write")
    assert AuditEvent.objects.filter(action="backup.retry", object_id=backup.id).count() == 2


def test_a_user_error_is_not_retried(settings, clean_queues, sample_sqlite, default_key, backup_dir):
    settings.COVET_JOB_RETRY_DELAYS = [3600, 3600]
    backup = create_backup(BackupRequest(target=add_target("app", "sqlite", str(sample_sqlite))))
    sample_sqlite.unlink()  # NotFoundError: no retry can bring the database file back
    job_id = jobs.enqueue_backup(backup)
    run_queued_jobs()
    failed = Backup.objects.get(pk=backup.pk)
    assert failed.status == "failed" and not failed.error.startswith("attempt")
    assert Job.fetch(job_id, connection=django_rq.get_connection("backups")).get_status() != "scheduled"
    assert not AuditEvent.objects.filter(action="backup.retry").exists()


def test_every_kind_of_job_names_a_service_and_a_clean_up_that_import():
    """A service moved without its dotted path would fail only in a worker, leaving the row pending."""
    from django.utils.module_loading import import_string

    from core import registry

    kinds = registry.kinds()
    assert {kind.name for kind in kinds} == {"backup", "restore", "verification"}
    for kind in kinds:
        assert callable(import_string(kind.run)), kind.name
        assert not kind.clean_up or callable(import_string(kind.clean_up)), kind.name
