"""Benchmark MySQL/MariaDB point-in-time recovery: binlog replay next to the bare tools, and archive lag (RPO).

Run from the repository root (mariadbd, mariadb, mariadb-binlog and
mariadb-install-db installed; no server needs to be running):

    .venv/bin/python bench/binlog_replay.py                 # ~1 GiB of binlogs, 2 rounds, RPO at 5 s and 1 s
    .venv/bin/python bench/binlog_replay.py --small         # ~150 MiB of binlogs: a quick check (~5 min)
    .venv/bin/python bench/binlog_replay.py --rounds 3 --rpo-seconds 120 --rpo-timeouts 60,5,1

Everything happens on a private mariadbd (bench/servers/mariadb.py:
BinlogServer: own temporary datadir, free port, --log-bin, --server-id,
binlog_format=ROW, 128 MB buffer pool) and a private Covet site
(bench/harness.py: catalog, key, local storage in a temporary directory),
both removed at the end, also on failure (the server is stopped by PID).

1. Schema ``shop`` (customers, orders, order_events, inventory, ticks:
   INT/BIGINT, DECIMAL, DOUBLE/FLOAT, ENUM, CHAR/VARCHAR with non-ASCII text,
   TEXT/MEDIUMTEXT, JSON, VARBINARY/BLOB, DATE, DATETIME(6), TIMESTAMP(3),
   NULLs), about 100 MB at full size; ``manage.py target add`` +
   ``setup_pitr`` register it with binlog archiving on.
2. RPO: ``manage.py binlog_archive --target bench --archive-timeout N`` runs
   as the service while one client inserts ``--rpo-rate`` rows/s (one
   autocommitted row each, into ``ticks``) for ``--rpo-seconds``, for each N of
   ``--rpo-timeouts``. After each commit the load notes the commit time and
   the binlog position (SHOW MASTER STATUS); every 0.25 s the catalog's
   newest ArchivedLog row (the live file's partial: name, end_position) is
   read. Lag = commit time of the newest committed row minus commit time of
   the newest row whose commit lies inside the archived bytes: what a loss
   of the server at that instant would lose. Also shown: what the catalog
   alone tells (now - last_event_at; binlog times are whole seconds, so that
   view is up to 1 s coarser). Each run starts on a fresh live binlog
   (FLUSH BINARY LOGS) and samples only once the archiver has shipped the
   live file (start-up and catch-up are reported apart). One more run at the
   first timeout starts with ``--rpo-live-mb`` already in the live binlog
   (other schema): a partial is the live file shipped whole, so its cost
   grows with the file (up to max_binlog_size, 1 GiB by default). Median
   and max are printed.
3. A full backup through our tool (``manage.py backup_database --target
   bench``: zstd, aes-256-gcm, local storage; it records the binlog
   coordinates under a brief global read lock).
4. An unmeasured workload writes ``--size-mb`` of binlog after those
   coordinates: per round a batch of order inserts, event inserts, a range
   update of orders and of customers (JSON_SET), a range delete of events, an
   update of wide inventory rows, and 50 small 3-statement transactions; half
   way an ALTER TABLE ADD COLUMN and a CREATE TABLE (statement events
   without a schema qualifier, as an application issues them). The binlog
   rotates by FLUSH BINARY LOGS every size/8 (max_binlog_size 256M too), so
   there are ~9 files. Then FLUSH BINARY LOGS, and ``manage.py binlog_archive
   --target bench --once`` ships all of it (timed, shown as an extra figure).
   Plain copies of the same binlog files are taken from the datadir, and
   the backup's plain dump with ``restore_database --download-only``.
5. ``--rounds`` pairs, the order alternating (ours first in odd rounds), each
   command timed whole through bench/measure.py (wall, CPU of it and its
   children, peak RSS; mariadbd's own CPU is read from /proc around it):
   - ours: ``manage.py restore_database --target bench --pitr-target latest
     --target-database NEW --output-format json``: picks the backup, fetches,
     authenticates and decrypts the binlogs, scans them, restores the dump,
     replays with mariadb-binlog | mariadb (per file, through Python). The
     JSON result has no phase timings, so its phases are observed from
     outside (every 0.2 s): the recovery's spool directory appearing (fetch
     + scan starts), the new schema's directory appearing in the datadir
     (dump restore starts), the first and last replaying mariadb-binlog /
     client process;
   - by hand, the same work from the plain files: ``CREATE DATABASE NEW`` +
     ``mariadb --binary-mode NEW < dump.sql``, then ``mariadb-binlog
     --disable-log-bin --database=shop --rewrite-db='shop->NEW'
     --start-position=POS FILES... | mariadb --binary-mode``.
   Before each side the run waits (up to 120 s) until InnoDB has flushed
   its dirty pages, so neither pays for the other's (or the workload's)
   background writes. Both results are compared with the source (row count and CHECKSUM TABLE
   per table; a content checksum where CHECKSUM TABLE differs); a mismatch
   is printed loudly and the run goes on, then exits with status 1.
   Printed: medians, the ratio ours/by hand (median of per-round ratios) for
   the whole recovery and for the replay alone.

Noisy: a 2-core machine shared with other work gives run-to-run swings of
10-20 %; compare the rounds. Not a test: it prints figures and asserts
nothing about them (except that the recovered data is right).
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pymysql

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: the root, so covet and bench import by their package names

from bench import harness  # noqa: E402
from bench.harness import MiB, Run, measure  # noqa: E402
from bench.servers.mariadb import BinlogServer, execute, master_status, private_base, q, table_checksum  # noqa: E402

DB = "shop"
TARGET = "bench"
PYTHON = sys.executable
MANAGE = str(REPO / "manage.py")

DDL = [
    """CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(80) NOT NULL, email VARCHAR(120),
       country CHAR(2), credit DECIMAL(12,2) NOT NULL DEFAULT 0, tier TINYINT UNSIGNED, created_at DATETIME(6),
       profile JSON, active BOOLEAN NOT NULL DEFAULT 1, KEY (country))""",
    """CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id INT NOT NULL,
       status ENUM('new','paid','shipped','delivered','cancelled','refunded') NOT NULL,
       placed_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3), total DECIMAL(10,2), weight DOUBLE,
       items SMALLINT, tracking VARCHAR(40), note TEXT, KEY (customer_id), KEY (status))""",
    """CREATE TABLE order_events (id BIGINT AUTO_INCREMENT PRIMARY KEY, order_id BIGINT NOT NULL,
       kind VARCHAR(20), at DATETIME(6), payload VARBINARY(255), note VARCHAR(200), KEY (order_id))""",
    """CREATE TABLE inventory (sku INT PRIMARY KEY, qty INT NOT NULL, price FLOAT, restocked DATE,
       descr MEDIUMTEXT, photo BLOB)""",
    "CREATE TABLE ticks (id BIGINT PRIMARY KEY, at DATETIME(6) NOT NULL, note VARCHAR(40))",
]
STATUS = "ELT(1 + FLOOR(RAND() * 6), 'new', 'paid', 'shipped', 'delivered', 'cancelled', 'refunded')"
KIND = "ELT(1 + FLOOR(RAND() * 4), 'created', 'paid', 'shipped', 'delivered')"
ORDER_COLUMNS = "id, customer_id, status, placed_at, total, weight, items, tracking, note"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# The server and the site -----------------------------------------------------------------------------------

def connect(server: BinlogServer, database: str | None = DB) -> pymysql.connections.Connection:
    return pymysql.connect(unix_socket=server.socket, user="root", database=database, charset="utf8mb4",
                           autocommit=True)


def binlog_bytes_since(conn, first: str, position: int) -> int:
    rows = execute(conn, "SHOW BINARY LOGS")
    return sum(int(size) for name, size, *_ in rows if name >= first) - position


def server_cpu(server: BinlogServer) -> float:
    fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Site(harness.Site):
    """bench/harness.py's private site, plus calls whose output we need and the catalog from this process."""

    def call(self, *argv: str) -> str:
        done = subprocess.run([PYTHON, MANAGE, *argv], env=self.env, cwd=REPO, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"manage.py {shlex.join(argv)} failed ({done.returncode}): {done.stderr[-3000:]}"
                               f"{done.stdout[-2000:]}")
        return done.stdout

    def django(self) -> None:
        """Open the site's catalog from this process (read-only use: ArchivedLog, Backup)."""
        os.environ.update({key: value for key, value in self.env.items() if key.startswith("COVET_")})
        os.environ["DJANGO_SETTINGS_MODULE"] = "covet_site.settings"
        import django

        django.setup()


