"""WAL leaving the server: the archive entry point, the shipper, setup_pitr, on real private clusters."""

import errno
import hashlib
import os
import pwd
import subprocess
import time

import pytest

from archiving.services import archive
from backups.models import ArchivedLog
from archiving import covet_wal
from archiving.services import paths
from archiving.services.windows import wal_gaps
from backups.services.storages import add_storage, storage_backend
from backups.services.targets import add_target
from tests.helpers import wait_for
from tests.wal_fixtures import ArchivingCluster, ShipperProcess, fetch, fetch_command, push, reachable_dir, remove

pytestmark = pytest.mark.django_db(transaction=True)

XLOG_PAGE_MAGIC = (0xD110).to_bytes(2, "little")  # PostgreSQL 15's WAL page header magic


@pytest.fixture
def run_dir():
    path = reachable_dir("covet-run-")
    yield path
    remove(path)


@pytest.fixture
def cluster():
    server = ArchivingCluster().start()
    yield server
    server.stop()


@pytest.fixture
def shippers(settings):
    started = []

    def start(target, socket_dir, *extra):
        shipper = ShipperProcess(settings, target.name, socket_dir, *extra)
        started.append(shipper)
        return shipper

    yield start
    for shipper in started:
        shipper.stop()


def pitr_target(name, port=5432, storage=None):
    target = add_target(name, "postgresql", "postgres", host="127.0.0.1", port=port, user="postgres")
    return archive.enable_pitr(target, storage=storage)


def archived(target, names):
    rows = ArchivedLog.objects.filter(target=target, name__in=names)
    return rows.count() == len(set(names)) and list(rows)


