"""What the catalog says about a target's archive, through the API and the pages, and PITR requests from both."""

import io
import json
from datetime import datetime, timedelta, timezone

import pytest
from rest_framework.test import APIClient

from archiving.services import archive
from restores import jobs
from covet.engines import pg_wal
from backups.models import ArchivedLog, Backup, DatabaseTarget
from restores.models import RestoreRequest
from tests.helpers import catalog_row
from tests.wal_fixtures import reachable_dir, remove

pytestmark = pytest.mark.django_db

NOW = datetime.now(timezone.utc)


@pytest.fixture
def pg_target(default_key, backup_dir):
    target = DatabaseTarget.objects.create(name="pg-prod", engine="postgresql", host="127.0.0.1", port=5432,
                                           os_user="postgres")
    target = archive.enable_pitr(target)
    store = archive.Archive(target)
    for number in (2, 3, 4, 5, 8, 9):  # 6 and 7 are missing
        name = pg_wal.segment_name(1, number)
        row, _ = store.store(name, io.BytesIO(name.encode() * 100), 1)
        ArchivedLog.objects.filter(pk=row.pk).update(archived_at=NOW - timedelta(minutes=20 - number))
    base = catalog_row(target, created_at=NOW - timedelta(minutes=30))
    Backup.objects.filter(pk=base.pk).update(
        backup_type="base", usable=True, finished_at=NOW - timedelta(minutes=19),
        engine_meta={"start_lsn": "0/2000028", "end_lsn": "0/2000100", "timeline": 1,
                     "stop_time": (NOW - timedelta(minutes=19)).isoformat(), "server_version_num": 150000})
    return target


@pytest.fixture
def parent():
    """A new directory of this test's own that the postgres user can reach, for data directories to name.

    A fixed name under /tmp is shared by every run on the host: one that exists (or has a spool beside it)
    makes the request fail for another reason than the one under test.
    """
    path = reachable_dir("covet-catalog-")
    yield path
    remove(path)


@pytest.fixture
def api(admin_user) -> APIClient:
    client = APIClient()
    client.force_login(admin_user)
    return client


def test_archive_summary_shows_lag_gaps_and_the_window(pg_target, api):
    body = api.get(f"/api/targets/{pg_target.name}/archive/").json()
    assert body["newest"] == "000000010000000000000009"
    assert body["gaps"] == [{"timeline": 1, "first_missing": "000000010000000000000006",
                             "last_missing": "000000010000000000000007"}]
    [window] = body["windows"]
    assert window["newest"] == "000000010000000000000005"  # the gap ends what can be reached
    assert body["lag_seconds"] >= 60 * 10


def test_recover_refuses_a_target_beyond_the_gap_naming_the_missing_segment(pg_target, api, parent):
    response = api.post(f"/api/targets/{pg_target.name}/recover/",
                        {"pitr_target": "latest", "data_directory": str(parent / "new-data-dir-y")}, format="json")
    assert response.status_code == 422  # damaged: the archive lacks a segment
    assert "000000010000000000000006" in response.json()["error"]
    after_gap = (NOW - timedelta(minutes=11, seconds=30)).isoformat()
    response = api.post(f"/api/targets/{pg_target.name}/recover/",
                        {"pitr_target": after_gap, "data_directory": str(parent / "new-data-dir-y")}, format="json")
    assert response.status_code == 422
    assert "000000010000000000000006" in response.json()["error"]
    assert not RestoreRequest.objects.exists()


def test_recover_inside_the_window_is_queued_on_this_hosts_queue(pg_target, api, settings, monkeypatch, parent):
    queued = []
    monkeypatch.setattr(jobs, "enqueue", lambda queue, func, row: queued.append(queue) or "job-1")
    inside = (NOW - timedelta(minutes=16)).isoformat()
    response = api.post(f"/api/targets/{pg_target.name}/recover/",
                        {"pitr_target": inside, "data_directory": str(parent / "never-made" / "data")}, format="json")
    assert response.status_code == 404 and "does not exist" in response.json()["error"]
    response = api.post(f"/api/targets/{pg_target.name}/recover/",
                        {"pitr_target": inside, "data_directory": str(parent / "new-data-dir-x")}, format="json")
    assert response.status_code == 202, response.json()
    assert queued == [f"restores-{settings.COVET_HOST}"]
    restore = RestoreRequest.objects.get()
    assert restore.pitr["plan"]["segments"][-1] == "000000010000000000000005"
    assert restore.pitr["destination"]["host"] == settings.COVET_HOST


def test_target_page_shows_the_archive_and_refuses_with_a_flash(pg_target, client, admin_user, parent):
    client.force_login(admin_user)
    page = client.get(f"/targets/{pg_target.name}/").content.decode()
    assert "000000010000000000000006" in page and "Recoverable windows" in page
    response = client.post(f"/targets/{pg_target.name}/recover/",
                           {"kind": "time", "value": "not a time", "data_directory": str(parent / "new-data-dir-z")},
                           follow=True)
    assert "is not a time" in response.content.decode()
    dashboard = client.get("/").content.decode()
    assert 'id="archive-pg-prod"' in dashboard


def test_a_base_backup_is_only_restored_by_recovery_or_downloaded(pg_target):
    from covet.errors import UsageError
    from restores.services.restore import create_restore

    base = Backup.objects.get(target=pg_target)
    with pytest.raises(UsageError, match="--data-directory DIR and a recovery target"):
        create_restore(base, "newdb")


def test_a_mysql_targets_archive_shows_on_its_page_and_in_the_api(default_key, backup_dir, api, client, admin_user):
    target = archive.enable_pitr(DatabaseTarget.objects.create(name="shop", engine="mysql", database="shop"))
    store = archive.Archive(target)
    for number in (4, 5, 7):
        name = f"mysql-bin.{number:06d}"
        store.store(name, io.BytesIO(name.encode()), start_position=4, end_position=400,
                    first_event_at=NOW - timedelta(minutes=10 - number), last_event_at=NOW - timedelta(minutes=9 - number))
    backup = catalog_row(target, created_at=NOW - timedelta(minutes=20))
    Backup.objects.filter(pk=backup.pk).update(
        finished_at=NOW - timedelta(minutes=19),
        engine_meta={"pitr_possible": True, "binlog_file": "mysql-bin.000004", "binlog_position": 4})
    body = api.get("/api/targets/shop/archive/").json()
    assert [w["newest"] for w in body["windows"]] == ["mysql-bin.000005"]
    assert "mysql-bin.000006" in json.dumps(body["gaps"])
    client.force_login(admin_user)
    page = client.get("/targets/shop/").content.decode()
    assert "mysql-bin.000006" in page and backup.id in page
    response = api.post("/api/targets/shop/recover/", {"pitr_target": "latest"}, format="json")
    assert response.status_code == 400 and "--target-database" in response.json()["error"]
