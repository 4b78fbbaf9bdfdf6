"""The JSON API: authentication, the catalog, queued work, a real worker, targets and the schema."""

import base64
import io
import json
import sqlite3
import stat
from datetime import datetime, timedelta, timezone

import django_rq
import pytest
from django.core.management import CommandError, call_command
from knox.models import AuthToken
from rest_framework.test import APIClient
from rq.job import Job


from backups.models import AuditEvent, Backup, JobStatus
from verification.models import VerificationRun
from backups.services.catalog import backup_summary
from backups.services.targets import add_target, get_target

from tests.helpers import catalog_row, completed_backup, wait_for

SECRET_PASSWORD = "hunter2-not-for-output"


@pytest.fixture
def api(admin_user) -> APIClient:
    client = APIClient()
    client.force_login(admin_user)
    return client


ENDPOINTS = [
    ("get", "/api/"),
    ("get", "/api/backups/"),
    ("post", "/api/backups/"),
    ("get", "/api/backups/backup_x/"),
    ("delete", "/api/backups/backup_x/"),
    ("post", "/api/backups/backup_x/verify/"),
    ("post", "/api/backups/backup_x/restore/"),
    ("post", "/api/backups/backup_x/cancel/"),
    ("get", "/api/verifications/1/"),
    ("post", "/api/verifications/1/cancel/"),
    ("get", "/api/restores/1/"),
    ("post", "/api/restores/1/cancel/"),
    ("get", "/api/targets/"),
    ("post", "/api/targets/"),
    ("get", "/api/targets/app/"),
    ("delete", "/api/targets/app/"),
    ("get", "/api/schema/"),
    ("post", "/api/auth/login/"),
    ("post", "/api/auth/logout/"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("method,url", ENDPOINTS)
def test_it_rejects_anonymous_requests_with_an_error_body(client, method, url):
    response = getattr(client, method)(url, HTTP_ACCEPT="application/json")
    assert response.status_code in (401, 403)
    assert "error" in response.json()


@pytest.mark.django_db
def test_a_bad_token_is_rejected(client, admin_user):
    response = client.get("/api/backups/", HTTP_AUTHORIZATION="Token " + "0" * 64)
    assert response.status_code == 401
    assert response.json() == {"error": "Invalid token."}


@pytest.mark.django_db
def test_a_token_from_the_api_token_command_works_until_revoked(client, admin_user):
    out, err = io.StringIO(), io.StringIO()
    call_command("api_token", "create", "--user", "admin", "--expiry-days", "7", stdout=out, stderr=err)
    token = out.getvalue().strip()
    stored = AuthToken.objects.get(user=admin_user)
    assert token and token not in stored.digest  # knox keeps a hash, not the token
    assert "shown only now" in err.getvalue()
    assert client.get("/api/backups/", HTTP_AUTHORIZATION=f"Token {token}").status_code == 200

    listing = io.StringIO()
    call_command("api_token", "list", stdout=listing)
    assert stored.token_key in listing.getvalue() and token not in listing.getvalue()
    assert not any(token in json.dumps(event.detail) for event in AuditEvent.objects.all())

    call_command("api_token", "revoke", stored.token_key, stdout=io.StringIO())
    assert client.get("/api/backups/", HTTP_AUTHORIZATION=f"Token {token}").status_code == 401
    assert AuditEvent.objects.filter(action="token.revoke").exists()


@pytest.mark.django_db
def test_the_api_token_command_revokes_all_of_a_users_tokens_and_names_unknown_users(admin_user):
    for _ in range(2):
        call_command("api_token", "create", "--user", "admin", stdout=io.StringIO(), stderr=io.StringIO())
    out = io.StringIO()
    call_command("api_token", "revoke", "--user", "admin", "--all", stdout=out)
    assert out.getvalue().strip() == "2 token(s) revoked" and not AuthToken.objects.exists()

    with pytest.raises(CommandError, match="no user named 'ghost'") as raised:
        call_command("api_token", "create", "--user", "ghost")
    assert raised.value.returncode == 3
    with pytest.raises(CommandError, match="say which token") as raised:
        call_command("api_token", "revoke")
    assert raised.value.returncode == 2


@pytest.mark.django_db
def test_the_login_endpoint_trades_a_password_for_a_token(client, admin_user):
    basic = "Basic " + base64.b64encode(b"admin:admin-test-password").decode()
    response = client.post("/api/auth/login/", HTTP_AUTHORIZATION=basic)
    assert response.status_code == 200
    token = response.json()["token"]
    assert response.json()["expiry"] is None
    assert client.get("/api/targets/", HTTP_AUTHORIZATION=f"Token {token}").status_code == 200
    assert AuditEvent.objects.filter(action="token.create", actor="admin", source="127.0.0.1").exists()

    assert client.post("/api/auth/logout/", HTTP_AUTHORIZATION=f"Token {token}").status_code == 204
    assert client.get("/api/targets/", HTTP_AUTHORIZATION=f"Token {token}").status_code == 401

    wrong = "Basic " + base64.b64encode(b"admin:wrong").decode()
    response = client.post("/api/auth/login/", HTTP_AUTHORIZATION=wrong)
    assert response.status_code == 401
    assert "error" in response.json()


@pytest.mark.django_db
def test_the_list_is_newest_first_paginated_and_filtered(api, target):
    pg = add_target("pg", "postgresql", "shop", host="db.example", port=5432, user="covet")
    day = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
    old = catalog_row(target, day - timedelta(days=2))
    failed = catalog_row(target, day, status=JobStatus.FAILED)
    shop = catalog_row(pg, day + timedelta(days=1))
    newest = catalog_row(pg, day + timedelta(days=2), database="crm")

    def ids(query=""):
        response = api.get(f"/api/backups/{query}")
        assert response.status_code == 200, response.content
        return [row["backup_id"] for row in response.json()["results"]]

    assert ids() == [newest.id, shop.id, failed.id, old.id]
    assert api.get("/api/backups/").json()["count"] == 4
    assert ids("?target=pg") == [newest.id, shop.id]
    assert ids("?database_type=sqlite") == [failed.id, old.id]
    assert ids("?database=crm") == [newest.id]
    assert ids("?status=failed") == [failed.id]
    assert ids("?created_after=2026-11-20") == [newest.id, shop.id, failed.id]
    assert ids("?created_before=2026-11-20") == [failed.id, old.id]  # a date includes its whole day
    assert ids("?created_after=2026-11-20T12:00:01Z&created_before=2026-11-22T11:59:59Z") == [shop.id]

    response = api.get("/api/backups/?created_after=last-tuesday")
    assert response.status_code == 400
    assert "created_after" in response.json()["fields"]

    Backup.objects.bulk_create(
        [Backup(target=target, database_name="x", storage=old.storage, compression="none", cipher="none",
                created_at=day - timedelta(days=30, seconds=i)) for i in range(60)])
    page = api.get("/api/backups/").json()
    assert page["count"] == 64 and len(page["results"]) == 50 and page["next"]


@pytest.mark.django_db(transaction=True)
def test_the_detail_has_all_metadata_progress_and_verifications_but_no_wrapped_keys(
        api, target, default_key, backup_dir):
    backup = completed_backup(target)
    VerificationRun.objects.create(backup=backup, requested_by="admin", status=JobStatus.COMPLETED)

    response = api.get(f"/api/backups/{backup.id}/")
    assert response.status_code == 200
    body = response.json()
    summary = backup_summary(backup)
    for key, value in summary.items():
        if not key.endswith("_at"):
            assert body[key] == value, key
    assert body["sha256"] == backup.sha256 and len(body["sha256"]) == 64
    assert body["storage_location"].endswith(f"{backup.id}.covet")
    assert body["key_source"] == {"kind": "keyfile", "path": str(default_key)}
    assert body["percent_done"] == 100.0 and body["bytes_done"] == backup.source_bytes
    assert body["initiated_by"] == "admin" and body["tags"] == {"env": "test"}
    assert [run["status"] for run in body["verifications"]] == ["completed"]
    assert "key_record" not in body and "wraps" not in json.dumps(body)

    response = api.get("/api/backups/backup_20000101_000000_000000/")
    assert response.status_code == 404
    assert "no backup with id" in response.json()["error"]


@pytest.mark.django_db(transaction=True)  # django-rq defers enqueueing to the commit of a test transaction
def test_posting_a_backup_queues_a_pending_job(api, target, default_key, clean_queues):
    response = api.post("/api/backups/", {"target": "app", "compression": "gzip", "tags": {"ticket": "42"}},
                        format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    backup = Backup.objects.get(pk=body["backup"]["backup_id"])
    assert backup.status == JobStatus.PENDING and backup.job_id == body["job_id"]
    assert (backup.compression, backup.cipher, backup.tags) == ("gzip", "aes-256-gcm", {"ticket": "42"})
    assert backup.initiated_by == "admin"

    queue = django_rq.get_queue("backups")
    assert body["job_id"] in queue.job_ids
    job = Job.fetch(body["job_id"], connection=queue.connection)
    assert job.func_name == "backups.jobs.run_backup_job" and job.args == (backup.id,)
    assert AuditEvent.objects.filter(action="backup.create", object_id=backup.id, actor="admin",
                                     source="127.0.0.1").exists()


@pytest.mark.django_db(transaction=True)  # django-rq defers enqueueing to the commit of a test transaction
def test_a_second_backup_of_a_target_while_one_runs_is_a_409(api, target, default_key, clean_queues):
    first = api.post("/api/backups/", {"target": "app"}, format="json").json()["backup"]["backup_id"]
    Backup.objects.filter(pk=first).update(status=JobStatus.RUNNING)

    response = api.post("/api/backups/", {"target": "app"}, format="json")
    assert response.status_code == 409
    assert first in response.json()["error"] and "still running" in response.json()["error"]
    assert Backup.objects.count() == 1


@pytest.mark.django_db
def test_bad_backup_requests_are_4xx_with_a_message(api, target, settings, tmp_path, clean_queues):
    settings.COVET_DEFAULT_KEY_FILE = tmp_path / "missing.key"
    response = api.post("/api/backups/", {"target": "app"}, format="json")
    assert response.status_code == 400
    assert "default key file" in response.json()["error"]

    response = api.post("/api/backups/", {"target": "nope", "compression": "rar"}, format="json")
    assert response.status_code == 400
    assert set(response.json()["fields"]) == {"target", "compression"}
    assert not Backup.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_the_backup_its_verification_and_a_restore(
        api, target, default_key, backup_dir, rq_worker, tmp_path):
    rq_worker()
    backup_id = api.post("/api/backups/", {"target": "app"}, format="json").json()["backup"]["backup_id"]

    def finished(url):
        body = api.get(url).json()
        return body if body["status"] not in ("pending", "running") else None

    body = wait_for(lambda: finished(f"/api/backups/{backup_id}/"), timeout=30, message="the backup")
    assert body["status"] == "completed", body["error"]
    assert body["stored_bytes"] > 0 and body["percent_done"] == 100.0

    response = api.post(f"/api/backups/{backup_id}/verify/")
    assert response.status_code == 202
    run = wait_for(lambda: finished(f"/api/verifications/{response.json()['verification_id']}/"),
                   timeout=30, message="the verification")
    assert run["status"] == "completed", run["error"]
    assert all(check["ok"] for check in run["checks"].values()) and "checksum" in run["checks"]

    restored = tmp_path / "restored.sqlite3"
    response = api.post(f"/api/backups/{backup_id}/restore/", {"target_database": str(restored)}, format="json")
    assert response.status_code == 202
    restore = wait_for(lambda: finished(f"/api/restores/{response.json()['restore_id']}/"),
                       timeout=30, message="the restore")
    assert restore["status"] == "completed", restore["error"]
    with sqlite3.connect(restored) as conn:
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (5000,)


@pytest.mark.django_db(transaction=True)  # django-rq defers enqueueing to the commit of a test transaction
def test_cancelling_a_pending_backup_takes_it_off_the_queue(api, target, default_key, clean_queues):
    body = api.post("/api/backups/", {"target": "app"}, format="json").json()
    backup_id = body["backup"]["backup_id"]

    response = api.post(f"/api/backups/{backup_id}/cancel/")
    assert response.status_code == 200
    assert "cancelled" in response.json()["message"]
    assert Backup.objects.get(pk=backup_id).status == JobStatus.CANCELLED
    assert body["job_id"] not in django_rq.get_queue("backups").job_ids
    assert AuditEvent.objects.filter(action="backup.cancel", object_id=backup_id, actor="admin").exists()

    again = api.post(f"/api/backups/{backup_id}/cancel/")
    assert again.status_code == 400 and "already cancelled" in again.json()["error"]


@pytest.mark.django_db
def test_verifications_and_restores_can_be_read_and_cancelled(api, target):
    backup = catalog_row(target)
    run = VerificationRun.objects.create(backup=backup, requested_by="admin", status=JobStatus.RUNNING)
    assert api.get(f"/api/verifications/{run.pk}/").json()["status"] == "running"
    response = api.post(f"/api/verifications/{run.pk}/cancel/")
    assert response.status_code == 200 and "next heartbeat" in response.json()["message"]
    assert VerificationRun.objects.get(pk=run.pk).cancel_requested

    assert api.get("/api/restores/999/").status_code == 404
    assert api.post("/api/restores/999/cancel/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_deleting_a_backup_removes_object_and_row(api, target, default_key, backup_dir):
    backup = completed_backup(target)
    stored = backup_dir / backup.storage_key
    assert stored.exists()

    assert api.delete(f"/api/backups/{backup.id}/").status_code == 204
    assert not stored.exists() and not Backup.objects.filter(pk=backup.id).exists()
    assert AuditEvent.objects.filter(action="backup.delete", object_id=backup.id, actor="admin").exists()

    running = catalog_row(target, status=JobStatus.RUNNING)
    response = api.delete(f"/api/backups/{running.id}/")
    assert response.status_code == 409 and "cancel it before deleting" in response.json()["error"]


@pytest.mark.django_db
def test_the_openapi_schema_describes_every_endpoint_and_the_backup_shape(api, target):
    response = api.get("/api/schema/?format=json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert {"/api/backups/", "/api/backups/{id}/", "/api/backups/{id}/verify/", "/api/backups/{id}/restore/",
            "/api/backups/{id}/cancel/", "/api/verifications/{id}/", "/api/restores/{id}/", "/api/targets/",
            "/api/targets/{name}/", "/api/auth/login/", "/api/auth/logout/"} <= set(schema["paths"])
    assert "409" in schema["paths"]["/api/backups/"]["post"]["responses"]
    filters = {p["name"] for p in schema["paths"]["/api/backups/"]["get"]["parameters"]}
    assert {"target", "database_type", "database", "status", "created_after", "created_before"} <= filters

    body = api.get(f"/api/backups/{catalog_row(target).id}/").json()
    assert set(schema["components"]["schemas"]["Backup"]["properties"]) == set(body)
    password = schema["components"]["schemas"]["Target"]["properties"].get("password", {})
    assert password.get("writeOnly") is True


@pytest.mark.django_db
def test_a_target_password_goes_to_a_0600_file_and_never_comes_back(api, settings, tmp_path, sample_sqlite):
    settings.COVET_SECRETS_DIR = tmp_path / "secrets"
    response = api.post("/api/targets/", {"name": "shop", "engine": "postgresql", "database": "shop",
                                          "host": "db.example", "port": 5432, "user": "covet",
                                          "password": SECRET_PASSWORD}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["has_password"] is True and "password" not in response.json()
    assert SECRET_PASSWORD not in response.content.decode()

    path = settings.COVET_SECRETS_DIR / "target-shop.password"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == SECRET_PASSWORD
    for url in ("/api/targets/", "/api/targets/shop/"):
        assert SECRET_PASSWORD not in api.get(url).content.decode()
    event = AuditEvent.objects.get(action="target.add", object_id="shop")
    assert event.actor == "admin" and SECRET_PASSWORD not in json.dumps(event.detail)

    response = api.post("/api/targets/", {"name": "app", "engine": "sqlite", "database": str(sample_sqlite)},
                        format="json")
    assert response.status_code == 201 and response.json()["has_password"] is False
    catalog_row(get_target("app"))
    response = api.delete("/api/targets/app/")
    assert response.status_code == 400 and "still has 1 backup" in response.json()["error"]
    assert api.delete("/api/targets/shop/").status_code == 204
    assert AuditEvent.objects.filter(action="target.remove", object_id="shop", actor="admin").exists()


@pytest.mark.django_db(transaction=True)
def test_a_restore_request_carries_its_options(api, target, clean_queues, tmp_path):
    backup = catalog_row(target)
    response = api.post(f"/api/backups/{backup.id}/restore/",
                        {"target_database": str(tmp_path / "new.db"), "clean": True, "parallel": 2},
                        format="json")
    assert response.status_code == 202, response.json()
    options = response.json()["restore"]["options"]
    assert options == {"clean": True, "tables": [], "with_globals": False, "parallel": 2, "without_binlog": False}
    response = api.post(f"/api/backups/{backup.id}/restore/", {"target_database": "x", "parallel": 0},
                        format="json")
    assert response.status_code == 400
    response = api.post(f"/api/backups/{backup.id}/restore/", {"target_database": "x", "with_globals": True},
                        format="json")
    assert response.status_code == 400 and "no globals" in response.json()["error"]
