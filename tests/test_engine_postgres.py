"""The PostgreSQL engine against real servers: the shared one on 127.0.0.1:5432 and private clusters we start.

Most tests go through the commands (``cli``), so commands, services and the
engine are tested together; the engine contract (tests/engine_contract.py) and
a few more call the engine or the tool search alone.
Every database and role made here has a unique name and is dropped in
teardown, also when a test fails.
"""

import io
import json
import os
import stat
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from psycopg import sql

from covet.engines import ConnectionParams, DumpOptions, RestoreOptions, compare_manifests
from covet.engines import pg_tools, postgres
from covet.errors import DamagedError, ToolError, UsageError
from backups.models import AuditEvent, Backup, DatabaseTarget

from tests.helpers import wait_for
from bench.servers.postgres import PG_BIN, PrivateCluster, connect
from tests.engine_contract import BreaksHalfway, ContractDatabases, EngineContract
from tests.pg_fixtures import database_exists, drop_database, processes, table_checksums, unique

pytestmark = pytest.mark.django_db(transaction=True)

PG_ARGS = ["--database", "postgresql", "--host", "127.0.0.1", "--port", "5432", "--user", "postgres"]

RICH_SQL = r"""
CREATE SCHEMA sales;
CREATE SCHEMA "Ünï Schema";
CREATE TABLE public.items (
    id serial PRIMARY KEY, name text, note text, payload bytea, doc json, docb jsonb,
    price numeric(12, 2), seen timestamptz, flag boolean, tags text[]);
INSERT INTO public.items (name, note, payload, doc, docb, price, seen, flag, tags)
SELECT 'item ' || g || ' żółć ✓ 日本語 🎉',
       CASE WHEN g % 7 = 0 THEN NULL ELSE repeat('note ', g % 20) END,
       CASE WHEN g % 5 = 0 THEN NULL ELSE decode(md5(g::text) || md5((g * 7)::text), 'hex') END,
       json_build_object('g', g, 'name', 'ü' || g),
       CASE WHEN g % 3 = 0 THEN NULL
            ELSE jsonb_build_object('nested', jsonb_build_object('k', g, 'arr', jsonb_build_array(g, 'x', NULL))) END,
       g * 1.25, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute', g % 2 = 0,
       ARRAY['a' || g, NULL, 'ç']
FROM generate_series(1, 3000) g;
INSERT INTO public.items (name) VALUES (E'tab\there, newline\nand backslash \\ and quotes '' "');
CREATE TABLE sales.orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, customer text NOT NULL,
                           total numeric(12, 2), created timestamptz DEFAULT now());
CREATE TABLE sales.order_lines (order_id bigint REFERENCES sales.orders (id), line int, sku text, qty int,
                                PRIMARY KEY (order_id, line));
CREATE FUNCTION sales.upper_customer() RETURNS trigger LANGUAGE plpgsql
    AS $$BEGIN NEW.customer := upper(NEW.customer); RETURN NEW; END$$;
CREATE TRIGGER orders_upper BEFORE INSERT OR UPDATE ON sales.orders
    FOR EACH ROW EXECUTE FUNCTION sales.upper_customer();
INSERT INTO sales.orders (customer, total, created)
SELECT 'customer ' || g, g * 3.5, timestamptz '2026-02-01 00:00+00' + g * interval '1 hour'
FROM generate_series(1, 500) g;
INSERT INTO sales.order_lines SELECT o, l, 'SKU-' || o || '-' || l, l FROM generate_series(1, 500) o,
    generate_series(1, 3) l;
CREATE VIEW sales.order_totals AS
    SELECT o.id, o.customer, sum(l.qty) AS qty FROM sales.orders o JOIN sales.order_lines l ON l.order_id = o.id
    GROUP BY o.id, o.customer;
CREATE FUNCTION sales.order_count() RETURNS bigint LANGUAGE sql STABLE AS 'SELECT count(*) FROM sales.orders';
CREATE SEQUENCE sales.invoice_no START 1000;
SELECT nextval('sales.invoice_no') FROM generate_series(1, 5);
CREATE TABLE "Ünï Schema"."Mixed ""Quoted"" Täble" (id int PRIMARY KEY, "Välue Col" text);
INSERT INTO "Ünï Schema"."Mixed ""Quoted"" Täble" SELECT g, 'wert ' || g FROM generate_series(1, 50) g;
CREATE TABLE public.docs (id serial PRIMARY KEY, title text, content oid);
INSERT INTO public.docs (title, content)
SELECT 'doc ' || g, lo_from_bytea(0, decode(repeat(md5(g::text), 200), 'hex')) FROM generate_series(1, 3) g;
COMMENT ON TABLE sales.orders IS 'Bestellungen ✓';
"""


