"""Plain helpers shared by the test modules (fixtures are in conftest.py): the repository root, a worker's
environment, polling, and catalog rows made without running a job."""

import os
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def worker_env(settings) -> dict:
    """The environment a worker process needs to share this test's catalog, storage and key."""
    from django.db import connection

    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "covet_site.test_settings"
    env["DATABASE_URL"] = f"sqlite:///{connection.settings_dict['NAME']}"
    env["COVET_BACKUP_DIR"] = str(settings.COVET_BACKUP_DIR)
    env["COVET_DEFAULT_KEY_FILE"] = str(settings.COVET_DEFAULT_KEY_FILE)
    env["COVET_HEARTBEAT_INTERVAL"] = str(settings.COVET_HEARTBEAT_INTERVAL)
    return env


def wait_for(predicate, timeout: float = 60, interval: float = 0.2, message: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {message}")


def catalog_row(target, created_at=None, status="completed", database=""):
    """A catalog row as a finished job would leave it, without running anything."""
    from datetime import datetime, timezone

    from backups.models import Backup
    from backups.services.storages import default_storage

    return Backup.objects.create(target=target, database_name=database or target.database,
                                 storage=default_storage(), compression="zstd", cipher="none",
                                 status=status, created_at=created_at or datetime.now(timezone.utc))


def completed_backup(target, user="admin"):
    """A real, encrypted backup of ``target`` run in this process."""
    from backups.services.runs import BackupRequest, create_backup, run_backup

    backup = create_backup(BackupRequest(target=target, initiated_by=user, tags={"env": "test"}))
    return run_backup(backup.id)
