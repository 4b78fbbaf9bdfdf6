"""The MySQL/MariaDB engine against real servers: the shared MariaDB and private ones the tests start.

Every schema and user a test makes has a unique name and is dropped at
teardown, even after a failure. End-to-end tests go through manage.py, so
commands, services and the engine are tested together.
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from covet.engines import ConnectionParams
from covet.engines.mysql import MysqlEngine
from covet.errors import ToolError, UsageError
from backups.models import AuditEvent, Backup

from bench.servers.mariadb import PrivateMariaDB, connect, execute, private_base, q, table_checksum
from tests.engine_contract import ContractDatabases, EngineContract
from tests.helpers import REPO, wait_for, worker_env
from tests.mysql_fixtures import Schemas, base_tables, unique

pytestmark = pytest.mark.django_db(transaction=True)

NASTY_PASSWORD = "pa ss\"wo'rd#;\\=`$(x)"


@pytest.fixture
def root():
    conn = connect()
    yield conn
    conn.close()


@pytest.fixture
def schemas(root):
    made = Schemas(root)
    yield made
    made.drop()


@pytest.fixture(scope="module")
def binlog_server():
    server = PrivateMariaDB(private_base(), binlog=True).start()
    yield server
    server.stop()


def stored_files(backup_dir: Path) -> list[Path]:
    return [path for path in backup_dir.rglob("*") if path.is_file()] if backup_dir.exists() else []


def backup(cli, name: str, *extra: str, host: str = "127.0.0.1", port: int | None = 3306, user: str = "root",
           expect: int = 0) -> tuple[dict | None, subprocess.CompletedProcess]:
    args = ["backup_database", "--database", "mysql", f"--name={name}", f"--host={host}", "--user", user,
            "--output-format", "json", *extra]
    if port:
        args += ["--port", str(port)]
    result = cli(*args)
    assert result.returncode == expect, result.stderr
    return (json.loads(result.stdout) if expect == 0 else None), result


def restore(cli, backup_id: str, target: str, *extra: str, expect: int = 0) -> tuple[dict | None, str]:
    result = cli("restore_database", "--backup-id", backup_id, f"--target-database={target}", "--output-format",
                 "json", *extra)
    assert result.returncode == expect, result.stderr
    return (json.loads(result.stdout) if expect == 0 else None), result.stderr


def assert_same_tables(conn_a, schema_a: str, conn_b, schema_b: str) -> None:
    tables = base_tables(conn_a, schema_a)
    assert tables and base_tables(conn_b, schema_b) == tables
    for table in tables:
        assert table_checksum(conn_b, schema_b, table) == table_checksum(conn_a, schema_a, table), table


def make_rich_schema(schema: str) -> None:
    """Blobs, utf8mb4, NULLs, JSON, decimals, a view, a procedure, a function, a trigger and an event.

    Created as applications do, inside the database and naming it nowhere,
    so the definitions follow the data into a database of another name.
    """
    conn = connect(database=schema)
    execute(conn,
            "CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, label VARCHAR(100), note TEXT, "
            "data LONGBLOB, price DECIMAL(12,4), at DATETIME(6), doc JSON, flag TINYINT NULL) "
            "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            "CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, item_id INT, action VARCHAR(10))",
            "CREATE TRIGGER items_audit AFTER INSERT ON items FOR EACH ROW "
            "INSERT INTO audit (item_id, action) VALUES (NEW.id, 'insert')",
            "CREATE VIEW expensive AS SELECT id, label FROM items WHERE price > 100",
            "CREATE PROCEDURE add_item(IN l VARCHAR(100)) BEGIN INSERT INTO items (label) VALUES (l); END",
            "CREATE FUNCTION double_it(x INT) RETURNS INT DETERMINISTIC RETURN x * 2",
            "CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DISABLE "
            "DO DELETE FROM audit")
    rows = []
    for i in range(400):
        rows.append((
            None if i % 17 == 0 else f"item {i} 😀 ünïcødé 𝄞 O'Reilly \\ \"q\"\n\ttab",
            "" if i % 5 == 0 else "x" * (i * 13 % 3000),
            None if i % 11 == 0 else os.urandom(i * 37 % 6000) + b"\x00'\\\"\r\n\x1a",
            None if i % 7 == 0 else f"{i * 3.1415:.4f}",
            f"2024-02-29 12:{i % 60:02d}:{i % 60:02d}.{i:06d}",
            None if i % 3 else json.dumps({"i": i, "emoji": "🎉", "list": [1, None, "a"]}),
            None if i % 2 else i % 128,
        ))
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO items (label, note, data, price, at, doc, flag) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s)", rows)
    conn.close()


def objects(conn, schema: str) -> dict:
    return {
        "views": execute(conn, "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %s",
                         args=(schema,)),
        "routines": sorted(execute(conn, "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES "
                                         "WHERE ROUTINE_SCHEMA = %s", args=(schema,))),
        "triggers": execute(conn, "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS "
                                  "WHERE TRIGGER_SCHEMA = %s", args=(schema,)),
        "events": execute(conn, "SELECT EVENT_NAME, STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s",
                          args=(schema,)),
    }


# Round trips ------------------------------------------------------------------

def test_a_backup_restores_equal_data_routines_triggers_and_events(cli, root, schemas, default_key, backup_dir):
    source = schemas.new()
    make_rich_schema(source)
    out, _ = backup(cli, source)
    assert out["status"] == "completed" and out["database_type"] == "mysql"
    row = Backup.objects.get(pk=out["backup_id"])
    meta = row.engine_meta
    assert meta["flavor"] == "MariaDB" and meta["server_version"].startswith("10.")
    assert meta["dump_tool"] == "mariadb-dump" and "Distrib" in meta["dump_tool_version"]
    assert meta["extension"] == "sql"
    assert meta["global_read_lock_seconds"] < 1.0
    assert row.manifest["consistent"] is True
    assert row.manifest["tables"]["items"] == {"rows": 400, "exact": True}
    assert row.manifest["tables"]["audit"] == {"rows": 400, "exact": True}  # the trigger's rows
    assert set(row.extras) == {"grants.sql"}
    stored = next(backup_dir.rglob(f"{row.id}.covet"))
    assert b"O'Reilly" not in stored.read_bytes()

    target = schemas.name()
    restored, _ = restore(cli, row.id, target)
    assert restored["location"] == f"mysql://127.0.0.1:3306/{target}"
    assert restored["row_counts"] == {"compared": 2, "differences": [], "skipped": []}
    assert_same_tables(root, source, root, target)
    assert objects(root, target) == objects(root, source)
    assert objects(root, target)["events"] == [("nightly", "DISABLED")]
    assert execute(root, f"SELECT {q(target)}.double_it(21)") == [(42,)]
    execute(root, f"CALL {q(target)}.add_item('via the restored procedure')")
    assert execute(root, f"SELECT COUNT(*) FROM {q(target)}.audit") == [(401,)]  # the restored trigger fired


def test_with_the_binary_log_off_the_backup_says_pitr_is_not_possible(root, schemas, tmp_path):
    source = schemas.new()
    execute(root, f"CREATE TABLE {q(source)}.t (id INT PRIMARY KEY)")
    engine = MysqlEngine(ConnectionParams(user="root"), str(tmp_path))
    with engine.dump(source) as dump:
        while dump.stream.read(65536):
            pass
    assert dump.meta["binlog_enabled"] is False
    assert dump.meta["pitr_possible"] is False
    assert "binary log is off" in dump.meta["pitr_reason"]
    assert "binlog_file" not in dump.meta
    assert not list(tmp_path.rglob("*.cnf"))  # the credentials file is gone


def test_a_backup_under_concurrent_writes_is_one_snapshot(cli, root, schemas, default_key, backup_dir):
    source = schemas.new()
    s = q(source)
    execute(root, f"CREATE TABLE {s}.parent (id INT AUTO_INCREMENT PRIMARY KEY, payload VARCHAR(200))",
            f"CREATE TABLE {s}.child (id INT AUTO_INCREMENT PRIMARY KEY, parent_id INT NOT NULL, n INT, "
            f"FOREIGN KEY (parent_id) REFERENCES parent (id))")
    stop, commits = threading.Event(), [0]

    def writer():
        conn = connect(database=source)
        conn.autocommit(False)
        try:
            with conn.cursor() as cur:
                while not stop.is_set():
                    cur.execute("INSERT INTO parent (payload) VALUES (REPEAT('p', 150))")
                    parent = cur.lastrowid
                    cur.execute("INSERT INTO child (parent_id, n) VALUES (%s, 1), (%s, 2), (%s, 3)",
                                (parent, parent, parent))
                    conn.commit()
                    commits[0] += 1
        finally:
            conn.close()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        wait_for(lambda: commits[0] > 200, timeout=30, message="the writer to get going")
        before = commits[0]
        out, _ = backup(cli, source)
        during = commits[0] - before
    finally:
        stop.set()
        thread.join()
    assert during > 100, "the writer must be committing while the backup runs, or this test proves nothing"
    row = Backup.objects.get(pk=out["backup_id"])
    manifest = row.manifest
    assert manifest["consistent"] is True

    target = schemas.name()
    restored, _ = restore(cli, row.id, target)
    t = q(target)
    parents = execute(root, f"SELECT COUNT(*) FROM {t}.parent")[0][0]
    children = execute(root, f"SELECT COUNT(*) FROM {t}.child")[0][0]
    assert manifest["tables"]["parent"] == {"rows": parents, "exact": True}
    assert manifest["tables"]["child"] == {"rows": children, "exact": True}
    assert restored["row_counts"]["compared"] == 2 and restored["row_counts"]["differences"] == []
    assert children == 3 * parents
    assert execute(root, f"SELECT COUNT(*) FROM {t}.child c LEFT JOIN {t}.parent p ON p.id = c.parent_id "
                         f"WHERE p.id IS NULL") == [(0,)]
    assert execute(root, f"SELECT COUNT(*) FROM (SELECT parent_id FROM {t}.child GROUP BY parent_id "
                         f"HAVING COUNT(*) <> 3) torn") == [(0,)]
    assert parents < execute(root, f"SELECT COUNT(*) FROM {s}.parent")[0][0]


def test_binlog_coordinates_are_those_of_the_dump_snapshot(cli, binlog_server, default_key, backup_dir, tmp_path):
    conn = binlog_server.connect()
    source = unique()
    execute(conn, f"CREATE DATABASE {q(source)}",
            f"CREATE TABLE {q(source)}.events (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(50), "
            f"written DATETIME(6) DEFAULT NOW(6))")
    stop, commits = threading.Event(), [0]

    def writer():
        wconn = binlog_server.connect(database=source)
        try:
            with wconn.cursor() as cur:
                while not stop.is_set():
                    cur.execute("INSERT INTO events (v) VALUES ('row'), ('another row')")
                    commits[0] += 1
        finally:
            wconn.close()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        wait_for(lambda: commits[0] > 200, timeout=30, message="the writer to get going")
        before = commits[0]
        out, _ = backup(cli, source, host=binlog_server.socket, port=None)
        assert commits[0] - before > 50
    finally:
        stop.set()
        thread.join()
    end_file, end_position = execute(conn, "SHOW MASTER STATUS")[0][:2]
    meta = Backup.objects.get(pk=out["backup_id"]).engine_meta
    assert meta["binlog_enabled"] is True and meta["pitr_possible"] is True
    assert meta["binlog_file"].startswith("binlog.") and meta["binlog_position"] > 4
    # The snapshot's own binlog position (MariaDB keeps it per transaction) is the one recorded.
    assert (meta["snapshot_binlog_file"], meta["snapshot_binlog_position"]) == \
        (meta["binlog_file"], meta["binlog_position"])
    assert meta["gtid"] == execute(conn, "SELECT BINLOG_GTID_POS(%s, %s)",
                                   args=(meta["binlog_file"], meta["binlog_position"]))[0][0]
    assert meta["gtid"].startswith("0-4242-")

    # The dump plus the binlog after its coordinates gives exactly the source's final state:
    # an earlier position would replay rows the dump has (duplicate keys), a later one lose rows.
    target = unique()
    restore(cli, out["backup_id"], target)
    replay = subprocess.run(
        ["mariadb-binlog", f"--start-position={meta['binlog_position']}", f"--stop-position={end_position}",
         f"--database={source}", f"--rewrite-db={source}->{target}", str(binlog_server.datadir / end_file)],
        capture_output=True, check=True)
    assert meta["binlog_file"] == end_file
    assert replay.stdout.count(b"BINLOG '") > 10  # rows written after the backup are after its position
    applied = subprocess.run(["mariadb", "-uroot", f"--socket={binlog_server.socket}"], input=replay.stdout,
                             capture_output=True)
    assert applied.returncode == 0, applied.stderr.decode()
    assert table_checksum(conn, target, "events") == table_checksum(conn, source, "events")
    conn.close()


# Users and grants -----------------------------------------------------------------

def test_users_and_grants_come_back_with_with_globals(cli, root, schemas, default_key, backup_dir):
    source = schemas.new()
    execute(root, f"CREATE TABLE {q(source)}.t (id INT PRIMARY KEY, secret VARCHAR(10))")
    reader = schemas.user("reader-password", f"SELECT, INSERT ON {q(source)}.*")
    columns = schemas.user("column-password", f"SELECT (id) ON {q(source)}.t")
    other = schemas.user("other-password", "SELECT ON mysql.*")  # no privilege on the database
    out, _ = backup(cli, source)
    row = Backup.objects.get(pk=out["backup_id"])
    assert sorted(row.engine_meta["grant_accounts"]) == sorted([f"`{reader}`@`localhost`",
                                                                 f"`{columns}`@`localhost`"])
    assert other not in json.dumps(row.engine_meta)

    execute(root, f"DROP USER {q(reader)}@localhost", f"DROP USER {q(columns)}@localhost")
    target = schemas.name()
    restored, _ = restore(cli, row.id, target, "--with-globals")
    assert sorted(restored["grants"]["created"]) == sorted([f"`{reader}`@`localhost`", f"`{columns}`@`localhost`"])
    assert restored["grants"]["failed"] == []
    grants = [g[0] for g in execute(root, f"SHOW GRANTS FOR {q(reader)}@localhost")]
    assert f"GRANT SELECT, INSERT ON `{target}`.* TO `{reader}`@`localhost`" in grants
    assert any(f"ON `{target}`.`t`" in g and "SELECT (`id`)" in g
               for g in (g[0] for g in execute(root, f"SHOW GRANTS FOR {q(columns)}@localhost")))
    as_reader = connect(user=reader, password="reader-password", database=target)  # the password came back too
    assert execute(as_reader, "SELECT COUNT(*) FROM t") == [(0,)]
    as_reader.close()

    again, _ = restore(cli, row.id, schemas.name(), "--with-globals")
    assert sorted(again["grants"]["existing"]) == sorted([f"`{reader}`@`localhost`", f"`{columns}`@`localhost`"])
    assert again["grants"]["created"] == [] and again["grants"]["failed"] == []


# Names ------------------------------------------------------------------------------

@pytest.mark.parametrize("source_name,target_name", [
    ("covet Ünï `tick` 'quote' \"dq\" MiXed {hex}", "covet restored `x` 'y' Ünï {hex}"),
    ("--foo-{hex}", "--no-data-{hex}"),
])
def test_odd_database_and_table_names_round_trip(cli, root, schemas, default_key, backup_dir, source_name,
                                                 target_name):
    hex_id = unique("")[:6]
    source = schemas.new(source_name.format(hex=hex_id))
    s = q(source)
    odd_tables = ["with space", "back`tick", "it's", 'dq"table', "Ünïcødé", "MixedCase", "-- x"]
    for table in odd_tables:
        execute(root, f"CREATE TABLE {s}.{q(table)} (id INT PRIMARY KEY, {q('odd col`')} VARCHAR(20))")
        execute(root, f"INSERT INTO {s}.{q(table)} VALUES (1, 'a'), (2, %s)", args=("it's `x` \"y\"",))
    out, _ = backup(cli, source)
    row = Backup.objects.get(pk=out["backup_id"])
    assert row.database_name == source
    assert set(row.manifest["tables"]) == set(odd_tables)
    target = schemas.name(target_name.format(hex=hex_id))
    restored, _ = restore(cli, row.id, target)
    assert restored["row_counts"]["compared"] == len(odd_tables)
    assert_same_tables(root, source, root, target)


# Credentials --------------------------------------------------------------------------

def test_the_password_never_shows_on_a_command_line_or_in_the_catalog(cli, root, schemas, default_key, backup_dir,
                                                                       tmp_path, settings):
    source = schemas.new()
    execute(root, f"CREATE TABLE {q(source)}.big (id INT PRIMARY KEY, data BLOB)",
            f"INSERT INTO {q(source)}.big SELECT seq, RANDOM_BYTES(1000) FROM {q(source)}.seq_1_to_40000")
    user = schemas.user(NASTY_PASSWORD, f"SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON {q(source)}.*",
                        "RELOAD, BINLOG MONITOR ON *.*", host="127.0.0.1")
    password_file = tmp_path / "db.password"
    password_file.write_text(NASTY_PASSWORD + "\n")
    password_file.chmod(0o600)
    seen, files, stop = [], [], threading.Event()

    def watch_ps():
        while not stop.is_set():
            for proc in psutil.process_iter(["cmdline"]):
                args = proc.info["cmdline"] or []
                # Only this test's dump: its credentials file lies under this test run's scratch directory.
                if any("mariadb-dump" in arg for arg in args[:1]) and str(settings.COVET_TMP_DIR) in " ".join(args):
                    seen.append(args)
                    cnf = Path(args[1].split("=", 1)[1])
                    with_mode = (cnf.stat().st_mode & 0o777, cnf.parent.stat().st_mode & 0o777) \
                        if cnf.exists() else None
                    files.append((cnf, with_mode))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch_ps, daemon=True)
    watcher.start()
    try:
        result = cli("backup_database", "--database", "mysql", f"--name={source}", "--host", "127.0.0.1", "--port",
                     "3306", "--user", user, "--password-file", str(password_file), "--output-format", "json")
    finally:
        stop.set()
        watcher.join()
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert seen, "the dump tool was never seen running, so its command line was not checked"
    assert all(args[1].startswith("--defaults-extra-file=") for args in seen)
    for args in seen:
        assert NASTY_PASSWORD not in " ".join(args) and "pa ss" not in " ".join(args)
    assert any(mode == (0o600, 0o700) for _, mode in files)
    assert not any(cnf.exists() for cnf, _ in files)  # removed afterwards
    row = Backup.objects.get(pk=out["backup_id"])
    assert row.engine_meta["pitr_possible"] is False and row.manifest["consistent"] is True
    everything = [result.stdout, result.stderr, json.dumps(row.engine_meta), json.dumps(row.manifest),
                  row.error, *(p.read_text() for p in backup_dir.rglob("*.json")),
                  json.dumps(list(AuditEvent.objects.values()), default=str),
                  json.dumps(list(Backup.objects.values()), default=str)]
    assert not any("pa ss" in text for text in everything)

    password_file.write_text("wrong " + NASTY_PASSWORD)
    target = row.target
    target.password_ref = f"file:{password_file}"
    target.save()
    _, failed = backup(cli, source, user=user, expect=5)
    assert "Access denied for user" in failed.stderr
    assert "pa ss" not in failed.stderr and "pa ss" not in Backup.objects.order_by("-created_at")[0].error


# Failures ---------------------------------------------------------------------------------

def test_a_missing_database_exits_3_with_the_tools_message(cli, default_key, backup_dir):
    name = unique("covet_missing_")
    _, result = backup(cli, name, expect=3)
    failed = Backup.objects.get()
    assert failed.status == "failed"
    assert f"Unknown database '{name}'" in failed.error and "mariadb-dump" in failed.error
    assert f"Unknown database '{name}'" in result.stderr and "Traceback" not in result.stderr
    assert stored_files(backup_dir) == []


def test_permission_denied_exits_5_with_the_tools_message(cli, root, schemas, default_key, backup_dir, tmp_path):
    source = schemas.new()
    execute(root, f"CREATE TABLE {q(source)}.t (id INT PRIMARY KEY)")
    user = schemas.user("no-select-password", host="127.0.0.1")
    password_file = tmp_path / "pw"
    password_file.write_text("no-select-password")
    _, result = backup(cli, source, "--password-file", str(password_file), user=user, expect=5)
    failed = Backup.objects.get()
    assert failed.status == "failed"
    assert f"Access denied for user '{user}'@'127.0.0.1' to database '{source}'" in failed.error
    assert failed.error.startswith("mariadb-dump failed:")
    assert "Access denied" in result.stderr
    assert stored_files(backup_dir) == []


def test_a_server_killed_mid_dump_fails_the_backup_and_leaves_nothing(settings, default_key, backup_dir):
    server = PrivateMariaDB(private_base(), binlog=False).start()
    try:
        conn = server.connect()
        source = unique()
        execute(conn, f"CREATE DATABASE {q(source)}",
                f"CREATE TABLE {q(source)}.big (id INT PRIMARY KEY, data BLOB)",
                f"INSERT INTO {q(source)}.big SELECT seq, RANDOM_BYTES(1000) FROM {q(source)}.seq_1_to_60000")
        conn.close()
        # bzip2 is slow, so the dump is still streaming when the server dies.
        proc = subprocess.Popen([sys.executable, "manage.py", "backup_database", "--database", "mysql",
                                 f"--name={source}", f"--host={server.socket}", "--user", "root",
                                 "--compress", "bzip2"],
                                cwd=REPO, env=worker_env(settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        wait_for(lambda: Backup.objects.filter(status="running", bytes_done__gt=0).exists(), timeout=60,
                 interval=0.05, message="the backup to stream")
        server.kill()
        _, stderr = proc.communicate(timeout=60)
    finally:
        server.stop()
    assert proc.returncode == 5, stderr
    failed = Backup.objects.get()
    assert failed.status == "failed"
    assert failed.error.startswith("mariadb-dump failed:")
    assert "Lost connection" in failed.error or "server has gone away" in failed.error
    assert stored_files(backup_dir) == []


def test_a_full_disk_in_the_storage_fails_the_backup_and_leaves_nothing(cli, root, schemas, settings, default_key,
                                                                        tmp_path):
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root and CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        settings.COVET_BACKUP_DIR = mount_point
        source = schemas.new()
        execute(root, f"CREATE TABLE {q(source)}.big (id INT PRIMARY KEY, data BLOB)",
                f"INSERT INTO {q(source)}.big SELECT seq, RANDOM_BYTES(1000) FROM {q(source)}.seq_1_to_8000")
        _, result = backup(cli, source, expect=6)
        failed = Backup.objects.get()
        assert failed.status == "failed"
        assert "No space left on device" in failed.error
        assert "No space left on device" in result.stderr
        assert stored_files(mount_point) == []
        assert not [p for p in psutil.process_iter(["cmdline"]) if source in " ".join(p.info["cmdline"] or [])]
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


# The engine contract ---------------------------------------------------------------------------

class SharedServerSchemas(ContractDatabases):
    """The contract's databases as schemas on the shared MariaDB, made and dropped by a ``Schemas``."""

    def __init__(self, made: Schemas):
        self.made = made

    def table(self, name: str) -> str:
        return name  # the restore renames the schema, so manifests name tables alone

    def create(self, rows: list[tuple]) -> str:
        name = self.made.new()
        execute(self.made.conn, f"CREATE TABLE {q(name)}.items (id INT PRIMARY KEY, note TEXT)",
                f"CREATE TABLE {q(name)}.empty (id INT PRIMARY KEY)")
        with self.made.conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {q(name)}.items VALUES (%s, %s)", rows)
        return name

    def new_name(self) -> str:
        return self.made.name()

    def rows(self, database: str) -> list[tuple]:
        return execute(self.made.conn, f"SELECT id, note FROM {q(database)}.items ORDER BY id")

    def traces(self, database: str) -> list[str]:
        return [database] if execute(self.made.conn, "SELECT COUNT(*) FROM information_schema.SCHEMATA "
                                                     "WHERE SCHEMA_NAME = %s", args=(database,))[0][0] else []