class Databases:
    """Throw-away databases and roles on the shared server, dropped in teardown."""

    def __init__(self):
        self.names: list[str] = []
        self.roles: list[str] = []

    def name(self, prefix: str = "covet_t_") -> str:
        name = unique(prefix)
        self.names.append(name)
        return name

    def create(self, name: str | None = None, owner: str | None = None) -> str:
        name = name or self.name()
        if name not in self.names:
            self.names.append(name)
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if owner:
            query += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
        with connect() as conn:
            conn.execute(query)
        return name

    def role(self, prefix: str, options: str = "LOGIN") -> str:
        name = unique(prefix)
        self.roles.append(name)
        with connect() as conn:
            conn.execute(sql.SQL("CREATE ROLE {} " + options).format(sql.Identifier(name)))
        return name

    def cleanup(self) -> None:
        for name in self.names:
            drop_database(name)
        with connect() as conn:
            for role in self.roles:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def pg():
    databases = Databases()
    yield databases
    databases.cleanup()


def run_sql(dbname: str, text: str, server: dict | None = None) -> None:
    with connect(dbname, server) as conn:
        conn.execute(text)


def backup(cli, dbname: str, *extra: str, server_args=PG_ARGS):
    result = cli("backup_database", *server_args, f"--name={dbname}", "--output-format", "json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def restore(cli, backup_id: str, target: str, *extra: str):
    return cli("restore_database", "--backup-id", backup_id, f"--target-database={target}", "--output-format", "json",
               *extra)


def stored_files(root: Path) -> list[Path]:
    return [p for p in Path(root).rglob("*") if p.is_file()] if Path(root).exists() else []


def lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def database_state(dbname: str) -> dict:
    """Everything a round trip must keep: table contents, sequences, large objects, views, functions, triggers."""
    with connect(dbname) as conn:
        return {
            "tables": table_checksums(dbname),
            "sequences": conn.execute("SELECT schemaname, sequencename, last_value FROM pg_sequences "
                                      "ORDER BY 1, 2").fetchall(),
            "large_objects": conn.execute("SELECT md5(lo_get(oid)) FROM pg_largeobject_metadata "
                                          "ORDER BY oid").fetchall(),
            "view": conn.execute("SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) "
                                 "FROM sales.order_totals t").fetchone(),
            "functions": conn.execute("SELECT p.proname, md5(p.prosrc) FROM pg_proc p JOIN pg_namespace n "
                                      "ON n.oid = p.pronamespace WHERE n.nspname = 'sales' ORDER BY 1").fetchall(),
            "triggers": conn.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1").fetchall(),
            "comment": conn.execute("SELECT obj_description('sales.orders'::regclass)").fetchone(),
        }


# Round trips ---------------------------------------------------------------------------

@pytest.mark.parametrize("parallel", [1, 2])
def test_a_rich_database_round_trips_through_the_commands(cli, default_key, backup_dir, pg, parallel):
    source = pg.create()
    run_sql(source, RICH_SQL)
    before = database_state(source)
    assert len(before["large_objects"]) == 3 and ("sales", "invoice_no", 1004) in before["sequences"]

    out = backup(cli, source, "--parallel", str(parallel))
    row = Backup.objects.get(pk=out["backup_id"])
    meta = row.engine_meta
    assert meta["format"] == ("directory" if parallel > 1 else "custom")
    assert meta["extension"] == ("pgdir.tar" if parallel > 1 else "pgdump")
    assert meta["server_version"].startswith("15.") and meta["pg_dump_version"].startswith("15.")
    assert meta["tools_dir"] == str(PG_BIN)
    assert lsn(meta["start_lsn"]) <= lsn(meta["end_lsn"])
    assert meta["timeline"] >= 1 and meta["snapshot"] and meta["row_count_threshold"] == postgres.ROW_COUNT_EXACT_LIMIT
    assert meta["globals_role_passwords"] is True
    assert row.manifest["consistent"] is True
    assert row.manifest["tables"] == {name: {"rows": rows, "exact": True}
                                      for name, (rows, _) in before["tables"].items()}
    assert "globals.sql" in row.extras
    sidecar = json.loads(next(backup_dir.rglob("*.json")).read_text())
    assert sidecar["engine_meta"]["start_lsn"] == meta["start_lsn"] and sidecar["manifest"] == row.manifest

    target = pg.name()
    result = restore(cli, out["backup_id"], target, "--parallel", str(parallel))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["location"] == f"postgresql://127.0.0.1:5432/{target}"
    assert report["format"] == meta["format"] and report["created"] is True
    assert report["row_counts"] == {"compared": len(before["tables"]), "differences": [], "skipped": []}
    assert database_state(target) == before
    with connect(target) as conn:  # the trigger, its function and the identity column work in the copy
        conn.execute("INSERT INTO sales.orders (customer) VALUES ('new customer')")
        assert conn.execute("SELECT id, customer FROM sales.orders ORDER BY id DESC LIMIT 1").fetchone() == \
            (501, "NEW CUSTOMER")
        assert conn.execute("SELECT sales.order_count()").fetchone()[0] == 501
        assert conn.execute("SELECT nextval('sales.invoice_no')").fetchone()[0] == 1005


def test_a_custom_format_backup_restores_with_parallel_jobs(cli, default_key, backup_dir, pg):
    source = pg.create()
    run_sql(source, RICH_SQL)
    out = backup(cli, source)
    target = pg.name()
    result = restore(cli, out["backup_id"], target, "--parallel", "2")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["jobs"] == 2
    assert database_state(target) == database_state(source)


def test_with_globals_brings_back_a_dropped_owner_role(cli, default_key, backup_dir, pg):
    owner = pg.role("covet_owner_", "NOLOGIN")
    reader = pg.role("covet_reader_", "NOLOGIN")
    source = pg.create(owner=owner)
    run_sql(source, sql.SQL("SET ROLE {owner}; CREATE TABLE ledger (id int PRIMARY KEY, amount numeric); "
                            "INSERT INTO ledger SELECT g, g * 0.5 FROM generate_series(1, 100) g; "
                            "GRANT SELECT ON ledger TO {reader}").format(owner=sql.Identifier(owner),
                                                                         reader=sql.Identifier(reader)).as_string())
    before = table_checksums(source)
    out = backup(cli, source)
    drop_database(source)
    with connect() as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(reader)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(owner)))

    target = pg.name()
    result = restore(cli, out["backup_id"], target)
    assert result.returncode == 5, result.stderr
    assert f'role "{owner}" does not exist' in result.stderr and "--with-globals" in result.stderr
    assert not database_exists(target)  # the half-made database was dropped

    result = restore(cli, out["backup_id"], target, "--with-globals")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["globals"]["statements_failed"] == 0, report["globals"]
    assert "postgres" in report["globals"]["roles_already_present"]
    assert table_checksums(target) == before
    with connect(target) as conn:
        assert conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'ledger'").fetchone()[0] == owner
        assert conn.execute("SELECT has_table_privilege(%s, 'public.ledger', 'SELECT')", (reader,)).fetchone()[0]


