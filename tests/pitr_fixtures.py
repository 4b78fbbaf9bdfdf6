"""Helpers for PITR tests: a private cluster that archives through ``cp`` into an outbox, ingest of
that outbox into a target's archive, directories the postgres user can reach, and recovered servers
stopped by PID."""

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from archiving.services import archive
from covet.engines import pg_wal
from backups.models import DatabaseTarget
from restores.models import RestoreRequest
from restores.services.pitr import create_pitr_restore, recovery_target
from restores.services.restore import run_restore

from bench.servers import free_port
from bench.servers.postgres import PrivateCluster, alive


class ArchivingCluster(PrivateCluster):
    """A private cluster whose archive_command copies each WAL file into ``outbox``."""

    def __init__(self):
        # Outside the cluster's directory: a promoted standby archives into it after this server is gone.
        self.holder = Path(tempfile.mkdtemp(prefix="covet-outbox-", dir="/tmp"))
        self.outbox, self.incoming = self.holder / "outbox", self.holder / "incoming"
        # cp writes in place, and ingest reads whatever the outbox holds: each file is copied beside it and
        # renamed in whole, so a file in the outbox is always complete.
        copy_then_rename = f"cp %p {self.incoming}/%f && mv {self.incoming}/%f {self.outbox}/%f"
        super().__init__(settings=f"wal_level = replica\narchive_mode = on\narchive_command = '{copy_then_rename}'\n")

    def start(self):
        for path in (self.outbox, self.incoming):
            path.mkdir(mode=0o700)
        for path in (self.holder, self.outbox, self.incoming):
            shutil.chown(path, "postgres", "postgres")
        return super().start()

    def stop(self):
        super().stop()
        shutil.rmtree(self.holder, ignore_errors=True)


def ingest(target: DatabaseTarget) -> int:
    """Archive every file the cluster has handed to its outbox; return how many were new."""
    store = archive.Archive(target)
    new = 0
    outbox = Path(target.archiver_status["outbox"])
    for path in sorted(outbox.iterdir()):
        if pg_wal.kind_of(path.name):
            with open(path, "rb") as stream:
                _, stored = store.store(path.name, stream, pg_wal.timeline_of(path.name))
            new += stored
    return new


def switch_and_ingest(cluster, target) -> None:
    with psycopg.connect(**cluster.server, dbname="postgres", autocommit=True) as conn:
        segment = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
        conn.execute("SELECT pg_switch_wal()")
    deadline = time.monotonic() + 30
    while not (cluster.outbox / segment).exists():
        assert time.monotonic() < deadline, f"{segment} never archived"
        time.sleep(0.1)
    ingest(target)


def reachable_dir(servers) -> Path:
    """A fresh directory the postgres OS user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="covet-recover-", dir="/tmp"))
    path.chmod(0o755)
    servers.append(path)
    return path


def recover(servers, target, **recovery) -> tuple[RestoreRequest, Path, int]:
    data_dir = reachable_dir(servers) / "recovered"
    port = free_port()
    request = create_pitr_restore(target, recovery_target(**recovery),
                                  {"data_directory": str(data_dir), "start": True, "port": port})
    request = run_restore(request.pk)
    return request, data_dir, port


def rows_in(port: int, data_dir: Path, table: str):
    with psycopg.connect(host=str(data_dir), port=port, user="postgres", dbname="postgres") as conn:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]
        if not exists:
            return None
        return conn.execute(f"SELECT count(*), max(batch) FROM {table}").fetchone()


@pytest.fixture
def servers():
    """Stop every recovered server by the PID in its data directory."""
    made = []
    yield made
    for parent in made:
        pid_file = parent / "recovered" / "postmaster.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().split("\n", 1)[0])
            subprocess.run(["kill", "-INT", str(pid)], check=False)
            deadline = time.monotonic() + 30
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        shutil.rmtree(parent, ignore_errors=True)