def segment_bytes(seed: int, size: int = 1024 * 1024) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (size // 32)


def test_segments_of_a_running_server_arrive_with_their_timeline(default_key, backup_dir, run_dir, cluster,
                                                                  shippers, tmp_path):
    target = pitr_target("pg-arch", cluster.port)
    shipper = shippers(target, run_dir)
    cluster.configure(archive_mode="on", archive_command=paths.archive_command(target, run_dir))
    names = cluster.switch_segments(4)

    rows = wait_for(lambda: archived(target, names), timeout=30, message=f"{names} archived")
    assert {row.timeline for row in rows} == {1}
    assert rows[0].storage_key == f"postgresql/pg-arch/wal/00000001/{rows[0].name}.covet"
    assert wal_gaps(target) == []
    assert cluster.archiver()["failed_count"] == 0
    out = tmp_path / "segment"
    archive.Archive(target).fetch(rows[-1], out)
    assert out.stat().st_size == 16 * 1024 * 1024 and out.read_bytes()[:2] == XLOG_PAGE_MAGIC
    target.refresh_from_db()
    status = wait_for(lambda: target.refresh_from_db() or target.archiver_status.get("archived", 0) >= 4 and
                      target.archiver_status, timeout=10, message="the shipper's heartbeat")
    assert status["running"] and status["failures"] == 0 and status["last_archived"]
    assert shipper.stop() == 0
    assert not shipper.socket.exists()


def test_storage_down_then_back_loses_nothing_and_stores_nothing_twice(default_key, backup_dir, run_dir, cluster,
                                                                        shippers, tmp_path):
    root = tmp_path / "wal-store"
    storage = add_storage("wal-store", "local", {"root": str(root)})
    target = pitr_target("pg-down", cluster.port, storage)
    shippers(target, run_dir)
    cluster.configure(archive_mode="on", archive_command=paths.archive_command(target, run_dir))
    before = cluster.switch_segments(2)
    wait_for(lambda: archived(target, before), timeout=30, message="segments archived before the outage")

    root.rename(tmp_path / "away")
    root.write_text("storage is down: a file where the directory was")
    during = cluster.switch_segments(3)
    wait_for(lambda: cluster.archiver()["failed_count"] > 0, timeout=30, message="PostgreSQL's archiver failing")
    status = wait_for(lambda: target.refresh_from_db() or target.archiver_status.get("failures") and
                      target.archiver_status, timeout=10, message="failures in the shipper's status")
    assert during[0] in status["last_error"] and status["ready_backlog"] >= 3
    assert not ArchivedLog.objects.filter(target=target, name__in=during).exists()

    root.unlink()
    (tmp_path / "away").rename(root)
    after = cluster.switch_segments(1)  # a new ready file wakes PostgreSQL's archiver at once
    every = before + during + after
    wait_for(lambda: archived(target, every), timeout=40, message="the backlog archived after the outage")

    assert wal_gaps(target) == []
    objects = [info.key for info in storage_backend(storage).list("postgresql/pg-down/wal/")]
    rows = ArchivedLog.objects.filter(target=target)
    assert sorted(objects) == sorted(rows.values_list("storage_key", flat=True))
    assert len(objects) == len(set(objects)) >= len(every)
    assert not [path for path in root.rglob(".*") if path.is_file()]  # no partial write left behind


def test_push_is_idempotent_refuses_other_content_and_reads_ahead(default_key, backup_dir, run_dir, shippers,
                                                                   tmp_path):
    target = pitr_target("pg-push")
    shipper = shippers(target, run_dir, "--read-ahead", "2")
    wal = tmp_path / "pg_wal"
    (wal / "archive_status").mkdir(parents=True)
    names = [f"0000000100000000000000{n:02X}" for n in range(0x10, 0x13)]
    for seed, name in enumerate(names):
        (wal / name).write_bytes(segment_bytes(seed))
        (wal / "archive_status" / f"{name}.ready").touch()

    first = push(target.name, shipper.socket, wal / names[0])
    assert (first.returncode, first.stderr) == (0, "")
    # The push of the first one started the next two ready ones without being asked.
    wait_for(lambda: archived(target, names), timeout=20, message="read-ahead of the ready segments")
    for name in names[1:]:
        assert push(target.name, shipper.socket, wal / name).returncode == 0
    again = push(target.name, shipper.socket, wal / names[0])
    assert (again.returncode, again.stderr) == (0, "")

    other = tmp_path / "other"
    other.mkdir()
    (other / names[0]).write_bytes(segment_bytes(99))
    conflict = push(target.name, shipper.socket, other / names[0])
    assert conflict.returncode == 4
    assert "never overwritten" in conflict.stderr and len(conflict.stderr.strip().splitlines()) == 1
    assert ArchivedLog.objects.filter(target=target).count() == len(names)

    (tmp_path / "00000002.history").write_text("1\t0/13000000\tno recovery target specified\n")
    assert push(target.name, shipper.socket, tmp_path / "00000002.history").returncode == 0
    assert ArchivedLog.objects.get(target=target, name="00000002.history").timeline == 2
    status = wait_for(lambda: target.refresh_from_db() or target.archiver_status.get("archived") == len(names) + 1
                      and target.archiver_status, timeout=10, message="every file counted in the status")
    assert status["read_ahead_hits"] >= 2 and status["failures"] == 1 and "never overwritten" in status["last_error"]


def test_push_fails_clearly_without_a_shipper_or_with_the_wrong_target(default_key, backup_dir, run_dir, shippers,
                                                                         tmp_path):
    target = pitr_target("pg-lonely")
    segment = tmp_path / "000000010000000000000001"
    segment.write_bytes(segment_bytes(1))
    missing = push(target.name, run_dir / "wal-pg-lonely.sock", segment)
    assert missing.returncode == 1 and "run_shipper --target pg-lonely" in missing.stderr
    shipper = shippers(target, run_dir)
    wrong = push("pg-other", shipper.socket, segment)
    assert wrong.returncode == 2 and "serves target pg-lonely, not pg-other" in wrong.stderr


def test_the_optional_queue_limit_drops_wal_when_the_backlog_is_over_it(default_key, backup_dir, run_dir,
                                                                         shippers, tmp_path):
    target = pitr_target("pg-queue")
    shipper = shippers(target, run_dir, "--queue-max", str(2 * 1024 * 1024), "--read-ahead", "0")
    wal = tmp_path / "pg_wal"
    (wal / "archive_status").mkdir(parents=True)
    names = [f"0000000100000000000000{n:02X}" for n in (1, 2, 3)]
    for seed, name in enumerate(names):
        (wal / name).write_bytes(segment_bytes(seed))
        (wal / "archive_status" / f"{name}.ready").touch()

    assert push(target.name, shipper.socket, wal / names[0]).returncode == 0  # 3 MiB ready > 2 MiB: dropped
    (wal / "archive_status" / f"{names[0]}.ready").rename(wal / "archive_status" / f"{names[0]}.done")
    assert push(target.name, shipper.socket, wal / names[1]).returncode == 0  # 2 MiB: not over, stored
    assert list(ArchivedLog.objects.filter(target=target).values_list("name", flat=True)) == [names[1]]
    status = wait_for(lambda: target.refresh_from_db() or target.archiver_status.get("dropped") and
                      target.archiver_status, timeout=10, message="the drop in the shipper's status")
    assert status["last_dropped"] == names[0]


def test_a_foreign_user_is_refused(default_key, backup_dir, run_dir, shippers):
    target = pitr_target("pg-guarded")
    shipper = shippers(target, run_dir)
    files = reachable_dir("covet-foreign-")
    try:
        segment = files / "000000010000000000000001"
        segment.write_bytes(segment_bytes(1))
        segment.chmod(0o644)
        refused = push(target.name, shipper.socket, segment, user="nobody")
    finally:
        remove(files)
    assert refused.returncode != 0
    assert f"uid {pwd.getpwnam('nobody').pw_uid} may not push" in refused.stderr
    assert not ArchivedLog.objects.filter(target=target).exists()


def test_fetch_copies_from_the_spool_and_is_quiet_about_missing_files(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "000000010000000000000003").write_bytes(segment_bytes(3))
    data = tmp_path / "pg_wal"
    data.mkdir()
    done = fetch(spool, "000000010000000000000003", data / "RECOVERYXLOG")
    assert done.returncode == 0 and (data / "RECOVERYXLOG").read_bytes() == segment_bytes(3)
    missing = fetch(spool, "00000002.history", data / "RECOVERYHISTORY")
    assert (missing.returncode, missing.stderr) == (1, "")
    assert sorted(p.name for p in data.iterdir()) == ["RECOVERYXLOG"]


def fifo_answer(fifo, proc):
    """Return the write end of ``fifo`` once ``proc`` has opened it to read (None before); fail if ``proc`` ended."""
    if proc.poll() is not None:
        pytest.fail(f"fetch ended (exit {proc.returncode}) before it waited: {proc.stderr.read()}")
    try:
        return os.fdopen(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK), "w")
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
            raise
        return None