# Consistency -----------------------------------------------------------------------------

@pytest.mark.parametrize("parallel", [1, 2])
def test_a_backup_taken_while_rows_are_inserted_is_one_consistent_snapshot(cli, default_key, backup_dir, pg,
                                                                           parallel):
    source = pg.create()
    run_sql(source, """
        CREATE TABLE parent (id bigserial PRIMARY KEY, label text);
        CREATE TABLE child (id bigserial PRIMARY KEY, parent_id bigint NOT NULL REFERENCES parent (id), v text);
        INSERT INTO parent (label) SELECT 'p' || g FROM generate_series(1, 30000) g;
        INSERT INTO child (parent_id, v) SELECT p, repeat('v', 50) FROM generate_series(1, 30000) p,
            generate_series(1, 3);""")
    stop = threading.Event()
    inserted = []

    def writer():
        with connect(source) as conn:
            while not stop.is_set():
                with conn.transaction():  # one parent and its three children per transaction
                    parent = conn.execute("INSERT INTO parent (label) VALUES ('live') RETURNING id").fetchone()[0]
                    conn.execute("INSERT INTO child (parent_id, v) SELECT %s, 'live' FROM generate_series(1, 3)",
                                 (parent,))
                inserted.append(parent)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        wait_for(lambda: len(inserted) > 20, message="the writer to start")
        out = backup(cli, source, "--parallel", str(parallel))
        during = len(inserted)
        wait_for(lambda: len(inserted) > during + 20, message="inserts after the backup")
    finally:
        stop.set()
        thread.join()

    manifest = Backup.objects.get(pk=out["backup_id"]).manifest["tables"]
    assert 30000 + 20 < manifest["public.parent"]["rows"] < 30000 + len(inserted)  # taken while inserting
    assert manifest["public.child"]["rows"] == 3 * manifest["public.parent"]["rows"]

    target = pg.name()
    result = restore(cli, out["backup_id"], target, "--parallel", str(parallel))
    assert result.returncode == 0, result.stderr  # any count difference would fail the restore with exit 4
    assert json.loads(result.stdout)["row_counts"]["compared"] == 2
    with connect(target) as conn:
        parents, low, high = conn.execute("SELECT count(*), min(id), max(id) FROM parent").fetchone()
        assert parents == manifest["public.parent"]["rows"] and (low, high) == (1, parents)  # no gap, no tear
        assert conn.execute("SELECT count(*) FROM child").fetchone()[0] == 3 * parents
        assert conn.execute("SELECT count(*) FROM child c LEFT JOIN parent p ON p.id = c.parent_id "
                            "WHERE p.id IS NULL").fetchone()[0] == 0
        assert conn.execute("SELECT convalidated FROM pg_constraint WHERE contype = 'f'").fetchone()[0] is True