# The schema and the workload ---------------------------------------------------------------------------------

def create_schema(server: BinlogServer, scale: float) -> dict:
    """Create ``shop`` with about 100 MB of rows at scale 1; return the row counts made."""
    counts = {"customers": int(100_000 * scale), "orders": int(200_000 * scale),
              "order_events": int(200_000 * scale), "inventory": int(10_000 * scale)}
    with connect(server, None) as conn:
        execute(conn, f"CREATE DATABASE {DB} CHARACTER SET utf8mb4")
    with connect(server) as conn:
        for statement in DDL:
            execute(conn, statement)
        for start in range(0, counts["customers"], 20_000):
            end = min(counts["customers"], start + 20_000)
            execute(conn, f"""INSERT INTO customers SELECT seq, CONCAT('Customer ', seq, IF(seq % 7 = 0, ' Zoë ☕', ''),
                ' ', LEFT(MD5(seq), 8)), CONCAT('c', seq, '@example.org'),
                ELT(1 + seq % 6, 'DE', 'FR', 'US', 'JP', 'BR', 'IN'), ROUND(RAND() * 1000, 2), 1 + seq % 5,
                NOW(6) - INTERVAL seq SECOND, JSON_OBJECT('lang', ELT(1 + seq % 3, 'de', 'fr', 'en'),
                'newsletter', seq % 2 = 0, 'tags', JSON_ARRAY('a', 'b', seq % 10)), seq % 11 <> 0
                FROM seq_{start + 1}_to_{end}""")
        for start in range(0, counts["orders"], 20_000):
            end = min(counts["orders"], start + 20_000)
            execute(conn, order_insert(start + 1, end, counts["customers"]))
        for start in range(0, counts["order_events"], 20_000):
            end = min(counts["order_events"], start + 20_000)
            execute(conn, event_insert(end - start, counts["orders"]))
        execute(conn, f"""INSERT INTO inventory SELECT seq, FLOOR(RAND() * 1000), RAND() * 100,
            CURDATE() - INTERVAL seq % 365 DAY, REPEAT(CONCAT('Part ', seq, ' ', MD5(seq), '. '), 20),
            UNHEX(REPEAT(MD5(seq), 8)) FROM seq_1_to_{counts['inventory']}""")
    return counts