def test_fetch_waits_for_a_staged_file_and_stops_recovery_when_it_cannot_come(tmp_path):
    """A staged file (NAME.stored) is waited for; a failed decode or a gone decoder exits 126 (PostgreSQL: FATAL)."""
    spool, data = tmp_path / "spool", tmp_path / "pg_wal"
    spool.mkdir()
    data.mkdir()
    name = "000000010000000000000004"
    (spool / (name + covet_wal.SPOOL_STAGED)).write_bytes(b"stored form")
    # fetch reads the decoder's pid file on each round of its wait, only after finding NAME absent and NAME.stored
    # there. As a FIFO the read is a handshake: once fetch holds it open it is waiting, and it waits on (blocked)
    # until it has the pid, so NAME appears while it waits however slowly either side is scheduled.
    decoder_pid = spool / covet_wal.SPOOL_DECODER
    os.mkfifo(decoder_pid)
    waiting = subprocess.Popen(fetch_command(spool, name, data / "RECOVERYXLOG"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        answer = wait_for(lambda: fifo_answer(decoder_pid, waiting), timeout=30, interval=0.01,
                          message="fetch to wait for the staged file")
        # As WalSpool._decode makes it appear: complete under another name, renamed in, then NAME.stored goes.
        decoded = spool / (name + ".decoded")
        decoded.write_bytes(segment_bytes(4))
        decoded_at = time.monotonic()
        decoded.rename(spool / name)
        (spool / (name + covet_wal.SPOOL_STAGED)).unlink()
        with answer:
            answer.write(str(os.getpid()))
        _, stderr = waiting.communicate(timeout=30)
        returned_at = time.monotonic()
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    decoder_pid.unlink()
    decoder_pid.write_text(str(os.getpid()))
    assert waiting.returncode == 0, stderr
    assert returned_at > decoded_at  # it waited for the file instead of calling it absent
    assert (data / "RECOVERYXLOG").read_bytes() == segment_bytes(4)

    other = "000000010000000000000005"
    (spool / (other + covet_wal.SPOOL_STAGED)).write_bytes(b"stored form")
    (spool / (other + covet_wal.SPOOL_FAILED)).write_text("frame 3 failed authentication")
    failed = fetch(spool, other, data / "RECOVERYXLOG")
    assert failed.returncode == covet_wal.EXIT_ABORT_RECOVERY == 126
    assert f"{other} could not be decoded: frame 3 failed authentication" in failed.stderr

    (spool / (other + covet_wal.SPOOL_FAILED)).unlink()
    gone = subprocess.Popen(["true"])
    gone.wait()
    (spool / covet_wal.SPOOL_DECODER).write_text(str(gone.pid))
    orphaned = fetch(spool, other, data / "RECOVERYXLOG")
    assert orphaned.returncode == 126 and "the restore decoding it is gone" in orphaned.stderr
    assert (data / "RECOVERYXLOG").read_bytes() == segment_bytes(4)  # never overwritten by a failed fetch

    unreadable = "000000010000000000000006"
    (spool / unreadable).mkdir()  # there, but cannot be copied: never "absent" (exit 1 would end recovery early)
    broken = fetch(spool, unreadable, data / "RECOVERYXLOG")
    assert broken.returncode == 126 and f"cannot copy {unreadable}" in broken.stderr


def test_setup_pitr_prints_applies_and_checks_the_whole_path(default_key, backup_dir, run_dir, cluster, shippers,
                                                              cli):
    target = add_target("pg-setup", "postgresql", "postgres", host="127.0.0.1", port=cluster.port,
                                 user="postgres")
    shown = cli("setup_pitr", "--target", "pg-setup", "--socket-dir", str(run_dir), "--archive-timeout", "30")
    assert shown.returncode == 0, shown.stderr
    command = (f"{os.path.realpath('/usr/bin/python3')} -I -S {paths.ENTRY_POINT} push --target pg-setup "
               f"--socket {run_dir}/wal-pg-setup.sock %p")
    assert f"  archive_command = '{command}'" in shown.stdout.splitlines()
    assert "  archive_timeout = '30s'" in shown.stdout.splitlines()

    applied = cli("setup_pitr", "--target", "pg-setup", "--socket-dir", str(run_dir), "--apply")
    assert applied.returncode == 0, applied.stderr
    assert "restart PostgreSQL for archive_mode" in applied.stdout
    no_shipper = cli("setup_pitr", "--target", "pg-setup", "--socket-dir", str(run_dir), "--check")
    assert no_shipper.returncode == 5 and "run_shipper --target pg-setup" in no_shipper.stderr

    cluster.restart()
    target.refresh_from_db()
    shippers(target, run_dir)
    checked = cli("setup_pitr", "--target", "pg-setup", "--socket-dir", str(run_dir), "--check", "--timeout", "30")
    assert checked.returncode == 0, checked.stderr
    assert "check ok: segment" in checked.stdout
    listed = cli("pitr_targets")
    assert listed.stdout.split("\n")[0] == "postgresql pg-setup"