class TestMysqlEngineContract(EngineContract):
    @pytest.fixture
    def engine(self, tmp_path):
        return MysqlEngine(ConnectionParams(user="root"), str(tmp_path / "engine-tmp"))

    @pytest.fixture
    def databases(self, schemas):
        return SharedServerSchemas(schemas)


# Restore rules --------------------------------------------------------------------------------

def test_restore_refuses_a_non_empty_database_unless_clean(cli, root, schemas, default_key, backup_dir):
    source = schemas.new()
    execute(root, f"CREATE TABLE {q(source)}.t (id INT PRIMARY KEY)", f"INSERT INTO {q(source)}.t VALUES (1), (2)")
    out, _ = backup(cli, source)
    occupied = schemas.new()
    execute(root, f"CREATE TABLE {q(occupied)}.keep_me (id INT)")
    _, stderr = restore(cli, out["backup_id"], occupied, expect=2)
    assert "already exists and is not empty" in stderr and "--clean" in stderr
    assert base_tables(root, occupied) == ["keep_me"]
    restored, _ = restore(cli, out["backup_id"], occupied, "--clean")
    assert base_tables(root, occupied) == ["t"]
    assert restored["row_counts"]["compared"] == 1


def test_a_failed_restore_drops_the_database_it_created(root, schemas, tmp_path):
    engine = MysqlEngine(ConnectionParams(user="root"), str(tmp_path))
    target = schemas.name()
    broken = b"CREATE TABLE ok (id INT);\nINSERT INTO ok VALUES (1);\nTHIS IS NOT SQL;\n"
    import io

    with pytest.raises(ToolError) as caught:
        engine.restore(io.BytesIO(broken), target)
    assert "ERROR 1064" in str(caught.value) and "at line 3" in str(caught.value)
    assert execute(root, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                   args=(target,)) == [(0,)]
    with pytest.raises(UsageError):
        engine.restore(io.BytesIO(b""), "x" * 65)