# Table-level restore, --clean ----------------------------------------------------------------

def test_table_restore_brings_back_exactly_the_named_tables(cli, default_key, backup_dir, pg):
    source = pg.create()
    run_sql(source, '''
        CREATE SCHEMA north; CREATE SCHEMA "Süd Zone";
        CREATE TABLE north.alpha (id serial PRIMARY KEY, v text);
        CREATE TABLE north."Beta ""Two""" (id int PRIMARY KEY, alpha_id int REFERENCES north.alpha (id));
        CREATE TABLE "Süd Zone".alpha (id int PRIMARY KEY, w text);
        CREATE TABLE "Süd Zone"."Beta ""Two""" (id int PRIMARY KEY, "Wört" text);
        CREATE INDEX alpha_v ON north.alpha (v);
        INSERT INTO north.alpha (v) SELECT 'n' || g FROM generate_series(1, 200) g;
        INSERT INTO north."Beta ""Two""" SELECT g, g FROM generate_series(1, 50) g;
        INSERT INTO "Süd Zone".alpha SELECT g, 's' || g FROM generate_series(1, 70) g;
        INSERT INTO "Süd Zone"."Beta ""Two""" SELECT g, 'ü' || g FROM generate_series(1, 90) g;''')
    before = table_checksums(source)
    out = backup(cli, source)
    wanted = ["north.alpha", 'Süd Zone.Beta "Two"']

    target = pg.name()
    result = restore(cli, out["backup_id"], target, "--table", wanted[0], "--table", wanted[1])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["row_counts"]["compared"] == 2 and report["tables"] == sorted(wanted)
    assert table_checksums(target) == {name: before[name] for name in wanted}  # not the cross pairings
    with connect(target) as conn:
        assert conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'alpha_v'").fetchone()[0] == 1
        conn.execute("INSERT INTO north.alpha (v) VALUES ('next')")  # its sequence came along, with its value
        assert conn.execute("SELECT max(id) FROM north.alpha").fetchone()[0] == 201

    unknown = pg.name()
    result = restore(cli, out["backup_id"], unknown, "--table", "north.gamma")
    assert result.returncode == 2
    assert "north.gamma" in result.stderr and 'Süd Zone.Beta "Two"' in result.stderr
    assert not database_exists(unknown)