def order_insert(first: int, last: int, customers: int, columns: str = ORDER_COLUMNS, extra: str = "") -> str:
    return f"""INSERT INTO orders ({columns}) SELECT seq, 1 + FLOOR(RAND() * {customers}), {STATUS},
        NOW(3) - INTERVAL FLOOR(RAND() * 2592000) SECOND, ROUND(1 + RAND() * 500, 2), RAND() * 20,
        1 + FLOOR(RAND() * 12), NULL, IF(RAND() < 0.4, REPEAT(CONCAT(MD5(seq), ' '), 1 + seq % 4), NULL){extra}
        FROM seq_{first}_to_{last}"""


def event_insert(count: int, orders: int) -> str:
    return f"""INSERT INTO order_events (order_id, kind, at, payload, note) SELECT 1 + FLOOR(RAND() * {orders}),
        {KIND}, NOW(6), UNHEX(CONCAT(MD5(seq), SHA1(seq))), CONCAT('event ', seq, IF(seq % 5 = 0, ' — ✓', ''))
        FROM seq_1_to_{count}"""


def workload(server: BinlogServer, counts: dict, target_bytes: int, start: tuple[str, int]) -> dict:
    """Write about ``target_bytes`` of binlog after ``start`` (unmeasured); return what was done."""
    rnd = random.Random(20240611)
    done = {"rounds": 0, "small_transactions": 0, "flushes": 0}
    customers, next_order, inventory = counts["customers"], counts["orders"] + 1, counts["inventory"]
    flush_every = max(8 * MiB, target_bytes // 8)
    next_flush = flush_every
    columns, extra, altered = ORDER_COLUMNS, "", False
    started = time.perf_counter()
    with connect(server) as conn:
        execute(conn, "SET GLOBAL max_binlog_size = 268435456")
        while True:
            written = binlog_bytes_since(conn, *start)
            if written >= target_bytes:
                break
            if written >= next_flush:
                execute(conn, "FLUSH BINARY LOGS")
                done["flushes"] += 1
                next_flush += flush_every
            if not altered and written >= target_bytes // 2:
                # DDL half way, as an application issues it (no schema qualifier).
                execute(conn, "ALTER TABLE orders ADD COLUMN gift_wrap BOOLEAN NOT NULL DEFAULT 0",
                        "CREATE TABLE coupons (code VARCHAR(16) PRIMARY KEY, percent TINYINT, valid_until DATE, "
                        "used_by INT NULL)")
                columns, extra, altered = ORDER_COLUMNS + ", gift_wrap", ", seq % 9 = 0", True
            if done["rounds"] % 20 == 0:
                log(f"  workload: {written / MiB:.0f} of {target_bytes / MiB:.0f} MiB of binlog written")
            for _ in range(5):
                r = done["rounds"]
                execute(conn, order_insert(next_order, next_order + 1999, customers, columns, extra))
                next_order += 2000
                execute(conn, event_insert(3000, next_order - 1))
                first = rnd.randint(1, next_order - 3000)
                execute(conn, f"UPDATE orders SET status = {STATUS}, tracking = COALESCE(tracking, CONCAT('1Z', id)), "
                              f"total = total + 1 WHERE id BETWEEN {first} AND {first + 2999}")
                first = rnd.randint(1, customers - 1500)
                execute(conn, f"UPDATE customers SET credit = credit + ROUND(RAND() * 40, 2), "
                              f"tier = 1 + FLOOR(RAND() * 5), profile = JSON_SET(profile, '$.round', {r}) "
                              f"WHERE id BETWEEN {first} AND {first + 1499}")
                low = execute(conn, "SELECT MIN(id), MAX(id) FROM order_events")[0]
                first = rnd.randint(low[0], max(low[0], low[1] - 1000))
                execute(conn, f"DELETE FROM order_events WHERE id BETWEEN {first} AND {first + 999}")
                first = rnd.randint(1, max(1, inventory - 100))
                execute(conn, f"UPDATE inventory SET qty = qty + FLOOR(RAND() * 10) - 5, price = price * 1.01, "
                              f"restocked = CURDATE() WHERE sku BETWEEN {first} AND {first + 99}")
                if altered:
                    execute(conn, "INSERT INTO coupons VALUES (%s, %s, CURDATE() + INTERVAL 30 DAY, NULL)",
                            args=(f"C{r:08d}", 5 + r % 30))
                with conn.cursor() as cur:
                    for _ in range(50):
                        customer, order = rnd.randint(1, customers), rnd.randint(1, next_order - 1)
                        cur.execute("BEGIN")
                        cur.execute("UPDATE customers SET credit = credit - %s WHERE id = %s",
                                    (rnd.randint(1, 5000) / 100, customer))
                        cur.execute("UPDATE orders SET status = 'paid', placed_at = NOW(3) WHERE id = %s", (order,))
                        cur.execute("INSERT INTO order_events (order_id, kind, at, payload, note) "
                                    "VALUES (%s, 'paid', NOW(6), %s, %s)",
                                    (order, rnd.randbytes(16), f"paid by customer {customer} · €"))
                        cur.execute("COMMIT")
                done["small_transactions"] += 50
                done["rounds"] += 1
        execute(conn, "FLUSH BINARY LOGS")
        done["binlog_bytes"] = binlog_bytes_since(conn, *start)
    done["seconds"] = time.perf_counter() - started
    return done


def fingerprints(server: BinlogServer, schema: str, tables: list[str]) -> dict[str, tuple]:
    """Per table: (row count, CHECKSUM TABLE); a missing table shows as None."""
    result = {}
    with connect(server, None) as conn:
        present = {row[0] for row in execute(conn, "SELECT TABLE_NAME FROM information_schema.TABLES "
                                                   "WHERE TABLE_SCHEMA = %s", args=(schema,))}
        for table in tables:
            if table not in present:
                result[table] = None
                continue
            count = execute(conn, f"SELECT COUNT(*) FROM {q(schema)}.{q(table)}")[0][0]
            checksum = execute(conn, f"CHECKSUM TABLE {q(schema)}.{q(table)}")[0][1]
            result[table] = (count, checksum)
    return result


def compare(server: BinlogServer, side: str, schema: str, expected: dict) -> list[str]:
    """Return the differences between ``schema`` and the source (empty when it matches)."""
    found = fingerprints(server, schema, list(expected))
    problems = []
    for table, want in expected.items():
        got = found[table]
        if got == want:
            continue
        detail = f"{side}: {schema}.{table}: rows/checksum {got}, source {want}"
        if got is not None:
            with connect(server, None) as conn:
                ours, source = table_checksum(conn, schema, table), table_checksum(conn, DB, table)
            if ours == source:
                continue  # CHECKSUM TABLE differs on the physical format only; the content is the same
            detail += f"; content checksum {ours} vs {source}"
        problems.append(detail)
    return problems


def settle(server: BinlogServer, limit: float = 120) -> float:
    """Let InnoDB write its dirty pages out, so each measured side starts from the same state; return seconds."""
    started = time.monotonic()
    with connect(server, None) as conn:
        previous = execute(conn, "SELECT @@GLOBAL.innodb_max_dirty_pages_pct")[0][0]
        execute(conn, "SET GLOBAL innodb_max_dirty_pages_pct = 0")
        try:
            while time.monotonic() - started < limit:
                dirty = int(execute(conn, "SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'")[0][1])
                if dirty < 100:
                    break
                time.sleep(0.5)
        finally:
            execute(conn, f"SET GLOBAL innodb_max_dirty_pages_pct = {float(previous)}")
    return time.monotonic() - started


def drop(server: BinlogServer, schema: str) -> None:
    with connect(server, None) as conn:
        execute(conn, f"DROP DATABASE IF EXISTS {q(schema)}")


# RPO --------------------------------------------------------------------------------------------------------

class TickLoad(threading.Thread):
    """Insert one row per 1/rate s into ticks; note each commit's time and binlog position."""

    def __init__(self, server: BinlogServer, rate: float, first_id: int):
        super().__init__(daemon=True)
        self.server, self.interval, self.next_id = server, 1.0 / rate, first_id
        self.commits: list[tuple[str, int, float]] = []  # (file, position after the commit, time.time())
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with connect(self.server) as conn, conn.cursor() as cur:
                due = time.monotonic()
                while not self.stopping.is_set():
                    cur.execute("INSERT INTO ticks VALUES (%s, NOW(6), 'tick')", (self.next_id,))
                    now = time.time()
                    cur.execute("SHOW MASTER STATUS")
                    name, position = cur.fetchone()[:2]
                    self.commits.append((name, int(position), now))
                    self.next_id += 1
                    due += self.interval
                    time.sleep(max(0.0, due - time.monotonic()))
        except BaseException as exc:  # reported by the caller
            self.error = exc

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)