def test_non_transactional_and_very_large_tables_are_labelled_not_exact(root, schemas, tmp_path, monkeypatch):
    from covet.engines import mysql as mysql_engine

    source = schemas.new()
    execute(root, f"CREATE TABLE {q(source)}.plain (id INT) ENGINE=MyISAM",
            f"INSERT INTO {q(source)}.plain VALUES (1), (2), (3)",
            f"CREATE TABLE {q(source)}.big (id INT) ENGINE=InnoDB",
            f"INSERT INTO {q(source)}.big SELECT seq FROM {q(source)}.seq_1_to_20000", f"ANALYZE TABLE {q(source)}.big",
            f"CREATE TABLE {q(source)}.small (id INT) ENGINE=InnoDB", f"INSERT INTO {q(source)}.small VALUES (1), (2)")
    monkeypatch.setattr(mysql_engine, "ROW_COUNT_EXACT_LIMIT", 64 * 1024)  # "small" has one 16 KiB page
    engine = MysqlEngine(ConnectionParams(user="root"), str(tmp_path))
    with engine.dump(source) as dump:
        while dump.stream.read(65536):
            pass
    tables = dump.manifest["tables"]
    assert tables["plain"]["rows"] == 3 and tables["plain"]["exact"] is False and "MyISAM" in tables["plain"]["note"]
    assert tables["big"]["exact"] is False and "estimate: table data above" in tables["big"]["note"]
    assert tables["small"] == {"rows": 2, "exact": True}
    assert dump.meta["row_count_threshold"] == 64 * 1024
    assert dump.manifest["consistent"] is True


