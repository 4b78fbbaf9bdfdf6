"""The job path through Redis and real RQ worker processes: progress, busy targets, cancel, SIGKILL."""

import signal
import sqlite3

import psutil
import pytest
from django.core.management import call_command

from backups import jobs
from covet.errors import BusyError, QueueUnavailableError, StorageError
from backups.models import Backup, DatabaseTarget
from backups.services.runs import BackupRequest, create_backup, run_backup
from backups.services.targets import adhoc_target
from core.cancel import request_cancel
from core.lifecycle import job_tmp_dir
from tests.helpers import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def big_sqlite(tmp_path):
    """About 60 MiB of incompressible rows: slow enough through bzip2 to act on a running backup."""
    path = tmp_path / "big.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)")
    conn.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 30000) "
                  "INSERT INTO blobs SELECT x, randomblob(2000) FROM c")
    conn.commit()
    conn.close()
    return path


def make_backup(db, codec="zstd") -> Backup:
    target = adhoc_target("sqlite", str(db))
    return create_backup(BackupRequest(target=target, compression=codec, initiated_by="tester"))


def fresh(backup) -> Backup:
    return Backup.objects.get(pk=backup.pk)


def test_a_worker_runs_an_enqueued_backup_and_records_progress(rq_worker, sample_sqlite, default_key, backup_dir):
    backup = make_backup(sample_sqlite)
    job_id = jobs.enqueue_backup(backup)
    assert fresh(backup).job_id == job_id
    rq_worker()
    done = wait_for(lambda: fresh(backup).status in ("completed", "failed") and fresh(backup), 60, message="backup")
    assert done.status == "completed", done.error
    assert done.bytes_done == done.source_bytes == done.bytes_expected
    assert done.sha256 and done.stored_bytes > 0
    assert DatabaseTarget.objects.get(pk=done.target_id).running_backup == ""


def test_a_second_backup_of_a_busy_target_is_refused(rq_worker, big_sqlite, default_key, backup_dir):
    first = make_backup(big_sqlite, codec="bzip2")
    jobs.enqueue_backup(first)
    rq_worker()
    wait_for(lambda: fresh(first).status == "running", 30, message="first backup to start")
    with pytest.raises(BusyError, match=first.id):
        make_backup(big_sqlite)
    request_cancel(fresh(first), "tester")
    wait_for(lambda: fresh(first).status == "cancelled", 30, message="cancel")


def test_a_running_backup_can_be_cancelled_and_leaves_nothing(rq_worker, big_sqlite, default_key, backup_dir):
    backup = make_backup(big_sqlite, codec="bzip2")
    jobs.enqueue_backup(backup)
    rq_worker()
    wait_for(lambda: fresh(backup).bytes_done > 0, 30, message="backup progress")
    call_command("cancel_job", "--backup-id", backup.id)
    cancelled = wait_for(lambda: fresh(backup).status == "cancelled" and fresh(backup), 30, message="cancel")
    assert "cancelled" in cancelled.error
    assert not [p for p in backup_dir.rglob("*") if p.is_file()]
    assert DatabaseTarget.objects.get(pk=backup.target_id).running_backup == ""


def test_a_pending_backup_can_be_cancelled_before_it_starts(clean_queues, sample_sqlite, default_key, backup_dir):
    backup = make_backup(sample_sqlite)
    jobs.enqueue_backup(backup)
    call_command("cancel_job", "--backup-id", backup.id)
    assert fresh(backup).status == "cancelled"


def test_a_worker_killed_mid_backup_is_noticed_and_cleaned_up(rq_worker, big_sqlite, default_key, backup_dir,
                                                              settings):
    backup = make_backup(big_sqlite, codec="bzip2")
    jobs.enqueue_backup(backup)
    worker = rq_worker()
    running = wait_for(lambda: fresh(backup).bytes_done > 0 and fresh(backup), 30, message="backup progress")
    partial = backup_dir / running.storage_key
    partial = partial.with_name("." + partial.name + ".partial")
    assert partial.exists()
    scratch = job_tmp_dir(running)
    assert scratch.exists()

    # RQ runs each job in a forked work horse in a session of its own: kill it too, as a crash or the
    # OOM killer taking the machine's workers down would.
    for process in [*psutil.Process(worker.pid).children(recursive=True), psutil.Process(worker.pid)]:
        process.send_signal(signal.SIGKILL)
    worker.wait()
    assert fresh(backup).status == "running"  # nobody has noticed yet

    def reaped():
        call_command("run_housekeeper", "--once")
        return fresh(backup).status == "failed"

    wait_for(reaped, settings.COVET_HEARTBEAT_TIMEOUT + 30, interval=1, message="the housekeeper to notice")
    failed = fresh(backup)
    assert "stopped responding" in failed.error
    assert not partial.exists()
    assert not scratch.exists()
    assert not [p for p in backup_dir.rglob("*") if p.is_file()]
    assert DatabaseTarget.objects.get(pk=backup.target_id).running_backup == ""
    assert make_backup(big_sqlite).status == "pending"  # the target is free again


def test_an_unreachable_queue_fails_the_row_with_a_clear_error(settings, sample_sqlite, default_key, backup_dir):
    settings.RQ_QUEUES = {name: {"URL": "redis://127.0.0.1:9/0", "DEFAULT_TIMEOUT": 60}
                          for name in ("backups", "restores", "verification", "default")}
    backup = make_backup(sample_sqlite)
    with pytest.raises(QueueUnavailableError, match="start Redis"):
        jobs.enqueue_backup(backup)
    assert fresh(backup).status == "failed" and "unavailable" in fresh(backup).error


def test_a_storage_that_is_down_during_cleanup_still_leaves_the_backup_failed(monkeypatch, sample_sqlite,
                                                                              default_key, backup_dir):
    from covet.storage.local import LocalStorage

    def down(*_args, **_kwargs):
        raise StorageError("storage unreachable")

    monkeypatch.setattr(LocalStorage, "put", down)
    monkeypatch.setattr(LocalStorage, "abort", down)
    backup = make_backup(sample_sqlite)
    with pytest.raises(StorageError):
        run_backup(backup.id)
    failed = fresh(backup)
    assert failed.status == "failed" and "could not be removed yet" in failed.error
    assert DatabaseTarget.objects.get(pk=failed.target_id).running_backup == ""
