"""MySQL/MariaDB point-in-time recovery on a private mariadbd: binlog archiving, setup checks, replay, refusals.

One private server (own datadir, port, socket, --log-bin, --server-id,
binlog_format=ROW) serves the module; every test makes its own schemas and
target, and the restart test restarts the server in the middle of a load.
"""

import io
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from archiving.services import binlog_window

from covet.errors import DamagedError, NotFoundError, ToolError, UsageError
from backups.models import ArchivedLog, DatabaseTarget
from archiving.services import binlog_setup
from archiving.services.binlog_archiver import BinlogArchiver
from restores.services.pitr import create_pitr_restore, recovery_target
from restores.services.restore import run_restore
from backups.services.runs import BackupRequest, create_backup, run_backup
from backups.services.targets import add_target
from archiving.services.windows import archive_summary

from bench.servers.mariadb import BinlogServer, connect, execute, master_status, private_base, q
from tests.binlog_fixtures import Load, ids, insert, next_second, schema_exists, server_binlogs, sha256_file
from tests.helpers import REPO, wait_for, worker_env
from tests.mysql_fixtures import unique

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def server():
    mariadb = BinlogServer(private_base(), binlog=True).start()
    yield mariadb
    mariadb.stop()


@pytest.fixture
def conn(server):
    connection = server.connect()
    yield connection
    connection.close()


@pytest.fixture
def shop(conn, server, default_key, backup_dir):
    """A schema with ten orders, and a target for it with PITR set up by setup_pitr's MySQL path."""
    schema = unique("shop_")
    execute(conn, f"CREATE DATABASE {q(schema)}",
            f"CREATE TABLE {q(schema)}.orders (id INT PRIMARY KEY, note VARCHAR(40))")
    insert(conn, schema, range(1, 11))
    target = add_target(schema.replace("_", "-"), "mysql", schema, host=server.socket, user="root")
    out = io.StringIO()
    binlog_setup.setup(target, {}, out)
    assert "archiving is on" in out.getvalue()
    yield DatabaseTarget.objects.get(pk=target.pk), schema
    with server.connect() as fresh:  # the test may have restarted the server
        execute(fresh, f"DROP DATABASE IF EXISTS {q(schema)}")


def full_backup(target):
    backup = create_backup(BackupRequest(target=target, initiated_by="test"))
    backup = run_backup(backup.id)
    assert backup.engine_meta["pitr_possible"], backup.engine_meta
    return backup


def archive_once(target, tmp_path) -> dict:
    return BinlogArchiver(DatabaseTarget.objects.get(pk=target.pk), spool_dir=tmp_path / "spool").run(once=True)


def recover(target, database: str, **stop):
    request = create_pitr_restore(target, recovery_target(**stop), {"database": database})
    return run_restore(request.pk)


def binlogged(conn, text: str) -> list:
    """Return the server's binlog events (any file) whose description mentions ``text``."""
    found = []
    for row in execute(conn, "SHOW BINARY LOGS"):
        found += [event for event in execute(conn, "SHOW BINLOG EVENTS IN %s", args=(row[0],)) if text in str(event[-1])]
    return found


