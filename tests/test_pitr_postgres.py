"""PostgreSQL point-in-time recovery, proven by real recoveries on a private cluster.

The operator story: a base backup, rows committed over time (their commit
times, LSNs and xids noted), a restore point, a destructive statement; then
recoveries to a time, an LSN, an xid, the restore point and latest, each
started as its own server and checked row by row. WAL reaches the archive
through a plain ``cp`` archive_command and Archive.store here, so these tests
exercise recovery alone (the shipper has its own tests).
"""

import contextlib
import os
import signal
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psutil
import psycopg
import pytest
from django.core.management import call_command

from archiving.services import archive
from covet.engines import pg_wal
from covet.errors import DamagedError, NotFoundError
from backups.models import ArchivedLog, DatabaseTarget
from restores import jobs as restores_jobs
from restores.models import RestoreRequest
from restores.services.pitr import create_pitr_restore, recovery_target
from restores.services.pitr_postgres import _spool_dir
from restores.services.restore import run_restore

from bench.servers import free_port
from tests.helpers import wait_for
from tests.pitr_fixtures import ArchivingCluster, ingest, reachable_dir, recover, rows_in, switch_and_ingest
from backups.services.runs import BackupRequest, create_backup, run_backup
from archiving.services.windows import refresh_usable

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def story(django_db_blocker):
    """Run the operator story once; yield what happened when (tests recover from it)."""
    cluster = ArchivingCluster().start()
    try:
        yield _story(cluster)
    finally:
        cluster.stop()


def _story(cluster) -> dict:
    with psycopg.connect(**cluster.server, dbname="postgres", autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, note text, amount numeric)")
        conn.execute("INSERT INTO orders SELECT g, 'before the backup ' || g, g * 1.5 FROM generate_series(1, 500) g")
    return {"cluster": cluster}


@pytest.fixture
def recovered(story, default_key, backup_dir, settings, tmp_path):
    """The story replayed against this test's catalog: target, base backup, batches with their positions."""
    cluster = story["cluster"]
    settings.COVET_BASE_WAL_WAIT = 0
    target = DatabaseTarget.objects.create(name=f"pg-{cluster.port}", engine="postgresql", host=str(cluster.dir),
                                           port=cluster.port, user="postgres", os_user="postgres",
                                           archiver_status={"outbox": str(cluster.outbox)})
    archive.enable_pitr(target)
    ingest(target)
    backup = run_backup(create_backup(
        BackupRequest(target=target, backup_type="base", initiated_by="test")).id)
    switch_and_ingest(cluster, target)
    backup.refresh_from_db()
    refresh_usable(target)
    batches = []
    with psycopg.connect(**cluster.server, dbname="postgres", autocommit=True) as conn:
        table = f"orders_{uuid.uuid4().hex[:8]}"
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, batch int, note text)")
        for batch in range(4):
            time.sleep(1.1)  # commit times one second apart: time targets fall between batches
            with conn.transaction():
                xid = conn.execute("SELECT txid_current()").fetchone()[0]
                conn.execute(f"INSERT INTO {table} SELECT {batch} * 100 + g, {batch}, 'batch ' || {batch} "
                             "FROM generate_series(1, 25) g")
            lsn, committed = conn.execute("SELECT pg_current_wal_insert_lsn()::text, clock_timestamp()").fetchone()
            batches.append({"xid": xid, "lsn": lsn, "committed": committed, "rows": 25 * (batch + 1)})
            if batch == 1:
                switch_and_ingest(cluster, target)  # recovery then crosses a segment boundary
        point = f"before_delete_{cluster.port}"
        conn.execute("SELECT pg_create_restore_point(%s)", (point,))
        time.sleep(1.1)
        conn.execute(f"DELETE FROM {table}")  # the incident
    switch_and_ingest(cluster, target)
    return {"target": target, "backup": backup, "batches": batches, "table": table, "point": point,
            "cluster": cluster}


