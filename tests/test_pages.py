"""The dashboard pages: sign-in, the catalog, one backup's page, and the buttons that queue work."""

from datetime import datetime, timedelta, timezone

import django_rq
import pytest
from django.contrib.messages import get_messages


from backups.models import AuditEvent, Backup, JobStatus
from restores.models import RestoreRequest
from verification.models import VerificationRun
from backups.services.catalog import backup_summary
from backups.services.targets import add_target

from tests.helpers import catalog_row, completed_backup

# django-rq defers enqueueing to the commit of a test transaction, so tests that queue jobs run outside one.
queues_jobs = pytest.mark.django_db(transaction=True)


@pytest.fixture
def signed_in(client, admin_user):
    client.force_login(admin_user)
    return client


def flashes(response) -> list[str]:
    """The flash messages pending after ``response``, oldest first (unshown ones carry over)."""
    return [str(message) for message in get_messages(response.wsgi_request)]


PAGES = [
    ("get", "/"),
    ("get", "/backups/backup_x/"),
    ("get", "/backups/backup_x/delete/"),
    ("post", "/backups/new/"),
    ("post", "/backups/backup_x/verify/"),
    ("post", "/backups/backup_x/restore/"),
    ("post", "/backups/backup_x/cancel/"),
    ("post", "/backups/backup_x/delete/"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("method,url", PAGES)
def test_every_page_sends_anonymous_users_to_sign_in(client, method, url):
    response = getattr(client, method)(url)
    assert response.status_code == 302
    assert response.url == f"/accounts/login/?next={url}"


@pytest.mark.django_db
def test_the_queue_dashboard_is_for_staff_only(client, django_user_model):
    assert client.get("/django-rq/").url.startswith("/admin/login/")
    client.force_login(django_user_model.objects.create_user("viewer", password="viewer-test-password"))
    assert client.get("/django-rq/").status_code == 302
    assert b"Queues</a>" not in client.get("/").content


@pytest.mark.django_db
def test_signing_in_and_out_through_the_form(client, admin_user):
    page = client.get("/accounts/login/")
    assert page.status_code == 200 and b'name="password"' in page.content

    bad = client.post("/accounts/login/", {"username": "admin", "password": "wrong"})
    assert bad.status_code == 200 and b"did not match" in bad.content

    response = client.post("/accounts/login/", {"username": "admin", "password": "admin-test-password"})
    assert response.status_code == 302 and response.url == "/"
    assert client.get("/").status_code == 200

    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/").status_code == 302


@pytest.mark.django_db
def test_the_dashboard_lists_newest_first_and_filters(signed_in, target):
    pg = add_target("pg", "postgresql", "shop", host="db.example")
    day = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
    old = catalog_row(target, day - timedelta(days=2))
    failed = catalog_row(target, day, status=JobStatus.FAILED)
    shop = catalog_row(pg, day + timedelta(days=1))
    crm = catalog_row(pg, day + timedelta(days=2), database="crm")

    def shown(query=""):
        response = signed_in.get(f"/{query}")
        assert response.status_code == 200
        return [backup.id for backup in response.context["page"]]

    page = signed_in.get("/").content.decode()
    assert page.index(crm.id) < page.index(shop.id) < page.index(failed.id) < page.index(old.id)
    assert shown() == [crm.id, shop.id, failed.id, old.id]
    assert shown("?database_type=postgresql") == [crm.id, shop.id]
    assert shown("?database=crm") == [crm.id]
    assert shown("?target=app&status=failed") == [failed.id]
    assert shown("?created_after=2026-11-19&created_before=2026-11-21") == [shop.id, failed.id]

    response = signed_in.get("/?created_after=soon&status=completed")
    assert b"Enter an ISO date" in response.content
    assert [b.id for b in response.context["page"]] == [crm.id, shop.id, old.id]  # the valid filter still applies


@pytest.mark.django_db
def test_the_dashboard_paginates_and_keeps_the_filters(signed_in, target):
    for i in range(30):
        catalog_row(target, datetime(2026, 11, 1, tzinfo=timezone.utc) + timedelta(minutes=i))
    response = signed_in.get("/?status=completed")
    assert len(response.context["page"]) == 25
    assert b'href="?status=completed&amp;page=2"' in response.content
    assert len(signed_in.get("/?status=completed&page=2").context["page"]) == 5


@pytest.mark.django_db
def test_the_dashboard_says_how_to_add_a_target_when_there_is_none(signed_in):
    response = signed_in.get("/")
    assert b"manage.py target add" in response.content
    assert b"/admin/backups/databasetarget/add/" in response.content
    assert b'id="start-backup"' not in response.content


@pytest.mark.django_db
def test_a_running_backup_shows_its_progress_for_the_poller(signed_in, target):
    running = catalog_row(target, status=JobStatus.RUNNING)
    Backup.objects.filter(pk=running.pk).update(bytes_done=250, bytes_expected=1000, eta_seconds=75)
    page = signed_in.get("/").content.decode()
    assert f'data-poll-url="/api/backups/{running.id}/" data-status="running"' in page
    assert 'style="width: 25%"' in page and "25% · ETA 1 m 15 s" in page
    assert "covet.js" in page


@queues_jobs
def test_the_new_backup_form_queues_a_backup(signed_in, target, default_key, clean_queues):
    response = signed_in.post("/backups/new/", {"target": "app", "compression": "lz4", "cipher": "aes-256-gcm"},
                              follow=True)
    backup = Backup.objects.get()
    assert (backup.status, backup.compression, backup.initiated_by) == (JobStatus.PENDING, "lz4", "admin")
    assert backup.job_id in django_rq.get_queue("backups").job_ids
    assert f"Backup {backup.id} of app queued" in response.content.decode()
    assert response.redirect_chain == [("/", 302)]


@queues_jobs
def test_errors_from_the_new_backup_form_are_flash_messages(signed_in, target, settings, tmp_path, clean_queues):
    settings.COVET_DEFAULT_KEY_FILE = tmp_path / "missing.key"
    response = signed_in.post("/backups/new/", {"target": "app", "compression": "zstd", "cipher": "aes-256-gcm"},
                              follow=True)
    assert response.status_code == 200
    assert "default key file" in flashes(response)[-1] and b"Traceback" not in response.content
    assert not Backup.objects.exists()

    running = catalog_row(target, status=JobStatus.RUNNING)
    response = signed_in.post("/backups/new/", {"target": "app", "compression": "zstd", "cipher": "none"})
    assert f"backup {running.id} of target app is still running" in flashes(response)[-1]

    response = signed_in.post("/backups/new/", {"target": "ghost", "compression": "zstd", "cipher": "none"})
    assert flashes(response)[-1].startswith("Backup not started: Target:")
    assert Backup.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_detail_page_shows_every_fact(signed_in, target, default_key, backup_dir):
    backup = completed_backup(target)
    VerificationRun.objects.create(backup=backup, requested_by="ops", status=JobStatus.FAILED,
                                   error="frame 3 failed authentication")
    page = signed_in.get(f"/backups/{backup.id}/").content.decode()
    for fact in (backup.sha256, backup.key_id, str(default_key), backup_summary(backup)["storage_location"],
                 f"({backup.source_bytes} bytes)", f"({backup.stored_bytes} bytes)", f"{backup.compression_ratio:.2f}×",
                 "env=test", "aes-256-gcm", "zstd (level 3)", "frame 3 failed authentication", 'id="verify"',
                 f'action="/backups/{backup.id}/restore/"', f"/backups/{backup.id}/delete/"):
        assert fact in page, fact
    assert 'id="cancel"' not in page
    assert "wraps" not in page  # the wrapped data keys stay out of pages
    assert 'id="manifest"' in page and "main.customers" in page and ">5000<" in page
    assert 'id="no-pitr"' not in page

    assert signed_in.get("/backups/backup_20000101_000000_000000/").status_code == 404


@pytest.mark.django_db
def test_the_detail_page_says_when_point_in_time_recovery_is_impossible(signed_in, target):
    backup = catalog_row(target)
    backup.engine_meta = {"pitr_possible": False, "pitr_reason": "the binary log is off (log_bin=OFF)"}
    backup.save()
    page = signed_in.get(f"/backups/{backup.id}/").content.decode()
    assert 'id="no-pitr"' in page and "log_bin=OFF" in page


def test_the_detail_page_shows_tables_and_tags_named_like_dict_methods(signed_in, target):
    backup = catalog_row(target)
    names = ("items", "keys", "values", "get")
    backup.manifest = {"consistent": True, "tables": {name: {"rows": 7 + i, "exact": True}
                                                      for i, name in enumerate(names)}}
    backup.tags = {name: f"tag-{name}" for name in names}
    backup.save()
    response = signed_in.get(f"/backups/{backup.id}/")
    assert response.status_code == 200
    page = response.content.decode()
    for i, name in enumerate(names):
        assert f'<td class="mono">{name}</td><td class="num">{7 + i}</td>' in page
        assert f"{name}=tag-{name}" in page


@queues_jobs
def test_the_verify_button_queues_a_verification(signed_in, target, clean_queues):
    backup = catalog_row(target)
    response = signed_in.post(f"/backups/{backup.id}/verify/")
    run = VerificationRun.objects.get(backup=backup)
    assert response.status_code == 302 and response.url == f"/backups/{backup.id}/"
    assert run.job_id in django_rq.get_queue("verification").job_ids
    assert flashes(response) == [f"Verification {run.pk} of {backup.id} queued."]
    assert AuditEvent.objects.filter(action="verification.create", actor="admin", source="127.0.0.1").exists()


@queues_jobs
def test_the_restore_form_queues_a_restore_into_a_new_file(signed_in, target, tmp_path, clean_queues):
    backup = catalog_row(target)
    response = signed_in.post(f"/backups/{backup.id}/restore/", {"target_database": str(tmp_path / "new.db")})
    restore = RestoreRequest.objects.get(backup=backup)
    assert restore.job_id in django_rq.get_queue("restores").job_ids
    assert restore.requested_by == "admin" and restore.target_database == str(tmp_path / "new.db")
    assert "queued" in flashes(response)[-1]

    response = signed_in.post(f"/backups/{backup.id}/restore/", {"target_database": target.database})
    assert "already exists; restore into a new file" in flashes(response)[-1]
    assert RestoreRequest.objects.count() == 1


@pytest.mark.django_db
def test_cancel_asks_a_running_backup_to_stop(signed_in, target):
    running = catalog_row(target, status=JobStatus.RUNNING)
    assert b'id="cancel"' in signed_in.get(f"/backups/{running.id}/").content
    response = signed_in.post(f"/backups/{running.id}/cancel/")
    assert "will stop at its next heartbeat" in flashes(response)[-1]
    assert Backup.objects.get(pk=running.pk).cancel_requested

    done = catalog_row(target)
    response = signed_in.post(f"/backups/{done.id}/cancel/")
    assert "already completed" in flashes(response)[-1]


@pytest.mark.django_db(transaction=True)
def test_delete_asks_for_confirmation_then_deletes(signed_in, target, default_key, backup_dir):
    backup = completed_backup(target)
    confirm = signed_in.get(f"/backups/{backup.id}/delete/")
    assert b"cannot be undone" in confirm.content and Backup.objects.filter(pk=backup.id).exists()

    response = signed_in.post(f"/backups/{backup.id}/delete/", follow=True)
    assert response.redirect_chain == [("/", 302)]
    assert f"Backup {backup.id} deleted." in response.content.decode()
    assert not Backup.objects.filter(pk=backup.id).exists() and not (backup_dir / backup.storage_key).exists()

    running = catalog_row(target, status=JobStatus.RUNNING)
    response = signed_in.post(f"/backups/{running.id}/delete/")
    assert response.url == f"/backups/{running.id}/" and "cancel it before deleting" in flashes(response)[-1]