def test_clean_is_needed_to_replace_and_a_damaged_backup_never_touches_the_database(cli, default_key, backup_dir,
                                                                                    pg):
    source = pg.create()
    run_sql(source, "CREATE TABLE t (id int PRIMARY KEY, v text); "
                    "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g;")
    before = table_checksums(source)
    out = backup(cli, source)

    result = restore(cli, out["backup_id"], source)
    assert result.returncode == 2
    assert source in result.stderr and "--clean" in result.stderr

    copy = pg.name()
    assert restore(cli, out["backup_id"], copy).returncode == 0
    run_sql(copy, "DELETE FROM t WHERE id % 2 = 0; UPDATE t SET v = 'changed'; CREATE TABLE local_extra (x int);")
    result = restore(cli, out["backup_id"], copy, "--clean")
    assert result.returncode == 0, result.stderr
    after = table_checksums(copy)
    assert after["public.t"] == before["public.t"]
    assert "public.local_extra" in after  # --clean replaces what the backup holds, nothing else

    run_sql(copy, "UPDATE t SET v = 'edited after restore' WHERE id = 1")
    edited = table_checksums(copy)
    stored = backup_dir / Backup.objects.get(pk=out["backup_id"]).storage_key  # the dump, not its globals
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    result = restore(cli, out["backup_id"], copy, "--clean")
    assert result.returncode == 4, result.stderr
    assert table_checksums(copy) == edited


# Names -------------------------------------------------------------------------------------

@pytest.mark.parametrize("label", ["--foo", "-h evil", 'Mixed "Quoted" Ünï', "host=nowhere port=1"])
def test_odd_database_names_stay_names(cli, default_key, backup_dir, pg, label):
    source = pg.create(f"{label} {unique('')}")
    run_sql(source, 'CREATE TABLE "Odd ""Table"" Ü" ("Col A" int, "cOl b" text); '
                    "INSERT INTO \"Odd \"\"Table\"\" Ü\" SELECT g, 'x' || g FROM generate_series(1, 10) g;")
    out = backup(cli, source)
    assert Backup.objects.get(pk=out["backup_id"]).database_name == source

    target = pg.create(f"{label} restored {unique('')}")  # an existing, empty database is used as it is
    result = restore(cli, out["backup_id"], target)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["created"] is False
    assert table_checksums(target) == table_checksums(source)