def test_recovery_to_a_time_an_lsn_an_xid_a_restore_point_and_latest(recovered, tmp_path, servers):
    target, table, batches = recovered["target"], recovered["table"], recovered["batches"]
    cases = [
        ({"pitr_target": (batches[1]["committed"] + timedelta(milliseconds=300)).isoformat()}, (50, 1)),
        ({"lsn": batches[2]["lsn"]}, (75, 2)),
        ({"xid": str(batches[0]["xid"])}, (25, 0)),
        ({"xid": str(batches[0]["xid"]), "inclusive": False}, None),
        ({"name": recovered["point"]}, (100, 3)),
        ({"pitr_target": "latest"}, (0, None)),
    ]
    for index, (recovery, expected) in enumerate(cases):
        request, data_dir, port = recover(servers, target, **recovery)
        assert request.status == "completed", request.error
        assert request.result["state"] == "promoted"
        found = rows_in(port, data_dir, table)
        if expected is None:  # before the first batch committed: the table exists, empty
            assert found == (0, None)
        else:
            assert found == expected, (recovery, found)
        conf = (data_dir / "postgresql.auto.conf").read_text()
        assert "archive_mode = 'off'" in conf  # never into the source's archive
        assert not Path(request.result["spool"]).exists()


def test_a_missing_segment_is_refused_before_anything_starts(recovered, servers):
    target = recovered["target"]
    data_dir = reachable_dir(servers) / "recovered"
    planned = create_pitr_restore(target, recovery_target("latest"), {"data_directory": str(data_dir)})
    for victim in (planned.pitr["plan"]["segments"][1], planned.pitr["plan"]["segments"][0]):
        ArchivedLog.objects.filter(target=target, name=victim).delete()
        with pytest.raises(DamagedError, match=victim):
            create_pitr_restore(target, recovery_target("latest"), {"data_directory": str(data_dir)})
        with pytest.raises(DamagedError, match=victim):  # and a request made before the loss stops too
            run_restore(planned.pk)
        assert not data_dir.exists()


def test_a_damaged_segment_is_refused_naming_it_and_nothing_is_left(recovered, servers, backup_dir):
    target = recovered["target"]
    data_dir = reachable_dir(servers) / "recovered"
    request = create_pitr_restore(target, recovery_target("latest"), {"data_directory": str(data_dir)})
    victim = ArchivedLog.objects.get(target=target, name=request.pitr["plan"]["segments"][-1])
    path = backup_dir / victim.storage_key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedError, match=victim.name):
        run_restore(request.pk)
    assert not data_dir.exists()
    assert list(data_dir.parent.iterdir()) == []


def test_a_file_failing_to_decode_while_the_server_replays_stops_recovery_and_nothing_is_left(recovered, servers):
    """Staging checks the stored SHA-256 only; a file that then fails to decode (here: its plaintext differs from
    what the catalog says was archived) stops the started server's recovery instead of ending it early."""
    target = recovered["target"]
    data_dir = reachable_dir(servers) / "recovered"
    request = create_pitr_restore(target, recovery_target("latest"),
                                  {"data_directory": str(data_dir), "start": True, "port": free_port()})
    victim = ArchivedLog.objects.get(target=target, name=request.pitr["plan"]["segments"][-1])
    ArchivedLog.objects.filter(pk=victim.pk).update(plaintext_sha256="0" * 64)
    with pytest.raises(DamagedError, match=f"{victim.name}: its content differs"):
        run_restore(request.pk)
    assert not data_dir.exists()  # the server was stopped and what it recovered removed
    assert not any(path.name.startswith(".recovered.covet-wal") for path in data_dir.parent.iterdir())
    request.refresh_from_db()
    assert request.status == "failed" and victim.name in request.error


def test_a_target_outside_the_window_is_refused_with_the_window(recovered, servers):
    target, backup = recovered["target"], recovered["backup"]
    data_dir = reachable_dir(servers) / "recovered"
    too_early = backup.started_at - timedelta(hours=1)
    with pytest.raises(NotFoundError, match="recoverable window"):
        create_pitr_restore(target, recovery_target(too_early.isoformat()), {"data_directory": str(data_dir)})
    too_late = recovered["batches"][-1]["committed"] + timedelta(hours=1)
    with pytest.raises(NotFoundError, match="newest archived WAL"):
        create_pitr_restore(target, recovery_target(too_late.isoformat()), {"data_directory": str(data_dir)})
    assert not data_dir.exists()


