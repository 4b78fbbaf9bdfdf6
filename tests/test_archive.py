"""The WAL/binlog archive: one key per target, never overwritten, fetched authenticated; ranges and gaps."""

import io

import pytest

from archiving.services import archive
from covet.errors import DamagedError, UsageError
from covet.engines import pg_wal
from backups.models import ArchivedLog, DatabaseTarget
from archiving.services.windows import wal_gaps, wal_ranges

pytestmark = pytest.mark.django_db


@pytest.fixture
def pg_target(default_key, backup_dir):
    target = DatabaseTarget.objects.create(name="pg-main", engine="postgresql", host="127.0.0.1", port=5432)
    return archive.enable_pitr(target)


def segment(seed: int) -> bytes:
    return bytes((seed * 7 + i) % 251 for i in range(64 * 1024))


def test_enable_pitr_creates_one_key_recorded_in_storage(pg_target):
    key_id = pg_target.archive_key["key_id"]
    backend = archive.storage_backend(archive.archive_storage(pg_target))
    assert backend.stat(f"postgresql/pg-main/keys/{key_id}.json").size > 0
    again = archive.enable_pitr(pg_target)
    assert again.archive_key["key_id"] == key_id


def test_store_is_idempotent_and_refuses_other_content(pg_target):
    store = archive.Archive(pg_target)
    row, stored = store.store("000000010000000000000003", io.BytesIO(segment(1)), 1)
    assert stored and row.storage_key == "postgresql/pg-main/wal/00000001/000000010000000000000003.covet"
    again, stored = store.store("000000010000000000000003", io.BytesIO(segment(1)), 1)
    assert not stored and again.pk == row.pk
    with pytest.raises(archive.ArchiveConflictError, match="never overwritten"):
        store.store("000000010000000000000003", io.BytesIO(segment(2)), 1)
    assert ArchivedLog.objects.count() == 1


def test_object_without_row_is_adopted_not_overwritten(pg_target, tmp_path):
    store = archive.Archive(pg_target)
    row, _ = store.store("000000010000000000000004", io.BytesIO(segment(4)), 1)
    row.delete()
    with pytest.raises(archive.ArchiveConflictError):
        store.store("000000010000000000000004", io.BytesIO(segment(5)), 1)
    adopted, stored = store.store("000000010000000000000004", io.BytesIO(segment(4)), 1)
    assert not stored and adopted.plaintext_sha256
    out = tmp_path / "seg"
    store.fetch(adopted, out)
    assert out.read_bytes() == segment(4)


def test_fetch_refuses_an_altered_object_and_leaves_nothing(pg_target, backup_dir, tmp_path):
    store = archive.Archive(pg_target)
    row, _ = store.store("000000010000000000000005", io.BytesIO(segment(5)), 1)
    path = backup_dir / row.storage_key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    spool = tmp_path / "spool"
    spool.mkdir()
    with pytest.raises(DamagedError, match="000000010000000000000005"):
        store.fetch(row, spool / "seg")
    assert list(spool.iterdir()) == []
    path.unlink()
    with pytest.raises(DamagedError, match="missing"):
        store.fetch(row, spool / "seg")


def test_staging_checks_the_stored_digest_and_the_key_and_decoding_the_copy_gives_the_segment(pg_target, backup_dir,
                                                                                                  tmp_path):
    store = archive.Archive(pg_target)
    row, _ = store.store("000000010000000000000006", io.BytesIO(segment(6)), 1)
    staged, decoded = tmp_path / "seg.stored", tmp_path / "seg"
    store.stage(row, staged)
    assert staged.read_bytes() == (backup_dir / row.storage_key).read_bytes()
    store.decode_staged(row, staged, decoded)
    assert decoded.read_bytes() == segment(6)

    altered = bytearray((backup_dir / row.storage_key).read_bytes())
    altered[-10] ^= 1  # inside the last frame: only the digest can tell before decoding
    (backup_dir / row.storage_key).write_bytes(bytes(altered))
    with pytest.raises(DamagedError, match="000000010000000000000006: the stored object's SHA-256 differs"):
        store.stage(row, tmp_path / "again.stored")
    assert not (tmp_path / "again.stored").exists()

    other, _ = store.store("000000010000000000000007", io.BytesIO(segment(7)), 1)
    store.key_id, store.data_key = "0" * 32, b"\0" * 32  # as if the catalog named another archive key
    with pytest.raises(DamagedError, match="000000010000000000000007 cannot be used: .*data key"):
        store.stage(other, tmp_path / "other.stored")
    assert not (tmp_path / "other.stored").exists()


def test_ranges_and_gaps(pg_target):
    store = archive.Archive(pg_target)
    for number in (1, 2, 3, 6, 7, 0x100, 0xFF):
        name = pg_wal.segment_name(1, number)
        store.store(name, io.BytesIO(name.encode()), 1)
    assert wal_ranges(pg_target) == {1: [(1, 3), (6, 7), (0xFF, 0x100)]}
    assert wal_gaps(pg_target)[0] == {"timeline": 1, "first_missing": "000000010000000000000004",
                                              "last_missing": "000000010000000000000005"}


def test_archive_needs_pitr_enabled(default_key, backup_dir):
    target = DatabaseTarget.objects.create(name="plain", engine="postgresql")
    with pytest.raises(UsageError, match="setup_pitr"):
        archive.Archive(target)


def test_recovery_path_follows_timeline_history():
    history = pg_wal.parse_history("1\t0/3000098\tno recovery target specified\n\n2\t0/5000000\tbefore x\n")
    path = pg_wal.recovery_path(1, pg_wal.parse_lsn("0/2000028"), 3, history)
    assert path == [pg_wal.Stretch(1, 2, 2), pg_wal.Stretch(2, 3, 4), pg_wal.Stretch(3, 5, None)]
    assert pg_wal.recovery_path(1, 0x2000028, 1, []) == [pg_wal.Stretch(1, 2, None)]


def test_rebuild_catalog_restores_the_archive_key_and_archived_files(pg_target):
    from archiving.services.rebuild import rebuild_catalog

    store = archive.Archive(pg_target)
    names = [pg_wal.segment_name(1, n) for n in (1, 2)] + ["00000002.history"]
    for name in names:
        store.store(name, io.BytesIO(name.encode() * 50), pg_wal.timeline_of(name))
    before = {row.name: (row.sha256, row.plaintext_sha256, row.size) for row in ArchivedLog.objects.all()}
    key_id, storage = pg_target.archive_key["key_id"], archive.archive_storage(pg_target)
    ArchivedLog.objects.all().delete()
    pg_target.delete()

    report = rebuild_catalog(storage)
    assert sorted(report.archived) == sorted(names) and not report.problems
    target = DatabaseTarget.objects.get(name="pg-main")
    assert target.pitr_enabled and target.archive_key["key_id"] == key_id
    assert {row.name: (row.sha256, row.plaintext_sha256, row.size) for row in ArchivedLog.objects.all()} == before
    again = rebuild_catalog(storage)
    assert again.archived == [] and ArchivedLog.objects.count() == 3
    archive.Archive(target).store(names[0], io.BytesIO(names[0].encode() * 50), 1)  # still idempotent
