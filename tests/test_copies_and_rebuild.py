"""Secondary copies (3-2-1), restores that fall back to a healthy copy, and a catalog rebuilt from storage."""

import json
import shutil
import sqlite3

import pytest

from backups.models import AuditEvent, Backup, BackupCopy, DatabaseTarget, Storage

pytestmark = pytest.mark.django_db(transaction=True)
QUERY = "SELECT * FROM customers ORDER BY id"


def rows(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(QUERY).fetchall()
    finally:
        conn.close()


@pytest.fixture
def offsite(cli, tmp_path):
    result = cli("storage", "add", "offsite", "local", f"root={tmp_path / 'offsite'}")
    assert result.returncode == 0, result.stderr
    return tmp_path / "offsite"


def backup(cli, db, *extra):
    result = cli("backup_database", "--database", "sqlite", "--name", str(db), "--output-format", "json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def stored_files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_a_backup_is_copied_to_the_second_storage(cli, sample_sqlite, default_key, backup_dir, offsite):
    out = backup(cli, sample_sqlite, "--copy-to", "offsite")
    assert out["copies"] == [{"storage": "offsite", "state": "ok", "error": ""}]
    assert stored_files(offsite) == stored_files(backup_dir)
    assert any(name.endswith(".covet") for name in stored_files(offsite))
    assert any(name.endswith(".json") for name in stored_files(offsite))


@pytest.mark.parametrize("damage", ["missing", "altered"])
def test_a_restore_falls_back_to_a_healthy_copy(cli, sample_sqlite, default_key, backup_dir, offsite, tmp_path,
                                                damage):
    out = backup(cli, sample_sqlite, "--copy-to", "offsite")
    primary = next(backup_dir.rglob("*.covet"))
    if damage == "missing":
        primary.unlink()
    else:
        data = bytearray(primary.read_bytes())
        data[len(data) // 2] ^= 0x40
        primary.write_bytes(bytes(data))
    target = tmp_path / "restored.sqlite3"
    result = cli("restore_database", "--backup-id", out["backup_id"], "--target-database", str(target),
                 "--output-format", "json")
    assert result.returncode == 0, result.stderr
    restored = json.loads(result.stdout)
    assert restored["read_from"] == "offsite"
    assert restored["fallbacks"][0]["storage"] == "default"
    assert rows(target) == rows(sample_sqlite)
    assert AuditEvent.objects.filter(action="backup.location_bad", object_id=out["backup_id"]).exists()


def test_a_damaged_copy_is_marked_and_the_primary_still_serves(cli, sample_sqlite, default_key, backup_dir, offsite,
                                                               tmp_path):
    out = backup(cli, sample_sqlite, "--copy-to", "offsite")
    next(backup_dir.rglob("*.covet")).unlink()
    copy = next(offsite.rglob("*.covet"))
    copy.write_bytes(copy.read_bytes()[:-100])
    result = cli("restore_database", "--backup-id", out["backup_id"], "--target-database", str(tmp_path / "x.db"))
    assert result.returncode == 4  # the last copy's damage is the error
    assert not (tmp_path / "x.db").exists()


def test_a_failed_copy_is_recorded_and_the_backup_stays_completed(cli, sample_sqlite, default_key, backup_dir,
                                                                  tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the storage root should be")
    assert cli("storage", "add", "broken", "local", f"root={blocker / 'sub'}").returncode == 0
    out = backup(cli, sample_sqlite, "--copy-to", "broken")
    assert out["status"] == "completed"
    assert out["copies"][0]["state"] == "failed" and "cannot write" in out["copies"][0]["error"]


def test_rebuild_catalog_recreates_missing_rows_and_is_idempotent(cli, sample_sqlite, default_key, backup_dir):
    first = backup(cli, sample_sqlite, "--tags", "env=prod")
    second = backup(cli, sample_sqlite, "--compress", "lz4")
    kept = Backup.objects.get(pk=second["backup_id"])
    kept.tags = {"edited": "in the catalog"}
    kept.save()
    originals = {b.pk: b for b in Backup.objects.all()}
    Backup.objects.filter(pk=first["backup_id"]).delete()

    result = cli("rebuild_catalog", "--storage", "default", "--output-format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["created"] == [first["backup_id"]] and report["existing"] == [second["backup_id"]]
    rebuilt = Backup.objects.get(pk=first["backup_id"])
    original = originals[first["backup_id"]]
    for field in ("sha256", "key_id", "key_record", "storage_key", "source_bytes", "stored_bytes", "compression",
                  "cipher", "tags", "manifest", "status"):
        assert getattr(rebuilt, field) == getattr(original, field), field
    assert Backup.objects.get(pk=second["backup_id"]).tags == {"edited": "in the catalog"}  # never overwritten

    again = json.loads(cli("rebuild_catalog", "--storage", "default", "--output-format", "json").stdout)
    assert again["created"] == [] and Backup.objects.count() == 2
    assert cli("verify_backups", "--backup-id", first["backup_id"]).returncode == 0


def test_rebuild_from_a_second_storage_records_the_copies(cli, sample_sqlite, default_key, backup_dir, offsite):
    out = backup(cli, sample_sqlite, "--copy-to", "offsite")
    BackupCopy.objects.all().delete()
    report = json.loads(cli("rebuild_catalog", "--storage", "offsite", "--output-format", "json").stdout)
    assert report["copies"] == [out["backup_id"]]
    assert BackupCopy.objects.get().state == "ok"


def test_disaster_recovery_from_storage_and_key_file_alone(cli, sample_sqlite, key_file, backup_dir, tmp_path):
    """The README's disaster steps: a new machine with an empty catalog, the storage and a copy of the key."""
    out = backup(cli, sample_sqlite, "--key-file", str(key_file))
    kept_key = tmp_path / "key-copy.key"
    shutil.copy(key_file, kept_key)
    kept_key.chmod(0o600)
    key_file.unlink()  # the old machine, and its key file, are gone
    Backup.objects.all().delete()
    DatabaseTarget.objects.all().delete()
    Storage.objects.all().delete()

    assert cli("storage", "add", "recovered", "local", f"root={backup_dir}").returncode == 0
    result = cli("rebuild_catalog", "--storage", "recovered")
    assert result.returncode == 0 and result.stdout.startswith("1 backup(s) added"), result.stderr
    target = tmp_path / "recovered.sqlite3"
    result = cli("restore_database", "--backup-id", out["backup_id"], "--target-database", str(target))
    assert result.returncode == 2 and "--key-file" in result.stderr  # the recorded key path is gone
    result = cli("restore_database", "--backup-id", out["backup_id"], "--target-database", str(target),
                 "--key-file", str(kept_key))
    assert result.returncode == 0, result.stderr
    assert rows(target) == rows(sample_sqlite)
