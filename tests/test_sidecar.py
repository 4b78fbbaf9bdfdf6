"""The sidecar alone, with the key file, is enough to restore a backup: no catalog needed."""

import json
import sqlite3

import pytest


from backups.models import Backup
from covet.pipeline import crypto
from covet.pipeline.container import DecodingStream
from backups.services.runs import BackupRequest, create_backup, run_backup
from backups.services.targets import adhoc_target

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_backup_restores_from_its_sidecar_and_the_key_alone(sample_sqlite, key_file, backup_dir, tmp_path):
    target = adhoc_target("sqlite", str(sample_sqlite))
    backup = create_backup(BackupRequest(target=target, key_file=str(key_file)))
    backup = run_backup(backup.id)
    Backup.objects.all().delete()  # the catalog is gone

    (sidecar_path,) = backup_dir.rglob("*.json")
    meta = json.loads(sidecar_path.read_text())
    assert meta["backup_id"] == backup.id and meta["target"]["engine"] == "sqlite"
    assert "wraps" in meta["key_record"] and str(key_file) == meta["key_source"]["path"]
    data_key = crypto.unwrap_key_record(meta["key_record"], [crypto.load_key_file(key_file)])
    with open(backup_dir / meta["object_key"], "rb") as stored:
        plain = DecodingStream(stored, lambda header: data_key).read()
    restored = tmp_path / "restored.sqlite3"
    restored.write_bytes(plain)
    query = "SELECT * FROM customers ORDER BY id"
    assert sqlite3.connect(restored).execute(query).fetchall() == sqlite3.connect(sample_sqlite).execute(query).fetchall()
    assert len(plain) == meta["source_bytes"]
