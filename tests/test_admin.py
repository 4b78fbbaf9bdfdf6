"""The Django admin: every model listed with its columns and filters; a password set there is never stored in clear."""

import stat
from pathlib import Path

import pytest

from backups.models import DatabaseTarget

pytestmark = pytest.mark.django_db

MODELS = ["backups/databasetarget", "backups/storage", "backups/backuppolicy", "backups/backup", "backups/backupcopy",
          "backups/archivedlog", "backups/auditevent", "restores/restorerequest", "verification/verificationrun"]


@pytest.mark.parametrize("model", MODELS)
def test_every_catalog_model_has_an_admin_list(admin_client, model):
    response = admin_client.get(f"/admin/{model}/")
    assert response.status_code == 200


def test_anonymous_users_are_sent_to_the_login(client):
    response = client.get("/admin/backups/backup/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_a_password_set_in_the_admin_goes_to_a_0600_file_and_is_never_shown(admin_client, settings, tmp_path):
    settings.COVET_SECRETS_DIR = tmp_path / "secrets"
    response = admin_client.post("/admin/backups/databasetarget/add/", {
        "name": "pg1", "engine": "postgresql", "host": "127.0.0.1", "port": "5432", "user": "backup",
        "database": "shop", "password": "hunter2-very-secret", "password_ref": "", "os_user": "",
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    target = DatabaseTarget.objects.get(name="pg1")
    assert target.password_ref.startswith("file:")
    path = Path(target.password_ref[5:])
    assert path.read_text() == "hunter2-very-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "hunter2" not in str(DatabaseTarget.objects.filter(pk=target.pk).values().get())
    page = admin_client.get(f"/admin/backups/databasetarget/{target.pk}/change/").content.decode()
    assert "hunter2" not in page