def test_objects_that_name_their_own_database_are_listed_as_a_warning(root, schemas, tmp_path):
    source = schemas.new()
    s = q(source)
    execute(root, f"CREATE TABLE {s}.t (id INT PRIMARY KEY)", f"CREATE TABLE {s}.log (id INT)",
            f"CREATE TRIGGER {s}.t_log AFTER INSERT ON {s}.t FOR EACH ROW INSERT INTO {s}.log VALUES (NEW.id)")
    engine = MysqlEngine(ConnectionParams(user="root"), str(tmp_path))
    with engine.dump(source) as dump:
        while dump.stream.read(65536):
            pass
    assert "trigger t_log" in dump.meta["warnings"][0] and source in dump.meta["warnings"][0]


# Table-level restore -------------------------------------------------------------------------

INJECTION = "x;;\n--\n-- Table structure for table `keep me`\n--\nCREATE TABLE injected (x INT);;\n"


def test_a_table_level_restore_brings_back_just_those_tables(cli, root, schemas, default_key, backup_dir):
    source = schemas.new()
    make_rich_schema(source)
    conn = connect(database=source)
    execute(conn, "CREATE TABLE `keep me` (id INT PRIMARY KEY, v TEXT)",
            "CREATE TABLE drop_me (id INT PRIMARY KEY)", "INSERT INTO drop_me VALUES (1)")
    execute(conn, "INSERT INTO `keep me` VALUES (1, %s), (2, 'plain')", args=(INJECTION,))
    # A routine body and a view holding text that looks like a section marker followed by SQL.
    execute(conn, f"CREATE PROCEDURE tricky() BEGIN SELECT '{INJECTION}'; END",
            f"CREATE VIEW tricky_view AS SELECT '{INJECTION}' AS s")
    conn.close()
    out, _ = backup(cli, source)
    target = schemas.name()
    restored, _ = restore(cli, out["backup_id"], target, "--table", "keep me", "--table", "items")
    assert base_tables(root, target) == ["items", "keep me"]
    assert restored["row_counts"] == {"compared": 2, "differences": [], "skipped": []}
    for table in ("items", "keep me"):
        assert table_checksum(root, target, table) == table_checksum(root, source, table)
    found = objects(root, target)
    assert found["views"] == [] and found["routines"] == [] and found["events"] == []
    assert found["triggers"] == [("items_audit", "items")]  # a table's triggers come with it

    # --clean with --table replaces those tables only.
    execute(root, f"DELETE FROM {q(target)}.items", f"CREATE TABLE {q(target)}.mine (id INT)")
    restore(cli, out["backup_id"], target, "--table", "items", expect=2)
    restore(cli, out["backup_id"], target, "--table", "items", "--clean")
    assert base_tables(root, target) == ["items", "keep me", "mine"]
    assert table_checksum(root, target, "items") == table_checksum(root, source, "items")

    missing = schemas.name()
    _, stderr = restore(cli, out["backup_id"], missing, "--table", "no such table", expect=3)
    assert "not in this backup: no such table" in stderr
    assert execute(root, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                   args=(missing,)) == [(0,)]