# Credentials ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scram_cluster():
    """A private cluster that really asks for passwords (scram-sha-256), unlike the shared trusting one."""
    cluster = PrivateCluster(password=unique("superpw-"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def test_a_password_reaches_the_tools_only_through_a_private_pgpassfile(cli, default_key, backup_dir, settings,
                                                                        scram_cluster, tmp_path):
    password = f"pw:with\\odd 'chars' {unique('')}"
    with connect(server=scram_cluster.server) as conn:
        conn.execute(sql.SQL("CREATE ROLE covet_pw LOGIN CREATEDB PASSWORD {}").format(sql.Literal(password)))
        conn.execute("CREATE DATABASE covet_pw_db OWNER covet_pw")
    server = {**scram_cluster.server, "user": "covet_pw", "password": password}
    run_sql("covet_pw_db", "CREATE TABLE t (id int, v text); "
                           "INSERT INTO t SELECT g, md5(g::text) || repeat('x', 80) FROM generate_series(1, 150000) g",
            server)
    password_file = tmp_path / "db.password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    args = ["--database", "postgresql", "--host", "127.0.0.1", "--port", str(scram_cluster.port), "--user", "covet_pw",
            "--password-file", str(password_file)]

    results = []
    thread = threading.Thread(target=lambda: results.append(cli(
        "backup_database", *args, "--name=covet_pw_db", "--compress", "bzip2", "--output-format", "json")))
    thread.start()
    seen = []
    while thread.is_alive():
        listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert password not in listing
        for _pid, cmdline, environ in processes(f"port={scram_cluster.port}"):
            if cmdline.split(" ", 1)[0].endswith("/pg_dump") and "PGPASSFILE" in environ:
                try:
                    mode = stat.S_IMODE(os.stat(environ["PGPASSFILE"]).st_mode)
                except FileNotFoundError:
                    continue
                seen.append((cmdline, environ, mode))
        time.sleep(0.05)
    thread.join()
    result = results[0]
    assert result.returncode == 0, result.stderr
    assert seen, "pg_dump was never seen running"
    cmdline, environ, mode = seen[0]
    pgpass = Path(environ["PGPASSFILE"])
    assert pgpass.is_relative_to(settings.COVET_TMP_DIR) and mode == 0o600
    assert "PGPASSWORD" not in environ and password not in cmdline
    assert not any(password in value for value in environ.values())
    assert not pgpass.exists() and not pgpass.parent.exists()

    backup_id = json.loads(result.stdout)["backup_id"]
    row = Backup.objects.get(pk=backup_id)
    assert row.engine_meta["globals_role_passwords"] is False  # not a superuser: roles without their passwords
    texts = [result.stdout, result.stderr, json.dumps(row.engine_meta), row.error, json.dumps(row.manifest),
             json.dumps([e.detail for e in AuditEvent.objects.all()]),
             json.dumps(list(DatabaseTarget.objects.values()), default=str)]
    texts += [p.read_text(errors="replace") for p in backup_dir.rglob("*.json")]
    assert not any(password in text for text in texts)
    assert b"covet_pw" not in next(backup_dir.rglob("*.covet")).read_bytes()  # encrypted

    restored = unique()
    result = restore(cli, backup_id, restored)  # pg_restore and psycopg authenticate the same way
    assert result.returncode == 0, result.stderr
    assert table_checksums(restored, server) == table_checksums("covet_pw_db", server)

    wrong = tmp_path / "wrong.password"
    wrong.write_text(f"wrong-{unique('')}")
    assert cli("target", "add", "pw-wrong", "--database", "postgresql", "--name", "covet_pw_db", "--host",
               "127.0.0.1", "--port", str(scram_cluster.port), "--user", "covet_pw", "--password-file",
               str(wrong)).returncode == 0
    result = cli("backup_database", "--target", "pw-wrong")
    assert result.returncode == 5
    assert 'password authentication failed for user "covet_pw"' in result.stderr
    failed = Backup.objects.get(target__name="pw-wrong")
    assert "password authentication failed" in failed.error
    assert wrong.read_text() not in result.stderr + failed.error


# Failures -----------------------------------------------------------------------------------

def test_a_missing_database_fails_with_exit_3_and_leaves_nothing(cli, default_key, backup_dir, settings):
    name = unique("covet_missing_")
    result = cli("backup_database", *PG_ARGS, f"--name={name}")
    assert result.returncode == 3
    assert f'database "{name}" does not exist' in result.stderr and "Traceback" not in result.stderr
    failed = Backup.objects.get()
    assert failed.status == "failed" and f'database "{name}" does not exist' in failed.error
    assert not stored_files(backup_dir)
    assert not list(Path(settings.COVET_TMP_DIR).glob(f"backup-{failed.pk}*"))


def test_permission_denied_fails_with_exit_5_and_the_servers_own_words(cli, default_key, backup_dir, pg):
    role = pg.role("covet_limited_")
    locked = pg.create()
    run_sql("postgres", sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(sql.Identifier(locked)).as_string())
    secret = pg.create()
    run_sql(secret, "CREATE TABLE open_data (id int); CREATE TABLE secret (id int); "
                    f'GRANT SELECT ON open_data TO "{role}"')
    args = ["--database", "postgresql", "--host", "127.0.0.1", "--port", "5432", "--user", role]

    result = cli("backup_database", *args, f"--name={locked}")
    assert result.returncode == 5
    assert f'permission denied for database "{locked}"' in result.stderr
    assert "permission denied for database" in Backup.objects.get(database_name=locked).error

    result = cli("backup_database", *args, f"--name={secret}", "--parallel", "2")
    assert result.returncode == 5
    error = Backup.objects.get(database_name=secret).error
    assert error.startswith("pg_dump failed:") and "permission denied for table secret" in error
    assert "permission denied for table secret" in result.stderr
    assert not stored_files(backup_dir)


def copying(server: dict, table: str) -> bool:
    """Return whether a session on ``server`` is running a COPY of ``table`` right now."""
    with connect(server=server) as conn:
        return conn.execute("SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s",
                            (f"COPY {table} %",)).fetchone() is not None


def test_a_server_killed_mid_dump_fails_the_backup_with_pg_dumps_message(cli, default_key, backup_dir, settings):
    cluster = PrivateCluster()
    try:
        cluster.start()
        with connect(server=cluster.server) as conn:
            conn.execute("CREATE DATABASE big")
        run_sql("big", "CREATE TABLE filler (id int, v text); INSERT INTO filler "
                       "SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 250000) g", cluster.server)
        results = []
        thread = threading.Thread(target=lambda: results.append(cli(
            "backup_database", "--database", "postgresql", "--host", "127.0.0.1", "--port", str(cluster.port),
            "--user", "postgres", "--name=big", "--compress", "bzip2", "--compress-level", "9")))
        thread.start()
        # The server itself says when pg_dump is streaming rows (a process named pg_dump may still be
        # connecting, or be pg_dumpall): bzip2 -9 holds the COPY back, so it is still running when the server dies.
        wait_for(lambda: copying(cluster.server, "public.filler"), timeout=30, interval=0.02,
                 message="pg_dump to copy the table")
        cluster.kill()
        thread.join(timeout=60)
    finally:
        cluster.stop()
    result = results[0]
    assert result.returncode == 5, result.stderr
    failed = Backup.objects.get()
    assert failed.status == "failed" and failed.error.startswith("pg_dump failed:")
    assert any(words in failed.error for words in ("unexpected postmaster exit", "server closed the connection",
                                                   "terminating connection")), failed.error
    assert not stored_files(backup_dir)
    assert not list(Path(settings.COVET_TMP_DIR).glob(f"backup-{failed.pk}*"))


def test_a_full_target_disk_fails_the_backup_with_exit_6_and_leaves_nothing(cli, default_key, settings, pg,
                                                                            tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}); the disk-full case is not tested")
    try:
        settings.COVET_BACKUP_DIR = small
        source = pg.create()
        run_sql(source, "CREATE TABLE noise (id int, b bytea); INSERT INTO noise "
                        "SELECT g, decode(md5(random()::text) || md5(random()::text), 'hex') "
                        "FROM generate_series(1, 150000) g")
        result = cli("backup_database", *PG_ARGS, f"--name={source}")
        assert result.returncode == 6, result.stderr
        failed = Backup.objects.get()
        assert "No space left on device" in failed.error and "No space left on device" in result.stderr
        assert not stored_files(small)
    finally:
        subprocess.run(["umount", str(small)], check=False)