def test_recovery_to_just_before_a_destructive_statement_by_time_and_by_position(shop, conn, cli, tmp_path):
    target, schema = shop
    backup = full_backup(target)
    insert(conn, schema, range(11, 16))
    execute(conn, "FLUSH BINARY LOGS")
    next_second()
    insert(conn, schema, range(16, 21))
    last_good = master_status(conn)
    before_incident = datetime.now(timezone.utc)
    next_second()
    # The incident names the source schema explicitly, in statement format: replayed naively into the new
    # schema, it would delete from the source.
    execute(conn, "SET SESSION binlog_format=STATEMENT", f"USE {q(schema)}",
            f"DELETE FROM {q(schema)}.orders WHERE id > 5", "SET SESSION binlog_format=ROW")
    next_second()
    insert(conn, schema, range(100, 103))
    execute(conn, "FLUSH BINARY LOGS")
    insert(conn, schema, [103])
    archived = archive_once(target, tmp_path)
    assert archived["partial"] == master_status(conn)[0]
    summary = archive_summary(DatabaseTarget.objects.get(pk=target.pk))
    assert summary["gaps"] == [] and summary["live_partial"] == archived["partial"]
    assert [window["backup"] for window in summary["windows"]] == [backup.id]

    by_time = unique("rec_t_")
    result = cli("restore_database", "--target", target.name, "--pitr-target", before_incident.isoformat(),
                 "--target-database", by_time, "--output-format", "json")
    try:
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        assert data["backup_id"] == backup.id
        assert ids(conn, by_time) == list(range(1, 21))
        assert data["events_applied"] == 10 and data["transactions_applied"] == 10
        assert data["stopped_before"] == f"{last_good[0]}:{last_good[1]}"
        assert any("one-second resolution" in line for line in data["summary"])
        assert not binlogged(conn, by_time)  # neither the dump restore nor the replay reach the binlog

        by_position = unique("rec_p_")
        done = recover(target, by_position, stop_position=f"{last_good[0]}:{last_good[1]}")
        assert done.status == "completed", done.error
        assert ids(conn, by_position) == list(range(1, 21))
        assert ids(conn, schema) == [1, 2, 3, 4, 5, 100, 101, 102, 103]  # the source is untouched

        latest = unique("rec_l_")
        with pytest.raises(UsageError, match="names the source database") as refused:
            recover(target, latest, pitr_target="latest")
        assert f"--stop-position {last_good[0]}:{last_good[1]}" in str(refused.value)
        assert not schema_exists(conn, latest)
        assert ids(conn, schema) == [1, 2, 3, 4, 5, 100, 101, 102, 103]
    finally:
        for name in (by_time, locals().get("by_position")):
            if name:
                execute(conn, f"DROP DATABASE IF EXISTS {q(name)}")


def test_a_missing_binlog_makes_the_recovery_refuse_naming_it(shop, conn, backup_dir, tmp_path):
    target, schema = shop
    full_backup(target)
    for batch in (range(11, 13), range(13, 15), range(15, 17)):
        insert(conn, schema, batch)
        execute(conn, "FLUSH BINARY LOGS")
    archive_once(target, tmp_path)
    rows = {row.name: row for row in ArchivedLog.objects.filter(target=target)}
    first = target.backups.get().engine_meta["binlog_file"]
    base, number = binlog_window.split_name(first)
    middle = rows[binlog_window.file_name(base, number + 1)]
    middle.delete()
    with pytest.raises(NotFoundError, match=f"binlog {middle.name} .* is missing"):
        create_pitr_restore(target, recovery_target("latest"), {"database": unique("rec_")})

    middle.pk = None
    middle.save()
    damaged = rows[binlog_window.file_name(base, number + 2)]
    (backup_dir / damaged.storage_key).unlink()
    database = unique("rec_")
    request = create_pitr_restore(target, recovery_target(stop_position=f"{damaged.name}:4"), {"database": database})
    assert request.pitr["plan"]["binlogs"][0] == first
    with pytest.raises(DamagedError, match=damaged.name):
        run_restore(request.pk)
    assert not schema_exists(conn, database)