def test_the_table_filter_never_takes_text_in_strings_or_bodies_for_a_marker():
    import io

    from covet.engines.mysql_dumpfile import TableFilter

    dump = b"\n".join([
        b"/*M!999999\\- enable the sandbox mode */ ",
        b"/*!40101 SET NAMES utf8mb4 */;",
        b"--", b"-- Table structure for table `a`", b"--",
        b"CREATE TABLE `a` (`id` int);",
        b"INSERT INTO `a` VALUES (1,'it\\'s;',\"dq\"\"x\");",
        b"--", b"-- Table structure for table `b``q`", b"--",
        b"CREATE TABLE `b``q` (`id` int);",
        b"INSERT INTO `b``q` VALUES (1,'multi",
        b"--",
        b"-- Table structure for table `a`",
        b"CREATE TABLE smuggled (x int);",
        b"');",
        b"DELIMITER ;;",
        b"CREATE PROCEDURE p() BEGIN SELECT 'x;;",
        b"-- Table structure for table `a`",
        b"CREATE TABLE smuggled2 (x int);;",
        b"'; END ;;",
        b"/*!50003 CREATE*/ /*!50003 TRIGGER t BEFORE INSERT ON `b``q` FOR EACH ROW BEGIN",
        b"-- Table structure for table `a`",
        b"SET @x = 1; END */;;",
        b"DELIMITER ;",
        b"/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;",
        b"-- Dump completed",
        b"",
    ])
    only_a = TableFilter(io.BytesIO(dump), ("a",))
    kept = b""
    while chunk := only_a.read(7):
        kept += chunk
    assert b"CREATE TABLE `a`" in kept and b"it\\'s;" in kept
    assert b"smuggled" not in kept and b"`b``q`" not in kept and b"PROCEDURE" not in kept
    assert kept.startswith(b"/*M!999999") and kept.endswith(b"-- Dump completed\n")

    only_b = TableFilter(io.BytesIO(dump), ("b`q",))
    kept = only_b.read()
    assert b"CREATE TABLE `a`" not in kept and b"CREATE TABLE `b``q`" in kept
    assert b"CREATE TABLE smuggled (x int);" in kept  # as part of b's string literal, where it belongs
    assert b"PROCEDURE" in kept and b"TRIGGER t" in kept  # b's section runs to the footer