# Tool choice ---------------------------------------------------------------------------------

def fake_tools(directory: Path, version: str) -> Path:
    directory.mkdir(parents=True)
    for tool in pg_tools.TOOLS:
        script = directory / tool
        script.write_text(f"#!/bin/sh\necho '{tool} (PostgreSQL) {version}'\n")
        script.chmod(0o755)
    return directory


def linked_tools(lib: Path, *majors: int) -> Path:
    for major in majors:
        bin_dir = lib / str(major) / "bin"
        bin_dir.mkdir(parents=True)
        for tool in pg_tools.TOOLS:
            (bin_dir / tool).symlink_to(PG_BIN / tool)
    return lib


def test_the_smallest_new_enough_tool_directory_is_chosen(tmp_path):
    lib = linked_tools(tmp_path / "lib", 14, 16, 17)
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    assert postgres.find_tools(15, lib, str(nothing))["pg_dump"] == str(lib / "16" / "bin" / "pg_dump")
    assert postgres.find_tools(14, lib, str(nothing)).major == 14
    with pytest.raises(ToolError) as raised:
        postgres.find_tools(18, lib, str(nothing))
    message = str(raised.value)
    assert "version 18 or newer" in message and f"version 17 in {lib / '17' / 'bin'}" in message
    assert "postgresql-client-18" in message


def test_path_tools_are_used_only_when_new_enough(tmp_path):
    empty = tmp_path / "lib"
    empty.mkdir()
    path_dir = fake_tools(tmp_path / "bin", "13.9")
    assert postgres.find_tools(12, empty, str(path_dir))["pg_restore"] == str(path_dir / "pg_restore")
    with pytest.raises(ToolError) as raised:
        postgres.find_tools(15, empty, str(path_dir))
    assert "version 15 or newer" in str(raised.value) and f"version 13 on PATH ({path_dir / 'pg_dump'})" in str(
        raised.value)


def test_a_backup_without_suitable_tools_fails_with_exit_5_naming_what_is_needed(cli, monkeypatch, default_key,
                                                                                backup_dir, pg, tmp_path):
    from backups.services.runs import BackupRequest, create_backup, run_backup
    from backups.services.targets import add_target

    monkeypatch.setattr(pg_tools, "PG_LIB_DIR", tmp_path)
    monkeypatch.setattr(pg_tools, "TOOL_SEARCH_PATH", str(tmp_path))
    source = pg.create()
    target = add_target("pg", "postgresql", source, host="127.0.0.1", port=5432, user="postgres")
    pending = create_backup(BackupRequest(target=target))
    with pytest.raises(ToolError) as raised:
        run_backup(pending.id)
    assert raised.value.exit_code == 5
    assert "installed: none" in str(raised.value)
    failed = Backup.objects.get(pk=pending.pk)
    assert failed.status == "failed" and "of version 15 or newer" in failed.error
    assert not stored_files(backup_dir)