def test_archiver_survives_its_own_and_the_servers_restart_without_loss_or_duplicates(
        shop, server, backup_dir, tmp_path, settings):
    target, schema = shop
    backup = full_backup(target)
    args = [sys.executable, "manage.py", "binlog_archive", "--target", target.name, "--archive-timeout", "0.5",
            "--spool-dir", str(tmp_path / "spool")]
    env = worker_env(settings)

    def start_archiver():
        return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)

    load = Load(server, schema, first_id=1000)
    archiver = start_archiver()
    load.start()
    try:
        live = wait_for(lambda: ArchivedLog.objects.filter(target=target, partial=True).first(), timeout=30,
                        message="a partial live binlog")
        time.sleep(1)
        os.kill(archiver.pid, signal.SIGKILL)  # as a crash would
        archiver.wait()
        time.sleep(0.5)
        archiver = start_archiver()
        time.sleep(1)
        server.restart()
        time.sleep(1.5)
    finally:
        load.stop()
    conn = server.connect()
    execute(conn, "FLUSH BINARY LOGS")
    completed = server_binlogs(conn)[:-1]

    def all_archived():
        names = set(ArchivedLog.objects.filter(target=target, partial=False).values_list("name", flat=True))
        return set(completed) <= names

    wait_for(all_archived, timeout=30, message="every completed binlog archived")
    os.killpg(archiver.pid, signal.SIGTERM)
    assert archiver.wait(timeout=30) == 0, archiver.stderr.read()
    rows = list(ArchivedLog.objects.filter(target=target))
    names = [row.name for row in rows]
    assert len(names) == len(set(names))
    for row in rows:
        if row.name in completed:
            assert not row.partial and row.plaintext_sha256 == sha256_file(server.binlog_path(row.name)), row.name
    assert ArchivedLog.objects.get(target=target, name=live.name).partial is False
    partial_objects = [path.name for path in backup_dir.rglob("*.partial.covet")]
    assert partial_objects == [f"{name}.partial.covet" for name in names
                               if ArchivedLog.objects.get(target=target, name=name).partial]
    status = DatabaseTarget.objects.get(pk=target.pk).archiver_status
    assert status["running"] is False and status["last_archived"]

    recovered = unique("rec_")
    try:
        request = create_pitr_restore(target, recovery_target("latest"), {"database": recovered}, backup=backup)
        done = run_restore(request.pk)
        assert done.status == "completed", done.error
        assert ids(conn, recovered) == ids(conn, schema) and len(ids(conn, schema)) > 100 + 10
        assert load.errors > 0  # the restart did interrupt the load
    finally:
        execute(conn, f"DROP DATABASE IF EXISTS {q(recovered)}")
        conn.close()


def test_setup_checks_say_what_to_change(shop, conn, server):
    target, _ = shop
    execute(conn, "SET GLOBAL binlog_format = 'MIXED'")
    try:
        with pytest.raises(ToolError, match="binlog_format is MIXED, add binlog_format=ROW"):
            binlog_setup.setup(target, {}, io.StringIO())
        out = io.StringIO()
        binlog_setup.setup(target, {"apply": True}, out)
        assert "applied for new sessions: binlog_format=ROW" in out.getvalue()
    finally:
        execute(conn, "SET GLOBAL binlog_format = 'ROW'")
    shared = add_target("shared-mariadb", "mysql", "mysql", user="root")
    with pytest.raises(ToolError, match="log_bin is OFF, add log_bin="):
        binlog_setup.setup(shared, {}, io.StringIO())
    assert not DatabaseTarget.objects.get(pk=shared.pk).pitr_enabled
    connect().close()


def test_binlogs_purged_before_archiving_are_reported_as_a_gap(shop, conn, tmp_path):
    target, schema = shop
    archive_once(target, tmp_path)
    for batch in (range(11, 13), range(13, 15)):
        insert(conn, schema, batch)
        execute(conn, "FLUSH BINARY LOGS")
    files = server_binlogs(conn)
    execute(conn, f"PURGE BINARY LOGS TO '{files[-1]}'")
    # The server keeps a file its storage engines still need, so see what it really purged.
    kept = files.index(server_binlogs(conn)[0])
    assert kept > len(files) - 3, "nothing unarchived was purged"
    result = archive_once(target, tmp_path)
    gap = {"first_missing": files[-3], "last_missing": files[kept - 1]}
    assert gap in result["purged"]
    assert gap in binlog_window.gaps(DatabaseTarget.objects.get(pk=target.pk))