def start_archiver(site: Site, timeout: float, log_path: Path) -> subprocess.Popen:
    with open(log_path, "ab") as out:
        return subprocess.Popen([PYTHON, MANAGE, "binlog_archive", "--target", TARGET, "--archive-timeout",
                                 str(timeout)], env=site.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop_archiver(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)  # ends its loop cleanly: it ships the live file and stops its reader
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def fill_live_file(server: BinlogServer, megabytes: int) -> None:
    """Rotate, then write about ``megabytes`` into the new live binlog (schema ``ballast``, not replayed)."""
    with connect(server, None) as conn:
        execute(conn, "FLUSH BINARY LOGS", "CREATE DATABASE IF NOT EXISTS ballast",
                "CREATE TABLE IF NOT EXISTS ballast.b (id INT PRIMARY KEY, pad TEXT)", "USE ballast")
        first = 1
        while int(execute(conn, "SHOW MASTER STATUS")[0][1]) < megabytes * MiB:
            execute(conn, f"INSERT INTO ballast.b SELECT seq, REPEAT(MD5(seq), 8) FROM seq_{first}_to_{first + 19999}")
            first += 20000


def measure_rpo(site: Site, server: BinlogServer, timeout: float, seconds: float, rate: float, first_id: int,
                work: Path, live_mb: int = 0) -> dict:
    """Run the archiver with ``timeout`` under the tick load; sample the lag for ``seconds`` once it caught up."""
    from django.db import close_old_connections

    from backups.models import ArchivedLog

    if live_mb:
        fill_live_file(server, live_mb)
    else:
        with connect(server, None) as conn:
            execute(conn, "FLUSH BINARY LOGS")  # a fresh live file, as after a rotation
    with connect(server, None) as conn:
        live = master_status(conn)[0]
        live_size = master_status(conn)[1]
    archiver = start_archiver(site, timeout, work / "archiver.log")
    load = TickLoad(server, rate, first_id)
    precise, catalog, caught_up = [], [], None
    started = time.monotonic()
    try:
        load.start()
        while caught_up is None or time.monotonic() < caught_up + seconds:
            time.sleep(0.25)
            if archiver.poll() is not None:
                raise RuntimeError(f"the archiver stopped ({archiver.returncode}): "
                                   f"{(work / 'archiver.log').read_text(errors='replace')[-2000:]}")
            if load.error:
                raise RuntimeError(f"the insert load failed: {load.error}")
            close_old_connections()
            row = (ArchivedLog.objects.filter(target__name=TARGET, kind="binlog").order_by("-name")
                   .values_list("name", "end_position", "last_event_at").first())
            now = time.time()
            commits = list(load.commits)
            if caught_up is None:
                # Start sampling once the live file is in the archive (the backlog before it is shipped).
                if row is not None and row[0] == live and row[1] > live_size:
                    caught_up = time.monotonic()
                elif time.monotonic() - started > 300:
                    raise RuntimeError("the archiver did not reach the live binlog within 300 s")
                continue
            keys = [(name, position) for name, position, _ in commits]
            index = bisect.bisect_right(keys, (row[0], row[1])) - 1
            if index < 0:
                continue
            precise.append(commits[-1][2] - commits[index][2])
            if row[2] is not None:
                catalog.append(now - row[2].timestamp())
    finally:
        load.stop()
        stop_archiver(archiver)
    if live_mb:
        with connect(server, None) as conn:
            execute(conn, "DROP DATABASE IF EXISTS ballast")
    span = load.commits[-1][2] - load.commits[0][2] if len(load.commits) > 1 else 0
    return {"timeout": timeout, "precise": precise, "catalog": catalog, "rows": len(load.commits),
            "rate": len(load.commits) / span if span else 0, "next_id": load.next_id, "live_mb": live_mb,
            "catch_up": caught_up - started if caught_up else None}


# The recoveries ----------------------------------------------------------------------------------------------

class Watch(harness.Poller):
    """Note, every 0.2 s while a command runs, when paths appear and processes matching a string live."""

    interval = 0.2

    def __init__(self, paths: dict[str, callable], processes: dict[str, str]):
        super().__init__()
        self.paths, self.processes = paths, processes

    def poll(self, now: float) -> None:
        for key, exists in self.paths.items():
            if key not in self.seen and exists():
                self.seen[key] = now
        if self.processes:
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                for key, needle in self.processes.items():
                    if needle in cmdline:
                        self.seen.setdefault(f"{key}_first", now)
                        self.seen[f"{key}_last"] = now


def ours_recover(site: Site, server: BinlogServer, schema: str, work: Path) -> dict:
    tmp = Path(site.env["COVET_TMP_DIR"])
    watch = Watch({"spool": lambda: any(tmp.glob("*/covet-pitr-*")),
                   "schema": lambda: (server.datadir / schema).exists()},
                  {"replay": f"--rewrite-db={DB}->{schema}", "client": "--init-command=SET SESSION sql_log_bin=0"})
    cpu = server_cpu(server)
    begin = time.time()
    with watch:
        result = measure([PYTHON, MANAGE, "restore_database", "--target", TARGET, "--pitr-target", "latest",
                          "--target-database", schema, "--output-format", "json"], site.env, work)
    marks = {"begin": begin, **watch.seen, "end": time.time()}
    replay_end = max(marks.get("replay_last", 0), marks.get("client_last", 0)) or None

    def span(a, b):
        return b - a if a is not None and b is not None else None

    phases = {"start-up, checks, plan": span(begin, marks.get("spool")),
              "fetch + decrypt + scan binlogs": span(marks.get("spool"), marks.get("schema")),
              "dump restore (fetch, decrypt, client)": span(marks.get("schema"), marks.get("replay_first")),
              "binlog replay": span(marks.get("replay_first"), replay_end),
              "finish (record result, exit)": span(replay_end, marks["end"])}
    return {"run": result, "server_cpu": server_cpu(server) - cpu, "phases": phases,
            "replay": phases["binlog replay"], "result": json.loads(result.stdout)}


def hand_recover(server: BinlogServer, schema: str, dump: Path, files: list[Path], position: int,
                 work: Path) -> dict:
    client = ["mariadb", "--no-defaults", f"--socket={server.socket}", "--user=root", "--binary-mode", "--batch",
              "--no-auto-rehash", "--default-character-set=utf8mb4"]
    create = shlex.join([*client, "-e", f"CREATE DATABASE {q(schema)} CHARACTER SET utf8mb4"])
    load = shlex.join([*client, f"--database={schema}"])
    binlog = shlex.join(["mariadb-binlog", "--no-defaults", "--disable-log-bin", f"--database={DB}",
                         f"--rewrite-db={DB}->{schema}", f"--start-position={position}", *map(str, files)])
    env = {**os.environ, "TZ": "UTC"}
    cpu = server_cpu(server)
    restore = measure(harness.pipeline(f"{create} && {load} < {shlex.quote(str(dump))}"), env, work)
    replay = measure(harness.pipeline(f"{binlog} | {shlex.join(client)}"), env, work)
    whole = Run(restore.wall + replay.wall, max(restore.peak_rss, replay.peak_rss), restore.cpu + replay.cpu, "")
    return {"run": whole, "server_cpu": server_cpu(server) - cpu, "replay": replay.wall,
            "phases": {"dump restore (mariadb < dump.sql)": restore.wall,
                       "binlog replay (mariadb-binlog | mariadb)": replay.wall},
            "commands": [f"{create} && {load} < DUMP", f"{binlog} | {shlex.join(client)}"]}


# Report -------------------------------------------------------------------------------------------------------

def fmt(value: float | None, width: int = 8) -> str:
    return f"{value:{width}.2f}" if value is not None else f"{'-':>{width}}"


def med(values) -> float | None:
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else None


def report(args, figures: dict) -> None:
    pairs = figures["pairs"]
    work = figures["workload"]
    print()
    print(f"MariaDB {figures['version']} binlog PITR benchmark, {os.cpu_count()} cores (shared), "
          f"{len(pairs)} round(s), order alternating (ours first in rounds 1, 3, ...)")
    print(f"source {DB}: {figures['db_size'] / MiB:.0f} MiB of InnoDB data at the backup "
          f"({figures['dump_bytes'] / MiB:.0f} MiB plain dump, stored {figures['backup_stored'] / MiB:.1f} MiB); "
          f"workload after it: {work['binlog_bytes'] / MiB:.0f} MiB of binlog in {len(figures['files'])} files "
          f"({work['rounds']} rounds, {work['small_transactions']} small transactions, {work['flushes']} flushes, "
          f"{work['seconds']:.0f} s)")
    print(f"archiving it: manage.py binlog_archive --once {figures['archive_once'].wall:.1f} s "
          f"({work['binlog_bytes'] / MiB / figures['archive_once'].wall:.0f} MiB/s), "
          f"stored {figures['archived_stored'] / MiB:.0f} MiB")
    last = pairs[-1][0]["result"]
    print(f"our recovery's result: {last.get('events_applied')} events in {last.get('transactions_applied')} "
          f"transactions from {len(last.get('binlogs', []))} binlogs, start {last.get('start')}")
    print()
    header = f"{'':44} " + " ".join(f"{'round ' + str(i + 1):>9}" for i in range(len(pairs))) + f" {'median':>9}"
    print(header)
    print("-" * len(header))

    def row(label, values, unit=" s"):
        print(f"{label:44} " + " ".join(f"{fmt(v, 7)}{unit}" for v in values) + f" {fmt(med(values), 7)}{unit}")

    row("recovery, ours (restore_database)", [o["run"].wall for o, _ in pairs])
    row("recovery, by hand (dump + binlog pipe)", [h["run"].wall for _, h in pairs])
    row("ratio ours / by hand", [o["run"].wall / h["run"].wall for o, h in pairs], "x ")
    row("replay only, ours (observed)", [o["replay"] for o, _ in pairs])
    row("replay only, by hand", [h["replay"] for _, h in pairs])
    row("replay ratio ours / by hand", [o["replay"] / h["replay"] if o["replay"] else None for o, h in pairs], "x ")
    row("CPU of the command + children, ours", [o["run"].cpu for o, _ in pairs])
    row("CPU of the command + children, by hand", [h["run"].cpu for _, h in pairs])
    row("mariadbd CPU during it, ours", [o["server_cpu"] for o, _ in pairs])
    row("mariadbd CPU during it, by hand", [h["server_cpu"] for _, h in pairs])
    row("peak RSS of the largest process, ours", [o["run"].peak_rss / MiB for o, _ in pairs], " M")
    row("peak RSS of the largest process, by hand", [h["run"].peak_rss / MiB for _, h in pairs], " M")
    print()
    print("where the time goes (medians, seconds):")
    for side, index in (("ours (observed every 0.2 s from outside)", 0), ("by hand", 1)):
        print(f"  {side}")
        for label in pairs[0][index]["phases"]:
            print(f"    {label:44} {fmt(med(p[index]['phases'][label] for p in pairs))}")
    print()
    if figures.get("rpo"):
        print(f"archive lag (RPO) under {args.rpo_rate:g} autocommitted inserts/s for {args.rpo_seconds:g} s, "
              "binlog_archive running as the service:")
        print(f"  {'--archive-timeout':18} {'live binlog':>12} {'rows/s':>7} {'samples':>8} {'lag median':>11} "
              f"{'lag max':>8}   {'catalog view median':>20} {'max':>6}")
        for rpo in figures["rpo"]:
            live = f"{rpo['live_mb']} MiB+" if rpo["live_mb"] else "fresh"
            print(f"  {rpo['timeout']:<18g} {live:>12} {rpo['rate']:7.0f} {len(rpo['precise']):8d} "
                  f"{fmt(med(rpo['precise']), 10)} s {fmt(max(rpo['precise'], default=None), 6)} s   "
                  f"{fmt(med(rpo['catalog']), 18)} s {fmt(max(rpo['catalog'], default=None), 5)} s")
        print("  (lag: commit time of the newest committed row minus that of the newest row inside the archived "
              "bytes, sampled every 0.25 s once the archiver reached the live file; catalog view: now - "
              "ArchivedLog.last_event_at, whole seconds. 'live binlog': the live file's size when the load began - "
              "each partial ships the live file whole)")
        print()
    problems = figures["problems"]
    if problems:
        print("!" * 100)
        print("WRONG DATA after recovery:")
        for problem in problems:
            print(f"  {problem}")
        print("!" * 100)
    else:
        print(f"recovered data checked: all {2 * len(pairs)} recovered schemas match the source "
              f"({', '.join(figures['tables'])}: row count and CHECKSUM TABLE)")
    print(f"by hand, exactly: {pairs[0][1]['commands'][0]}\n                  {pairs[0][1]['commands'][1]}")
    print(f"\nreproduce (from {REPO}): {figures['command']}")


# Main ---------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, help="MiB of binlog the workload writes after the backup "
                                                    "(default 1024; --small: 150)")
    parser.add_argument("--small", action="store_true", help="a quick check: 150 MiB of binlogs, a smaller "
                                                             "schema, 20 s of RPO load per timeout")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of recoveries (default 2)")
    parser.add_argument("--rpo-timeouts", default="5,1", help="archive timeouts to measure the lag at "
                                                              "(comma-separated seconds; '' skips; default 5,1)")
    parser.add_argument("--rpo-seconds", type=float, help="seconds of load per timeout (default 60; --small 20)")
    parser.add_argument("--rpo-rate", type=float, default=100, help="inserted rows per second (default 100)")
    parser.add_argument("--rpo-live-mb", type=int,
                        help="also measure at the first timeout with the live binlog already this big (the "
                             "partial is shipped whole each time; default 256, --small 32; 0 skips)")
    parser.add_argument("--keep", action="store_true", help="leave the work directory (the server is stopped)")
    args = parser.parse_args(argv)
    size = (args.size_mb if args.size_mb is not None else (150 if args.small else 1024)) * MiB
    scale = 0.25 if args.small else 1.0
    if args.rpo_live_mb is None:
        args.rpo_live_mb = 32 if args.small else 256
    args.rpo_seconds = args.rpo_seconds if args.rpo_seconds is not None else (20 if args.small else 60)
    timeouts = [float(t) for t in args.rpo_timeouts.split(",") if t.strip()]
    command = shlex.join([".venv/bin/python", "bench/binlog_replay.py", *(argv if argv is not None else sys.argv[1:])])
    work = Path(tempfile.mkdtemp(prefix="covet-bench-binlog-", dir="/tmp"))
    server = BinlogServer(private_base(), binlog=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below
    figures: dict = {"command": command, "problems": []}
    try:
        log(f"command: {command}; work directory {work}")
        server.start()
        with connect(server, None) as conn:
            figures["version"] = execute(conn, "SELECT VERSION()")[0][0]
        log(f"private mariadbd {figures['version']} (pid {server.process.pid}, port {server.port}, "
            f"{server.base}); creating {DB} ...")
        counts = create_schema(server, scale)
        site = Site(work / "site")
        site.call("target", "add", TARGET, "--database", "mysql", "--name", DB, "--host", server.socket,
                  "--user", "root")
        out = site.call("setup_pitr", "--target", TARGET)
        if "archiving is on" not in out:
            raise RuntimeError(f"setup_pitr did not turn archiving on:\n{out}")
        site.django()

        figures["rpo"] = []
        next_tick = 1
        runs = [(timeout, 0) for timeout in timeouts]
        if timeouts and args.rpo_live_mb:
            runs.append((timeouts[0], args.rpo_live_mb))
        for timeout, live_mb in runs:
            log(f"RPO: {args.rpo_rate:g} inserts/s for {args.rpo_seconds:g} s with --archive-timeout {timeout:g}"
                + (f", live binlog already holding {live_mb} MiB" if live_mb else ", fresh live binlog") + " ...")
            rpo = measure_rpo(site, server, timeout, args.rpo_seconds, args.rpo_rate, next_tick, work, live_mb)
            next_tick = rpo["next_id"]
            figures["rpo"].append(rpo)
            log(f"  lag median {fmt(med(rpo['precise']), 0)} s, max {fmt(max(rpo['precise'], default=None), 0)} s "
                f"({len(rpo['precise'])} samples, after {fmt(rpo['catch_up'], 0)} s of catch-up); catalog view "
                f"median {fmt(med(rpo['catalog']), 0)} s")

        log("full backup (manage.py backup_database --target bench) ...")
        backup = json.loads(site.call("backup_database", "--target", TARGET, "--output-format", "json"))
        from backups.models import Backup

        meta = Backup.objects.get(pk=backup["backup_id"]).engine_meta
        if not meta.get("pitr_possible"):
            raise RuntimeError(f"the backup has no binlog coordinates: {meta}")
        start = (meta["binlog_file"], int(meta["binlog_position"]))
        figures["backup_stored"] = backup.get("stored_bytes") or 0
        with connect(server, None) as conn:
            figures["db_size"] = int(execute(conn, "SELECT SUM(data_length + index_length) FROM "
                                                   "information_schema.TABLES WHERE TABLE_SCHEMA = %s",
                                             args=(DB,))[0][0])
        log(f"backup {backup['backup_id']} at {start[0]}:{start[1]}; workload: {size / MiB:.0f} MiB of binlog ...")
        figures["workload"] = workload(server, counts, size, start)
        log(f"  wrote {figures['workload']['binlog_bytes'] / MiB:.0f} MiB in {figures['workload']['seconds']:.0f} s")

        log("archiving (manage.py binlog_archive --once) ...")
        figures["archive_once"] = measure([PYTHON, MANAGE, "binlog_archive", "--target", TARGET, "--once"],
                                          site.env, work)
        figures["archived_stored"] = sum(p.stat().st_size for p in (work / "site" / "backups").rglob("*")
                                         if p.is_file() and "binlog" in p.parts)
        # Plain copies of the same binlogs, from the backup's file to the last completed one.
        with connect(server, None) as conn:
            live = master_status(conn)[0]
            names = [row[0] for row in execute(conn, "SHOW BINARY LOGS") if start[0] <= row[0] < live]
        plain = work / "plain"
        plain.mkdir()
        figures["files"] = []
        for name in names:
            shutil.copyfile(server.binlog_path(name), plain / name)
            figures["files"].append(plain / name)
        dumps = work / "dump"
        dumps.mkdir()
        site.call("restore_database", "--backup-id", backup["backup_id"], "--download-only", "--output-dir",
                  str(dumps))
        dump = next(dumps.iterdir())
        figures["dump_bytes"] = dump.stat().st_size
        with connect(server, None) as conn:
            tables = [row[0] for row in execute(conn, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE "
                                                      "TABLE_SCHEMA = %s ORDER BY 1", args=(DB,))]
        figures["tables"] = tables
        expected = fingerprints(server, DB, tables)
        log(f"source: {', '.join(f'{t} {v[0]} rows' for t, v in expected.items())}")

        figures["pairs"] = []
        for index in range(args.rounds):
            sides = [("ours", lambda: ours_recover(site, server, f"rec_ours_{index + 1}", work)),
                     ("hand", lambda: hand_recover(server, f"rec_hand_{index + 1}", dump, figures["files"], start[1],
                                                   work))]
            if index % 2:
                sides.reverse()
            done = {}
            for side, action in sides:
                schema = f"rec_{side}_{index + 1}"
                waited = settle(server)
                log(f"round {index + 1}: {side} ... (after {waited:.1f} s for InnoDB to flush dirty pages)")
                try:
                    done[side] = action()
                    problems = compare(server, side, schema, expected)
                finally:
                    drop(server, schema)  # each side runs without the other's copy on disk
                figures["problems"] += [f"round {index + 1}: {p}" for p in problems]
                log(f"round {index + 1}: {side} {done[side]['run'].wall:.2f} s (replay {fmt(done[side]['replay'], 0)}"
                    f" s), data {'WRONG: ' + '; '.join(problems) if problems else 'checked'}")
            figures["pairs"].append((done["ours"], done["hand"]))
        report(args, figures)
        return 1 if figures["problems"] else 0
    finally:
        server.stop()  # by PID; removes its directory
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
