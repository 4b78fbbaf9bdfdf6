"""Recovery across timelines: after a failover (a standby promoted, archiving into the same target), the
archive holds a history file and a second timeline; recovery from a base backup on the first timeline
follows it, and a base backup on the new timeline recovers too. Recovered servers never archive into
their source's archive."""

import shutil
import time
from datetime import timedelta

import psycopg
import pytest

from archiving.services import archive
from backups.models import ArchivedLog, DatabaseTarget
from backups.services.runs import BackupRequest, create_backup, run_backup
from bench.servers.postgres import PG_BIN, PrivateCluster
from tests.pitr_fixtures import ArchivingCluster, recover, switch_and_ingest

pytestmark = pytest.mark.django_db(transaction=True)


class Standby(PrivateCluster):
    """A streaming standby of ``primary``, archiving (once promoted) into the primary's outbox."""

    def __init__(self, primary: ArchivingCluster):
        super().__init__()
        self.primary = primary
        self.outbox = primary.outbox

    def start(self):
        shutil.chown(self.dir, "postgres", "postgres")
        self._as_postgres(str(PG_BIN / "pg_basebackup"), "-D", str(self.data), "-R", "-X", "stream",
                          f"--dbname=host={self.primary.dir} port={self.primary.port} user=postgres")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nport = {self.port}\nunix_socket_directories = '{self.dir}'\n")
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"),
                          "-w", "-t", "60", "start")
        self.pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        return self

    def promote(self):
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", "promote")


def insert_batch(server: dict, batch: int):
    with psycopg.connect(**server, dbname="postgres", autocommit=True) as conn:
        conn.execute("INSERT INTO events SELECT %s * 100 + g, %s FROM generate_series(1, 10) g", (batch, batch))
        return conn.execute("SELECT clock_timestamp()").fetchone()[0]


def later_activity(server: dict) -> None:
    """Commit something a second later: recovery to a time stops at the first commit after it."""
    time.sleep(1.1)
    with psycopg.connect(**server, dbname="postgres", autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS noise (at timestamptz)")
        conn.execute("INSERT INTO noise VALUES (now())")


def counts(port: int, host: str) -> tuple:
    with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres") as conn:
        return conn.execute("SELECT count(*), max(batch) FROM events").fetchone()


def base_backup(target) -> None:
    run_backup(create_backup(BackupRequest(target=target, backup_type="base")).id)


def test_recovery_follows_a_promotion_and_recovers_from_the_new_timeline(default_key, backup_dir, settings,
                                                                         servers):
    settings.COVET_BASE_WAL_WAIT = 0
    primary = ArchivingCluster().start()
    standby = None
    try:
        target = DatabaseTarget.objects.create(name="pg-failover", engine="postgresql", host=str(primary.dir),
                                               port=primary.port, user="postgres", os_user="postgres",
                                               archiver_status={"outbox": str(primary.outbox)})
        archive.enable_pitr(target)
        with psycopg.connect(**primary.server, dbname="postgres", autocommit=True) as conn:
            conn.execute("CREATE TABLE events (id int PRIMARY KEY, batch int)")
        base_backup(target)
        switch_and_ingest(primary, target)
        insert_batch(primary.server, 1)
        switch_and_ingest(primary, target)

        standby = Standby(primary).start()
        deadline = time.monotonic() + 30
        while counts(standby.port, str(standby.dir))[0] != 10:
            assert time.monotonic() < deadline, "the standby never caught up"
            time.sleep(0.2)
        PrivateCluster.stop(primary)  # the old primary is gone (its outbox stays): fail over
        standby.promote()
        target.host, target.port = str(standby.dir), standby.port
        target.save()
        time.sleep(1.1)
        after_failover = insert_batch(standby.server, 2)
        later_activity(standby.server)
        switch_and_ingest(standby, target)
        assert ArchivedLog.objects.filter(target=target, name="00000002.history").exists()

        # 1. From the base backup on timeline 1, through the switch, onto timeline 2.
        request, data_dir, port = recover(servers, target, pitr_target=(after_failover + timedelta(
            milliseconds=500)).isoformat())
        assert request.status == "completed", request.error
        assert request.pitr["plan"]["timeline"] == 2
        assert counts(port, str(data_dir)) == (20, 2)
        assert request.result["timeline_after"] == 3
        archived_before = sorted(p.name for p in standby.outbox.iterdir())
        with psycopg.connect(host=str(data_dir), port=port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute("INSERT INTO events VALUES (999, 99)")
            conn.execute("SELECT pg_switch_wal()")
        time.sleep(1.5)
        assert sorted(p.name for p in standby.outbox.iterdir()) == archived_before  # nothing from the copy

        # 2. A base backup on timeline 2 is the newest before a later target, and recovers.
        base_backup(target)
        switch_and_ingest(standby, target)
        time.sleep(1.1)
        later = insert_batch(standby.server, 3)
        later_activity(standby.server)
        switch_and_ingest(standby, target)
        request, data_dir, port = recover(servers, target, pitr_target=(later + timedelta(
            milliseconds=500)).isoformat())
        assert request.status == "completed", request.error
        assert request.backup.engine_meta["timeline"] == 2
        assert counts(port, str(data_dir)) == (30, 3)
    finally:
        if standby is not None:
            standby.stop()
        primary.stop()