def test_history_is_readable_and_timeline_path_is_planned(recovered, servers):
    """A history file in the archive makes 'latest' follow the newer timeline."""
    target, backup = recovered["target"], recovered["backup"]
    start = pg_wal.parse_lsn(backup.engine_meta["start_lsn"])
    switch = pg_wal.format_lsn(start + 16 * 1024 * 1024)
    archive.store_bytes(archive.Archive(target), "00000002.history", f"1\t{switch}\tno recovery target\n".encode(),
                        2)
    with pytest.raises(DamagedError, match="000000020000000000000"):
        create_pitr_restore(target, recovery_target("latest"), {"data_directory": str(reachable_dir(servers) / "r")})
    request = create_pitr_restore(target, recovery_target("latest", timeline="1"),
                                  {"data_directory": str(reachable_dir(servers) / "r")})
    assert request.pitr["plan"]["timeline"] == 1


def test_an_empty_data_directory_given_stays_empty_when_recovery_fails(recovered, servers, backup_dir):
    target = recovered["target"]
    data_dir = reachable_dir(servers) / "recovered"
    data_dir.mkdir()
    request = create_pitr_restore(target, recovery_target("latest"), {"data_directory": str(data_dir)})
    victim = ArchivedLog.objects.get(target=target, name=request.pitr["plan"]["segments"][-1])
    (backup_dir / victim.storage_key).unlink()
    with pytest.raises(DamagedError, match=victim.name):
        run_restore(request.pk)
    assert data_dir.is_dir() and list(data_dir.iterdir()) == []


def test_a_recovery_whose_worker_is_killed_leaves_no_spool_data_directory_or_server(recovered, servers,
                                                                                   backup_dir, rq_worker, settings):
    target, backup = recovered["target"], recovered["backup"]
    data_dir = reachable_dir(servers) / "recovered"
    request = create_pitr_restore(target, recovery_target("latest"), {"data_directory": str(data_dir)})
    spool_dir = _spool_dir(data_dir)

    # The base backup is read through a FIFO that gives half its bytes and then
    # holds: the worker is then surely mid-recovery (spool made, files unpacking).
    stored = backup_dir / backup.storage_key
    content = stored.read_bytes()
    stored.unlink()
    os.mkfifo(stored)
    release = threading.Event()

    def feed():
        with contextlib.suppress(BrokenPipeError), open(stored, "wb") as fifo:
            fifo.write(content[:len(content) // 2])
            fifo.flush()
            release.wait(300)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    worker = rq_worker(f"restores-{settings.COVET_HOST}")
    try:
        restores_jobs.enqueue_restore(request)
        wait_for(lambda: spool_dir.is_dir() and data_dir.is_dir() and any(data_dir.iterdir()), 120,
                 message="the recovery to unpack into its data directory")
        assert RestoreRequest.objects.get(pk=request.pk).status == "running"

        for process in [*psutil.Process(worker.pid).children(recursive=True), psutil.Process(worker.pid)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)
        worker.wait()
    finally:
        release.set()
        # Unblock a feeder still waiting for a reader to open the FIFO.
        with contextlib.suppress(OSError):
            os.close(os.open(stored, os.O_RDONLY | os.O_NONBLOCK))
        feeder.join(30)

    def reaped():
        call_command("run_housekeeper", "--once")
        return RestoreRequest.objects.get(pk=request.pk).status == "failed"

    wait_for(reaped, settings.COVET_HEARTBEAT_TIMEOUT + 30, interval=1, message="the housekeeper to notice")
    failed = RestoreRequest.objects.get(pk=request.pk)
    assert "stopped responding" in failed.error
    assert not spool_dir.exists()
    assert not spool_dir.with_name(spool_dir.name + ".removing").exists()
    assert not data_dir.exists() or list(data_dir.iterdir()) == []
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(data_dir) in " ".join(p.info["cmdline"] or [])]