# The engine alone -------------------------------------------------------------------------------

def new_engine(tmp_path) -> postgres.PostgresEngine:
    return postgres.PostgresEngine(ConnectionParams(host="127.0.0.1", port=5432, user="postgres"),
                                   str(tmp_path / "engine-tmp"))


class SharedServerDatabases(ContractDatabases):
    """The contract's databases on the shared server, made and dropped by a ``Databases``."""

    def __init__(self, made: Databases):
        self.made = made

    def table(self, name: str) -> str:
        return f"public.{name}"

    def create(self, rows: list[tuple]) -> str:
        name = self.made.create()
        with connect(name) as conn:
            conn.execute("CREATE TABLE items (id integer PRIMARY KEY, note text); "
                         "CREATE TABLE empty (id integer PRIMARY KEY)")
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO items VALUES (%s, %s)", rows)
        return name

    def new_name(self) -> str:
        return self.made.name()

    def rows(self, database: str) -> list[tuple]:
        with connect(database) as conn:
            return conn.execute("SELECT id, note FROM items ORDER BY id").fetchall()

    def traces(self, database: str) -> list[str]:
        return [database] if database_exists(database) else []


class TestPostgresEngineContract(EngineContract):
    @pytest.fixture
    def engine(self, tmp_path):
        return new_engine(tmp_path)

    @pytest.fixture
    def databases(self, pg):
        return SharedServerDatabases(pg)


def test_tables_above_the_threshold_are_estimated_and_never_reported_as_differences(pg, tmp_path, monkeypatch):
    source = pg.create()
    run_sql(source, "CREATE TABLE small (id int); CREATE TABLE large (id int); "
                    "INSERT INTO large SELECT generate_series(1, 5000); ANALYZE large;")
    monkeypatch.setattr(postgres, "ROW_COUNT_EXACT_LIMIT", 8192)  # one page: "small" is empty, "large" is not
    pg_engine = new_engine(tmp_path)
    with pg_engine.dump(source) as dump:
        data = dump.stream.read()
        assert dump.stream.read() == b""
        assert dump.meta["end_lsn"] and dump.meta["row_count_threshold"] == 8192
        manifest = dump.manifest
    assert manifest["tables"] == {"public.large": {"rows": 5000, "exact": False},
                                  "public.small": {"rows": 0, "exact": True}}
    target = pg.name()
    pg_engine.restore(io.BytesIO(data), target)
    assert compare_manifests(manifest, pg_engine.row_counts(target)) == {
        "compared": 1, "differences": [], "skipped": ["public.large"]}
    assert not list((tmp_path / "engine-tmp").iterdir())


def test_a_stream_that_breaks_mid_parallel_restore_leaves_no_database_behind(pg, tmp_path):
    # The contract covers a streamed restore; a parallel one unpacks a directory-format dump first.
    source = pg.create()
    run_sql(source, "CREATE TABLE t (id int, v text); "
                    "INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g")
    pg_engine = new_engine(tmp_path)
    with pg_engine.dump(source, DumpOptions(parallel=2)) as dump:
        data = b"".join(iter(lambda: dump.stream.read(65536), b""))
    target = pg.name()
    with pytest.raises(DamagedError, match="frame 3"):
        pg_engine.restore(BreaksHalfway(data), target, RestoreOptions(parallel=2))
    assert not database_exists(target)
    assert not list((tmp_path / "engine-tmp").iterdir())


def test_a_parallel_dump_refuses_to_start_without_room_for_its_directory(pg, tmp_path, monkeypatch):
    source = pg.create()
    run_sql(source, "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000)")
    full = SimpleNamespace(total=10 ** 9, used=10 ** 9, free=0)
    monkeypatch.setattr(postgres.shutil, "disk_usage", lambda path: full)
    with pytest.raises(UsageError) as raised:
        with new_engine(tmp_path).dump(source, DumpOptions(parallel=2)):
            pytest.fail("the dump started")
    assert "0 MiB free" in str(raised.value) and "--parallel 1" in str(raised.value)
    assert not list((tmp_path / "engine-tmp").iterdir())
