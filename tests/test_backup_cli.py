"""backup_database, restore_database and verify_backups as operators run them: real processes, exit codes."""

import json
import sqlite3

import pytest

from backups.models import AuditEvent, Backup


def rows(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT id, name, email, balance FROM customers ORDER BY id").fetchall()
    finally:
        conn.close()


def backup(cli, db, *extra, env=None):
    result = cli("backup_database", "--database", "sqlite", "--name", str(db), "--output-format", "json", *extra,
                 env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_backup_restore_and_verify_round_trip(cli, sample_sqlite, default_key, backup_dir, tmp_path):
    out = backup(cli, sample_sqlite, "--tags", "env=test,team=db", "--retention-days", "7")
    for field in ("backup_id", "status", "database_type", "database_name", "source_bytes", "stored_bytes",
                  "compression_ratio", "sha256", "storage_location", "duration_seconds"):
        assert field in out
    assert out["status"] == "completed"
    assert out["database_type"] == "sqlite"
    assert out["storage_location"].startswith("file://")
    stored = backup_dir.joinpath(out["storage_location"].split(str(backup_dir) + "/", 1)[1])
    assert stored.exists() and stored.with_suffix(".json").exists()
    assert b"customer 1" not in stored.read_bytes()  # encrypted by default

    restored = tmp_path / "restored.sqlite3"
    result = cli("restore_database", "--backup-id", out["backup_id"], "--target-database", str(restored))
    assert result.returncode == 0, result.stderr
    assert rows(restored) == rows(sample_sqlite)

    result = cli("verify_backups", "--backup-id", out["backup_id"])
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    backup_row = Backup.objects.get(pk=out["backup_id"])
    assert backup_row.tags == {"env": "test", "team": "db"}
    assert backup_row.expires_at is not None
    actions = set(AuditEvent.objects.filter(object_id=out["backup_id"]).values_list("action", flat=True))
    assert {"backup.create", "backup.run", "backup.restore", "backup.verify"} <= actions


@pytest.mark.parametrize("codec,cipher", [("gzip", "chacha20-poly1305"), ("lz4", "aes-256-cbc"),
                                          ("bzip2", "none"), ("none", "aes-256-gcm")])
def test_every_codec_and_cipher_restores(cli, sample_sqlite, default_key, backup_dir, tmp_path, codec, cipher):
    out = backup(cli, sample_sqlite, "--compress", codec, "--encrypt", cipher)
    restored = tmp_path / "r.sqlite3"
    result = cli("restore_database", "--backup-id", out["backup_id"], "--target-database", str(restored))
    assert result.returncode == 0, result.stderr
    assert rows(restored) == rows(sample_sqlite)


def test_a_passphrase_backup_needs_the_passphrase(cli, sample_sqlite, passphrase_file, backup_dir, tmp_path):
    out = backup(cli, sample_sqlite, "--encryption-password-file", str(passphrase_file))
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase\n")
    result = cli("restore_database", "--backup-id", out["backup_id"], "--target-database", str(tmp_path / "x.db"),
                 "--encryption-password-file", str(wrong))
    assert result.returncode == 2
    assert "passphrase or key file" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.db").exists()
    result = cli("restore_database", "--backup-id", out["backup_id"], "--target-database", str(tmp_path / "x.db"),
                 "--encryption-password-file", str(passphrase_file))
    assert result.returncode == 0, result.stderr


def test_decryption_falls_back_to_the_environment_then_the_catalog(cli, sample_sqlite, key_file, backup_dir,
                                                                    tmp_path):
    out = backup(cli, sample_sqlite, env={"COVET_KEY_FILE": str(key_file)})
    assert Backup.objects.get(pk=out["backup_id"]).key_source == {"kind": "keyfile", "path": str(key_file)}
    result = cli("verify_backups", "--backup-id", out["backup_id"])  # no flag, no env: the catalog's reference
    assert result.returncode == 0, result.stderr
    moved = tmp_path / "moved.key"
    key_file.rename(moved)
    moved.chmod(0o600)
    result = cli("verify_backups", "--backup-id", out["backup_id"])
    assert result.returncode == 2
    assert out["backup_id"] in result.stderr and "--key-file" in result.stderr
    result = cli("verify_backups", "--backup-id", out["backup_id"], env={"COVET_KEY_FILE": str(moved)})
    assert result.returncode == 0, result.stderr


def test_a_missing_database_file_exits_3(cli, default_key, backup_dir, tmp_path):
    result = cli("backup_database", "--database", "sqlite", "--name", str(tmp_path / "nope.db"))
    assert result.returncode == 3
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    failed = Backup.objects.get()
    assert failed.status == "failed" and "does not exist" in failed.error
    assert not [p for p in backup_dir.rglob("*") if p.is_file()]


def test_an_unknown_backup_id_exits_3(cli):
    result = cli("restore_database", "--backup-id", "backup_20000101_000000_000000", "--target-database", "/tmp/x")
    assert result.returncode == 3
    assert "no backup with id" in result.stderr
    assert cli("verify_backups", "--backup-id", "nope").returncode == 3


def test_a_bad_flag_exits_2(cli):
    result = cli("backup_database", "--compress", "rar")
    assert result.returncode == 2


def test_an_altered_object_fails_verification_with_exit_4(cli, sample_sqlite, default_key, backup_dir, tmp_path):
    out = backup(cli, sample_sqlite)
    stored = next(p for p in backup_dir.rglob("*.covet"))
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    result = cli("verify_backups", "--all")
    assert result.returncode == 4
    assert out["backup_id"] in result.stderr or out["backup_id"] in result.stdout
    assert "frame" in result.stdout + result.stderr
    result = cli("restore_database", "--backup-id", out["backup_id"], "--target-database", str(tmp_path / "r.db"))
    assert result.returncode == 4
    assert not list(tmp_path.glob("*r.db*"))  # no target, no temporary file left


def test_restore_refuses_to_overwrite_an_existing_file(cli, sample_sqlite, default_key, backup_dir):
    out = backup(cli, sample_sqlite)
    result = cli("restore_database", "--backup-id", out["backup_id"], "--target-database", str(sample_sqlite))
    assert result.returncode == 2
    assert "already exists" in result.stderr


def test_download_only_writes_the_plain_database(cli, sample_sqlite, default_key, backup_dir, tmp_path):
    out = backup(cli, sample_sqlite, "--compress", "zstd", "--compress-level", "9")
    outdir = tmp_path / "dl"
    outdir.mkdir()
    result = cli("restore_database", "--backup-id", out["backup_id"], "--download-only", "--output-dir", str(outdir))
    assert result.returncode == 0, result.stderr
    (downloaded,) = outdir.iterdir()
    assert rows(downloaded) == rows(sample_sqlite)


def test_unencrypted_needs_encrypt_none_and_no_key(cli, sample_sqlite, backup_dir, settings, tmp_path):
    settings.COVET_DEFAULT_KEY_FILE = tmp_path / "absent.key"
    result = cli("backup_database", "--database", "sqlite", "--name", str(sample_sqlite))
    assert result.returncode == 2
    assert "--encrypt none" in result.stderr
    out = backup(cli, sample_sqlite, "--encrypt", "none")
    assert out["status"] == "completed"


def test_prometheus_output(cli, sample_sqlite, default_key, backup_dir):
    result = cli("backup_database", "--database", "sqlite", "--name", str(sample_sqlite), "--output-format",
                 "prometheus")
    assert result.returncode == 0, result.stderr
    assert "covet_backup_success{" in result.stdout and "} 1" in result.stdout


def test_no_progress_bar_on_a_pipe(cli, sample_sqlite, default_key, backup_dir):
    result = cli("backup_database", "--database", "sqlite", "--name", str(sample_sqlite))
    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout.startswith("backup backup_")


def test_target_commands_register_list_and_remove(cli, sample_sqlite, tmp_path):
    password = tmp_path / "pw"
    password.write_text("s3cret-value")
    result = cli("target", "add", "app", "--database", "sqlite", "--name", str(sample_sqlite),
                 "--password-file", str(password))
    assert result.returncode == 0, result.stderr
    listing = cli("target", "list", "--output-format", "json")
    assert json.loads(listing.stdout)[0]["name"] == "app"
    assert "s3cret-value" not in listing.stdout
    assert cli("target", "add", "app", "--database", "sqlite", "--name", "x").returncode == 2
    assert cli("target", "remove", "app").returncode == 0
    assert cli("target", "remove", "app").returncode == 3


def test_a_restore_compares_row_counts_with_the_manifest(cli, sample_sqlite, default_key, backup_dir, tmp_path):
    out = backup(cli, sample_sqlite)
    row = Backup.objects.get(pk=out["backup_id"])
    assert row.manifest == {"tables": {"main.customers": {"rows": 5000, "exact": True}}, "consistent": True}
    result = cli("restore_database", "--backup-id", row.id, "--target-database", str(tmp_path / "a.db"))
    assert result.returncode == 0, result.stderr
    assert "row counts match the backup's manifest for 1 table(s)" in result.stdout

    row.manifest["tables"]["main.customers"]["rows"] = 5001  # as if the restore had lost a row
    row.save()
    result = cli("restore_database", "--backup-id", row.id, "--target-database", str(tmp_path / "b.db"))
    assert result.returncode == 4
    assert "main.customers: 5001 in the backup, 5000 restored" in result.stderr


def test_clean_replaces_an_existing_file_only_after_authenticating(cli, sample_sqlite, default_key, backup_dir,
                                                                  tmp_path):
    out = backup(cli, sample_sqlite)
    existing = tmp_path / "existing.db"
    existing.write_bytes(b"precious")
    stored = next(p for p in backup_dir.rglob("*.covet"))
    good = stored.read_bytes()
    stored.write_bytes(good[:-10] + bytes(b ^ 1 for b in good[-10:]))
    result = cli("restore_database", "--backup-id", out["backup_id"], "--target-database", str(existing), "--clean")
    assert result.returncode == 4
    assert existing.read_bytes() == b"precious"
    stored.write_bytes(good)
    result = cli("restore_database", "--backup-id", out["backup_id"], "--target-database", str(existing), "--clean")
    assert result.returncode == 0, result.stderr
    assert rows(existing) == rows(sample_sqlite)
