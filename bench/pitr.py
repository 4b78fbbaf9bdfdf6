"""Benchmark our PostgreSQL base backup and point-in-time recovery next to pgBackRest 2.45's, in one run.

Run from the repository root as root (the private cluster runs as postgres):

    .venv/bin/python bench/pitr.py                  # ~800 MB database, ~1 GB of WAL, 1 round
    .venv/bin/python bench/pitr.py --small          # ~100 MB, ~160 MB of WAL: a quick check
    .venv/bin/python bench/pitr.py --rounds 3       # 3 pairs of backups and of recoveries

One private PostgreSQL 15 cluster (bench/servers/postgres.py; full_page_writes
on, archive_mode on, archive_timeout off, max_wal_size 4GB) holds the
realistic shop database of bench/realistic.py (customers, orders, reviews:
about 800 MB at scale 1.0). Its archive_command feeds both archives, one
after the other, once per segment:

    pgbackrest --config=C --stanza=bench archive-push %p && <what setup_pitr prints>

(ours: the light entry point handing the segment to ``manage.py
run_shipper``, which compresses with zstd -3, encrypts with the target's
archive key and stores it in the site's local storage). pgBackRest: one
local repository, compress-type zst, compress-level 3, process-max 2,
repo1-cipher-type aes-256-cbc, start-fast.

Then, measured (each command whole, through bench/measure.py: wall time,
CPU of the command and its waited-for descendants, peak RSS of its largest
process), ``--rounds`` pairs, order alternating (ours first in rounds 1, 3, ...):

1. base backup: ``manage.py backup_database --target bench --type base
   --compress zstd --compress-level 3 --encrypt aes-256-gcm`` (pg_basebackup
   tar stream, ends when the backup's WAL is archived) versus ``pgbackrest
   backup --type=full``.
2. an unmeasured workload writes ``--wal-mb`` of WAL (updates over the
   realistic tables, inserts and deletes in batches, plus pgbench-like small
   transactions with a custom script); pg_switch_wal, and the run waits
   until both archives hold every segment.
3. recovery of the newest base backup plus all that WAL, each into a new
   data directory, end to end until the server has promoted:
   ``manage.py restore_database --target bench --pitr-target latest
   --data-directory DIR --start --port P`` (stage the stored WAL into a
   spool, checking its SHA-256, while the base backup unpacks; start; decode
   the WAL while the server replays; wait) versus ``pgbackrest restore
   --type=default --archive-mode=off`` + ``pg_ctl start`` + polling
   ``pg_is_in_recovery()`` every 0.1 s until it is false (its restore_command,
   archive-get, fetches one segment at a time while the server replays).
   Each recovered server's tables are compared with the source (row count and
   a sum over an updated column per table); a mismatch stops the run.

Where the time goes is printed per phase, from timestamps taken while each
recovery runs (our spool, data directory and log appearing; pgBackRest's
restore ending) and from each recovered server's log (redo starts / redo
done / ready to accept connections). Not a test: it prints figures and
asserts nothing about them (except that recovered data is right).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: the root, so covet and bench import by their package names

from bench import harness, realistic  # noqa: E402
from bench.harness import MiB, Run, load_pg_realistic, measure, tsv_files  # noqa: E402
from bench.servers import free_port  # noqa: E402
from bench.servers.postgres import PG_BIN, PrivateCluster, alive, connect  # noqa: E402

DB = "shop"
TARGET = "bench"
STANZA = "bench"
SEGMENT = 16 * MiB
PGBACKREST = "/usr/bin/pgbackrest"
CLUSTER_SETTINGS = """
full_page_writes = on
wal_level = replica
archive_mode = on
archive_command = '/bin/true'
archive_timeout = 0
max_wal_size = '4GB'
wal_keep_size = 0
shared_buffers = '128MB'
log_timezone = 'UTC'
log_checkpoints = on
"""
STATUSES = ["new", "paid", "shipped", "delivered", "delivered", "delivered", "cancelled", "refunded"]
OLTP_SCRIPT = r"""
\set cid random(1, :customers)
\set oid random(1, :orders)
\set amount random(1, 5000)
BEGIN;
UPDATE customers SET credit = credit + :amount / 100.0 WHERE id = :cid;
UPDATE orders SET status = 'delivered', shipped_at = now() WHERE id = :oid;
INSERT INTO order_events (order_id, customer_id, kind, note)
    VALUES (:oid, :cid, 'delivered', 'parcel left at the door ' || :amount);
END;
"""
# A cheap fingerprint per table: the row count and a sum over a column the workload updates.
FINGERPRINTS = {
    "customers": "SELECT count(*), sum(credit), sum(tier) FROM customers",
    "orders": "SELECT count(*), sum(total), count(shipped_at), sum(length(status)) FROM orders",
    "reviews": "SELECT count(*), sum(rating) FROM reviews",
    "order_events": "SELECT count(*), max(id) FROM order_events",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def as_postgres_argv(*argv: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv]


class Site(harness.Site):
    """bench/harness.py's private site (catalog, default key, local storage), plus a socket directory for the
    shipper that the postgres user can reach, a PITR target and the shipper process."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.run_dir = root / "run"
        self.run_dir.mkdir(mode=0o755)
        self.run_dir.chmod(0o755)
        self.env["COVET_RUN_DIR"] = str(self.run_dir)

    def call(self, *argv: str) -> str:
        done = subprocess.run(self.manage(*argv), env=self.env, cwd=REPO, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"manage.py {' '.join(argv)} failed: {done.stderr}{done.stdout}")
        return done.stdout

    def pitr_target(self, name: str, cluster: PrivateCluster) -> str:
        """Register the cluster as a target and set PITR up; return the archive_command setup_pitr prints."""
        self.call("target", "add", name, "--database", "postgresql", "--name", "postgres", "--host", "127.0.0.1",
                  "--port", str(cluster.port), "--user", "postgres")
        out = self.call("setup_pitr", "--target", name, "--archive-timeout", "0")
        line = next(line for line in out.splitlines() if line.strip().startswith("archive_command = "))
        return line.split("= ", 1)[1].strip()[1:-1].replace("''", "'")

    def start_shipper(self, name: str) -> subprocess.Popen:
        log_path = self.root / f"shipper-{name}.log"
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(self.manage("run_shipper", "--target", name), env=self.env, cwd=REPO,
                                    stdout=out, stderr=subprocess.STDOUT)
        socket = self.run_dir / f"wal-{name}.sock"
        deadline = time.monotonic() + 60
        while not socket.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the shipper did not start: {log_path.read_text(errors='replace')}")
            time.sleep(0.05)
        return proc


# The source cluster -------------------------------------------------------------------------------

def load_realistic(cluster: PrivateCluster, work: Path, scale: float) -> None:
    """Create the shop database in ``cluster`` from bench/realistic.py's rows (written once into ``work``)."""
    files = tsv_files(work, scale)
    with connect("postgres", cluster.server) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    with connect(DB, cluster.server) as conn:
        load_pg_realistic(conn, files)
        conn.execute("CREATE TABLE order_events (id bigserial PRIMARY KEY, order_id bigint NOT NULL, "
                     "customer_id integer NOT NULL, at timestamptz NOT NULL DEFAULT now(), kind text, note text)")
        conn.execute("VACUUM (FREEZE, ANALYZE)")
        conn.execute("CHECKPOINT")
    shutil.rmtree(work / "realistic-rows", ignore_errors=True)


def sizes(cluster: PrivateCluster) -> tuple[int, int]:
    """Return (the shop database's size, every database's size)."""
    with connect("postgres", cluster.server) as conn:
        return conn.execute("SELECT pg_database_size(%s), (SELECT sum(pg_database_size(oid)) FROM pg_database)",
                            (DB,)).fetchone()


def lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def set_archive_command(cluster: PrivateCluster, command: str) -> None:
    with connect("postgres", cluster.server) as conn:
        conn.execute(sql.SQL("ALTER SYSTEM SET archive_command = {}").format(sql.Literal(command)))
        conn.execute("SELECT pg_reload_conf()")


def switch_and_wait(cluster: PrivateCluster, timeout: float = 1800) -> tuple[str, float]:
    """Close the current segment; wait until PostgreSQL has archived it and everything before it.

    The archive_command runs both pushes, so a segment is done only when both
    archives hold it. Return (the segment's name, seconds waited).
    """
    started = time.perf_counter()
    with connect("postgres", cluster.server) as conn:
        conn.execute("SELECT txid_current()")  # a commit record: the segment switched is never an old one
        name = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
        status = cluster.data / "pg_wal" / "archive_status"
        deadline = time.monotonic() + timeout
        while True:
            last, failed, failure = conn.execute(
                "SELECT last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver").fetchone()
            ready = [p.name for p in status.glob("*.ready")]
            if last and last[:24] >= name and not ready:
                return name, time.perf_counter() - started
            if time.monotonic() > deadline:
                raise RuntimeError(f"segment {name} was not archived within {timeout:.0f}s (last archived {last}, "
                                   f"{failed} failures, last failed {failure}; {len(ready)} ready)")
            time.sleep(0.2)


def fingerprint(server: dict) -> dict[str, tuple]:
    with connect(DB, server) as conn:
        return {table: tuple(str(value) for value in conn.execute(query).fetchone())
                for table, query in FINGERPRINTS.items()}


# The workload ----------------------------------------------------------------------------------------

def words_sql(count_expr: str) -> str:
    """SQL for ``count_expr`` random words (per row: the expression must reference the row)."""
    chosen = [word for word in realistic.COMMON if "'" not in word][:160]
    words = "ARRAY[" + ",".join(f"'{word}'" for word in chosen) + "]"
    return (f"array_to_string(ARRAY(SELECT ({words})[1 + floor(random() * {len(chosen)})::int] "
            f"FROM generate_series(1, {count_expr})), ' ')")


def workload(cluster: PrivateCluster, wal_bytes: int, scale: float, work: Path) -> dict:
    """Write about ``wal_bytes`` of WAL: batch updates, inserts and deletes, and small pgbench transactions."""
    script = work / "oltp.sql"
    script.write_text(OLTP_SCRIPT)
    statuses = "ARRAY[" + ",".join(f"'{s}'" for s in STATUSES) + "]"
    per_round = {name: max(100, int(count * scale)) for name, count in
                 (("orders_updated", 60_000), ("customers_updated", 15_000), ("orders_inserted", 20_000),
                  ("reviews_inserted", 6_000), ("reviews_deleted", 2_000), ("pgbench_tx", 250))}
    done = {name: 0 for name in per_round}
    with connect(DB, cluster.server) as conn:
        customers, orders, reviews = (conn.execute(f"SELECT max(id) FROM {t}").fetchone()[0]
                                      for t in ("customers", "orders", "reviews"))
        start = lsn(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])
        next_order, next_review, rounds = orders + 1, reviews + 1, 0
        started = time.perf_counter()
        import random

        rnd = random.Random(20240611)
        while True:
            written = lsn(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]) - start
            if written >= wal_bytes:
                break
            if rounds % 5 == 0:
                log(f"  workload: {written / MiB:.0f} of {wal_bytes / MiB:.0f} MiB of WAL written")
            rounds += 1
            n = per_round["orders_updated"]
            first = rnd.randint(1, max(1, next_order - n))
            conn.execute(f"""UPDATE orders SET status = ({statuses})[1 + floor(random() * 8)::int],
                                 shipped_at = coalesce(shipped_at, placed_at + interval '2 days'),
                                 total = total + 1, tracking = coalesce(tracking, '1Z' || (100000000000 + id))
                             WHERE id BETWEEN {first} AND {first + n - 1}""")
            n = per_round["customers_updated"]
            first = rnd.randint(1, max(1, customers - n))
            conn.execute(f"UPDATE customers SET credit = credit + round((random() * 40)::numeric, 2), "
                         f"tier = 1 + floor(random() * 5)::int WHERE id BETWEEN {first} AND {first + n - 1}")
            n = per_round["orders_inserted"]
            conn.execute(f"""INSERT INTO orders SELECT g, 1 + floor(random() * {customers})::int, 'new',
                                 now() - random() * interval '1 day', NULL, round((1 + random() * 500)::numeric, 2),
                                 1 + floor(random() * 12)::int, NULL, NULL,
                                 CASE WHEN random() < 0.4 THEN {words_sql('2 + g % 8')} END
                             FROM generate_series({next_order}, {next_order + n - 1}) g""")
            next_order += n
            n = per_round["reviews_inserted"]
            conn.execute(f"""INSERT INTO reviews SELECT g, 1 + floor(random() * {next_order - 1})::bigint,
                                 1 + floor(random() * {customers})::int, 1 + floor(random() * 5)::int, now(),
                                 {words_sql('3 + g % 7')}, {words_sql('20 + g % 80')}
                             FROM generate_series({next_review}, {next_review + n - 1}) g""")
            next_review += n
            n = per_round["reviews_deleted"]
            first = rnd.randint(1, max(1, next_review - n))
            conn.execute(f"DELETE FROM reviews WHERE id BETWEEN {first} AND {first + n - 1}")
            subprocess.run([str(PG_BIN / "pgbench"), "-n", "-h", "127.0.0.1", "-p", str(cluster.port),
                            "-U", "postgres", "-c", "2", "-j", "2", "-t", str(per_round["pgbench_tx"] // 2),
                            "-D", f"customers={customers}", "-D", f"orders={orders}", "-f", str(script), DB],
                           check=True, capture_output=True)
            for name in done:
                done[name] += per_round[name]
        seconds = time.perf_counter() - started
        written = lsn(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]) - start
    return {"wal_bytes": written, "seconds": seconds, "rounds": rounds, **done}


# Our side --------------------------------------------------------------------------------------------

def ours_backup(site: Site, work: Path) -> tuple[Run, dict]:
    result = measure([sys.executable, str(REPO / "manage.py"), "backup_database", "--target", TARGET, "--type",
                      "base", "--compress", "zstd", "--compress-level", "3", "--encrypt", "aes-256-gcm",
                      "--output-format", "json"], site.env, work)
    return result, json.loads(result.stdout)


class Watch(harness.Poller):
    """Note when each of some paths first exists, and when it is gone again (polled every 20 ms)."""

    interval = 0.02

    def __init__(self, paths: dict[str, Path]):
        super().__init__()
        self.paths = paths

    def poll(self, now: float) -> None:
        for key, path in self.paths.items():
            if key not in self.seen and path.exists():
                self.seen[key] = now
            elif key in self.seen and f"{key}_gone" not in self.seen and not path.exists():
                self.seen[f"{key}_gone"] = now


def ours_recover(site: Site, parent: Path, name: str, work: Path) -> dict:
    data_dir = parent / name
    port = free_port()
    argv = [sys.executable, str(REPO / "manage.py"), "restore_database", "--target", TARGET, "--pitr-target",
            "latest", "--data-directory", str(data_dir), "--start", "--port", str(port), "--output-format", "json"]
    watch = Watch({"spool": parent / f".{name}.covet-wal", "unpack": data_dir, "start": parent / f"{name}.log"})
    t0 = time.time()
    with watch:
        result = measure(argv, site.env, work)
    t1 = time.time()
    server_cpu = postmaster_cpu(data_dir)
    detail = json.loads(result.stdout)
    marks = {"begin": t0, **watch.seen, **log_marks(parent / f"{name}.log"), "end": t1}
    return {"run": result, "data_dir": data_dir, "port": port, "marks": marks, "result": detail,
            "server_cpu": server_cpu, "log": parent / f"{name}.log"}


# pgBackRest -------------------------------------------------------------------------------------------

def pgbackrest_setup(work: Path, cluster: PrivateCluster) -> Path:
    """Write pgBackRest's configuration (zst 3, process-max 2, aes-256-cbc) and create the stanza."""
    root = work / "pgbackrest"
    for sub in ("repo", "lock", "log", "spool"):
        (root / sub).mkdir(parents=True)
        shutil.chown(root / sub, "postgres", "postgres")
    shutil.chown(root, "postgres", "postgres")
    config = root / "pgbackrest.conf"
    passphrase = os.urandom(24).hex()  # only in this 0600 file, as pgBackRest keeps it
    config.write_text(f"""[global]
repo1-path={root}/repo
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass={passphrase}
repo1-retention-full=99
compress-type=zst
compress-level=3
process-max=2
lock-path={root}/lock
log-path={root}/log
spool-path={root}/spool
log-level-console=warn
log-level-file=off
start-fast=y

[{STANZA}]
pg1-path={cluster.data}
pg1-port={cluster.port}
pg1-socket-path={cluster.dir}
""")
    config.chmod(0o600)
    shutil.chown(config, "postgres", "postgres")
    subprocess.run(as_postgres_argv(PGBACKREST, f"--config={config}", f"--stanza={STANZA}", "stanza-create"),
                   check=True, capture_output=True)
    return config


def pgbackrest_backup(config: Path, work: Path) -> tuple[Run, dict]:
    result = measure(as_postgres_argv(PGBACKREST, f"--config={config}", f"--stanza={STANZA}", "--type=full",
                                      "backup"), work=work)
    info = subprocess.run(as_postgres_argv(PGBACKREST, f"--config={config}", f"--stanza={STANZA}",
                                           "--output=json", "info"), check=True, capture_output=True, text=True)
    newest = json.loads(info.stdout)[0]["backup"][-1]
    return result, {"label": newest["label"], "stored_bytes": newest["info"]["repository"]["size"],
                    "source_bytes": newest["info"]["size"]}


def pgbackrest_recover(config: Path, parent: Path, name: str, work: Path) -> dict:
    """pgbackrest restore into a new directory, start it on a new port, wait until it has promoted."""
    data_dir = parent / name
    data_dir.mkdir(mode=0o700)
    shutil.chown(data_dir, "postgres", "postgres")
    log_path = parent / f"{name}.log"
    log_path.touch()
    shutil.chown(log_path, "postgres", "postgres")
    port = free_port()
    q = shlex.quote
    restore = shlex.join(as_postgres_argv(PGBACKREST, f"--config={config}", f"--stanza={STANZA}",
                                          f"--pg1-path={data_dir}", "--type=default", "--archive-mode=off",
                                          "restore"))
    start = shlex.join(as_postgres_argv(str(PG_BIN / "pg_ctl"), "-D", str(data_dir), "-l", str(log_path),
                                        "-o", f"-p {port} -k {data_dir} -c archive_mode=off", "-w", "-t", "3600",
                                        "start"))
    poll = (f"{q(str(PG_BIN / 'psql'))} -X -A -t -h 127.0.0.1 -p {port} -U postgres -d postgres "
            "-c 'SELECT pg_is_in_recovery()' 2>/dev/null")
    script = (f"set -e\necho restore_begin $(date +%s.%N)\n{restore}\necho restored $(date +%s.%N)\n{start} "
              f">/dev/null\necho started $(date +%s.%N)\nuntil [ \"$({poll})\" = f ]; do sleep 0.1; done\n"
              f"echo promoted $(date +%s.%N)\n")
    t0 = time.time()
    result = measure(["bash", "-c", script], work=work)
    t1 = time.time()
    server_cpu = postmaster_cpu(data_dir)
    stamps = {line.split()[0]: float(line.split()[1]) for line in result.stdout.splitlines() if len(line.split()) == 2}
    marks = {"begin": t0, **stamps, **log_marks(log_path), "end": t1}
    return {"run": result, "data_dir": data_dir, "port": port, "marks": marks, "server_cpu": server_cpu,
            "log": log_path}


# Recovered servers ------------------------------------------------------------------------------------

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) UTC \[\d+\] (\w+):\s+(.*)$")
LOG_MARKS = {"server_up": "starting PostgreSQL", "redo_start": "redo starts at", "redo_done": "redo done at",
             "ready": "database system is ready to accept connections"}


def log_marks(path: Path) -> dict[str, float]:
    """Times of the recovery milestones in a server log (log_timezone UTC), and replay's own CPU/elapsed."""
    marks: dict[str, float] = {}
    for line in path.read_text(errors="replace").splitlines():
        match = LOG_LINE.match(line)
        if not match:
            continue
        at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=timezone.utc).timestamp()
        for key, text in LOG_MARKS.items():
            if match.group(3).startswith(text):
                marks[key] = at  # the last one wins (ready: after promotion)
        usage = re.search(r"CPU: user: ([\d.]+) s, system: ([\d.]+) s, elapsed: ([\d.]+) s", match.group(3))
        if usage and match.group(3).startswith("redo done"):
            marks["replay_cpu"] = -(float(usage.group(1)) + float(usage.group(2)))  # negative: not a time
    return marks


def postmaster_cpu(data_dir: Path) -> float | None:
    """CPU seconds the recovered server has used: the postmaster, its reaped children (the startup process
    that replayed, and its restore_command runs) and its live ones."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid:
            total += sum(int(value) for value in fields[11:15]) / tick
        elif int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def stop_server(data_dir: Path) -> None:
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return
    if alive(pid):
        os.kill(pid, signal.SIGINT)  # fast shutdown
        deadline = time.monotonic() + 60
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def check_recovered(side: str, recovered: dict, expected: dict) -> None:
    found = fingerprint({"host": "127.0.0.1", "port": recovered["port"], "user": "postgres"})
    if found != expected:
        raise RuntimeError(f"{side}'s recovered server does not hold the source's data:\n  source    {expected}\n"
                           f"  recovered {found}\n  (log {recovered['log']})")


def remove_recovered(recovered: dict) -> None:
    stop_server(recovered["data_dir"])
    shutil.rmtree(recovered["data_dir"], ignore_errors=True)
    recovered["log"].unlink(missing_ok=True)
    spool = recovered["data_dir"].parent / f".{recovered['data_dir'].name}.covet-wal"
    shutil.rmtree(spool, ignore_errors=True)


# Report -------------------------------------------------------------------------------------------------

def phases(marks: dict, ours: bool) -> list[tuple[str, float | None]]:
    """Consecutive phases from the marks: (label, seconds); None where a mark is missing."""
    def span(a: str, b: str) -> float | None:
        return marks[b] - marks[a] if a in marks and b in marks else None

    if ours:
        steps = [("manage.py start-up, checks", "begin", "spool"), ("spool, then data directory made", "spool", "unpack"),
                 ("unpack base backup | stage WAL", "unpack", "start")]
    else:
        steps = [("process start", "begin", "restore_begin"), ("pgbackrest restore", "restore_begin", "restored")]
    after = "start" if ours else "restored"
    steps += [("server start to redo start", after, "redo_start"), ("replay (redo)", "redo_start", "redo_done"),
              ("end of recovery, promote", "redo_done", "ready")]
    if ours:  # the spool goes once pg_controldata says "in production"; then the result is recorded
        steps += [("noticing the promotion, spool removal", "ready", "spool_gone"),
                  ("recording the result, exit", "spool_gone", "end")]
    else:
        steps += [("noticing the promotion", "ready", "end")]
    return [(label, span(a, b)) for label, a, b in steps]


def fmt(value: float | None, width: int = 8) -> str:
    return f"{value:{width}.2f}" if value is not None else f"{'-':>{width}}"


def tree_bytes(path: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in path.rglob(pattern) if p.is_file())


def report(args, figures: dict) -> None:
    backups, recoveries = figures["backups"], figures["recoveries"]
    print()
    print(f"PITR benchmark: {figures['cores']} cores, PostgreSQL 15, pgBackRest {figures['pgbackrest_version']}, "
          f"{args.rounds} round(s), order alternating (ours first in rounds 1, 3, ...); medians; ratio = median "
          "of per-pair ours/pgBackRest wall times (below 1: ours is faster)")
    print(f"database {DB}: {figures['db_size'] / MiB:.0f} MiB (cluster {figures['cluster_size'] / MiB:.0f} MiB); "
          f"workload WAL {figures['workload']['wal_bytes'] / MiB:.0f} MiB in {figures['workload']['seconds']:.0f} s "
          f"({figures['workload']['rounds']} rounds: {figures['workload']['orders_updated']} orders and "
          f"{figures['workload']['customers_updated']} customers updated, {figures['workload']['orders_inserted']} "
          f"orders and {figures['workload']['reviews_inserted']} reviews inserted, "
          f"{figures['workload']['reviews_deleted']} reviews deleted, {figures['workload']['pgbench_tx']} pgbench "
          f"transactions); the archive caught up {figures['drain']:.1f} s after the workload's last segment switch")
    print()
    header = (f"{'operation':34} {'ours s':>8} {'pgBR s':>8} {'ratio':>6} {'ours CPU':>9} {'pgBR CPU':>9} "
              f"{'ours RSS':>9} {'pgBR RSS':>9}")
    print(header)
    print("-" * len(header))
    for label, pairs in (("base backup", [(o["run"], t["run"]) for o, t in backups]),
                         ("recovery (base + WAL, promoted)", [(o["run"], t["run"]) for o, t in recoveries])):
        med = lambda side, attr: statistics.median(getattr(pair[side], attr) for pair in pairs)  # noqa: E731
        ratio = statistics.median(o.wall / t.wall for o, t in pairs)
        figures.setdefault("ratios", {})[label] = ratio
        print(f"{label:34} {med(0, 'wall'):8.2f} {med(1, 'wall'):8.2f} {ratio:6.3f} {med(0, 'cpu'):7.2f} s "
              f"{med(1, 'cpu'):7.2f} s {med(0, 'peak_rss') / MiB:5.0f} MiB {med(1, 'peak_rss') / MiB:5.0f} MiB")
    server = [(o["server_cpu"], t["server_cpu"]) for o, t in recoveries]
    if all(a is not None and b is not None for a, b in server):
        print(f"{'  recovered server CPU':34} {'':8} {'':8} {'':6} {statistics.median(a for a, _ in server):7.2f} s "
              f"{statistics.median(b for _, b in server):7.2f} s")
    print("(CPU: user + system of the command and the processes it waited for; RSS: its largest process. The "
          "recovered servers are not the command's: their CPU is shown apart, including the startup process's "
          "replay and every restore_command run, i.e. pgBackRest's archive-get fetch/decrypt/decompress. Ours "
          "stages the stored WAL before starting the server and decodes it while the server replays, inside "
          "the command.)")
    print()
    print("where recovery time goes (seconds; medians over the rounds):")
    ours_phases = [phases(o["marks"], True) for o, _ in recoveries]
    their_phases = [phases(t["marks"], False) for _, t in recoveries]

    def med_phase(rows, index):
        values = [row[index][1] for row in rows if row[index][1] is not None]
        return statistics.median(values) if values else None

    print(f"  {'ours':40} {'s':>8}   {'pgBackRest':40} {'s':>8}")
    for index in range(max(len(ours_phases[0]), len(their_phases[0]))):
        left = (ours_phases[0][index][0], med_phase(ours_phases, index)) if index < len(ours_phases[0]) else ("", None)
        right = ((their_phases[0][index][0], med_phase(their_phases, index)) if index < len(their_phases[0])
                 else ("", None))
        print(f"  {left[0]:40} {fmt(left[1])}   {right[0]:40} {fmt(right[1])}")
    replay_cpu = [(-o["marks"].get("replay_cpu", 0), -t["marks"].get("replay_cpu", 0)) for o, t in recoveries]
    ours_cpu = statistics.median(a for a, _ in replay_cpu)
    print(f"  (startup process CPU during redo, from the log: ours {ours_cpu:.2f} s, "
          f"pgBackRest {statistics.median(b for _, b in replay_cpu):.2f} s; pgBackRest's archive-get runs are its "
          "children, not counted there. Our manage.py polls pg_controldata every 0.5 s, pgBackRest's side "
          "pg_is_in_recovery() every 0.1 s)")
    last = recoveries[-1][0]["result"]
    print(f"  our restore's result: segments_fetched {last.get('segments_fetched')}, files_unpacked "
          f"{last.get('files_unpacked')}; " + "; ".join(last.get("summary", [])))
    print()
    print("sizes:")
    ours_b = statistics.median(o["summary"]["stored_bytes"] for o, _ in backups)
    theirs_b = statistics.median(t["summary"]["stored_bytes"] for _, t in backups)
    src_b = statistics.median(o["summary"].get("source_bytes") or 0 for o, _ in backups)
    theirs_src = statistics.median(t["summary"]["source_bytes"] for _, t in backups)
    print(f"  base backup stored: ours {ours_b / MiB:.1f} MiB (of a {src_b / MiB:.0f} MiB tar), pgBackRest "
          f"{theirs_b / MiB:.1f} MiB (of {theirs_src / MiB:.0f} MiB)")
    print(f"  WAL archive stored (whole run): ours {figures['ours_wal_stored'] / MiB:.1f} MiB in "
          f"{figures['ours_wal_files']} files, pgBackRest {figures['theirs_wal_stored'] / MiB:.1f} MiB in "
          f"{figures['theirs_wal_files']} files")
    print()
    verdicts = [f"{label} {ratio:.2f}x ({'no slower' if ratio <= 1.0 else 'SLOWER'} than pgBackRest)"
                for label, ratio in figures["ratios"].items()]
    print("target: no slower than pgBackRest on each: " + "; ".join(verdicts))
    print(f"recovered data checked: {len(recoveries) * 2} recovered servers matched the source "
          f"({', '.join(FINGERPRINTS)}: row counts and sums)")
    print(f"\nreproduce (from {REPO}): {figures['command']}")


# Main ---------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true",
                        help="a quick check: realistic scale 0.125 (~100 MB) and 160 MB of WAL")
    parser.add_argument("--scale", type=float, help="fraction of the realistic rows (default 1.0: ~800 MB)")
    parser.add_argument("--wal-mb", type=int, help="WAL the workload writes after the backups (default 1024)")
    parser.add_argument("--rounds", type=int, default=1, help="pairs of backups and of recoveries (default 1)")
    parser.add_argument("--keep", action="store_true",
                        help="leave the work directory (site, pgBackRest repository) for inspection")
    args = parser.parse_args(argv)
    scale = args.scale if args.scale is not None else (0.125 if args.small else 1.0)
    wal_bytes = (args.wal_mb if args.wal_mb is not None else (160 if args.small else 1024)) * MiB
    command = shlex.join([".venv/bin/python", "bench/pitr.py", *(argv if argv is not None else sys.argv[1:])])
    version = subprocess.run([PGBACKREST, "version"], capture_output=True, text=True).stdout.split()[-1]
    work = Path(tempfile.mkdtemp(prefix="covet-bench-pitr-", dir="/tmp"))
    work.chmod(0o755)
    recovered_parent = work / "recovered"
    recovered_parent.mkdir(mode=0o755)
    log(f"command: {command}; work directory {work}")
    cluster = PrivateCluster(settings=CLUSTER_SETTINGS)
    shipper = None
    live: list[dict] = []
    figures: dict = {"command": command, "pgbackrest_version": version, "cores": os.cpu_count()}
    try:
        cluster.start()
        log(f"cluster on port {cluster.port}; loading the realistic database (scale {scale:g}) ...")
        started = time.perf_counter()
        load_realistic(cluster, work, scale)
        figures["db_size"], figures["cluster_size"] = sizes(cluster)
        log(f"loaded {figures['db_size'] / MiB:.0f} MiB in {time.perf_counter() - started:.0f} s")

        site = Site(work / "site")
        ours_command = site.pitr_target(TARGET, cluster)
        shipper = site.start_shipper(TARGET)
        config = pgbackrest_setup(work, cluster)
        both = f"{PGBACKREST} --config={config} --stanza={STANZA} archive-push %p && {ours_command}"
        set_archive_command(cluster, both)
        switch_and_wait(cluster, 120)  # the first segment through both archives
        log(f"archive_command = {both}")

        figures["backups"] = []
        for index in range(args.rounds):
            sides = [("ours", lambda: ours_backup(site, work)), ("pgBackRest", lambda: pgbackrest_backup(config, work))]
            if index % 2:
                sides.reverse()
            done = {}
            for side, action in sides:
                run, summary = action()
                done[side] = {"run": run, "summary": summary}
            figures["backups"].append((done["ours"], done["pgBackRest"]))
            log(f"round {index + 1}: base backup ours {done['ours']['run'].wall:.2f} s, pgBackRest "
                f"{done['pgBackRest']['run'].wall:.2f} s")

        log(f"workload: about {wal_bytes / MiB:.0f} MiB of WAL ...")
        figures["workload"] = workload(cluster, wal_bytes, scale, work)
        expected = fingerprint(cluster.server)
        last, figures["drain"] = switch_and_wait(cluster)
        log(f"workload wrote {figures['workload']['wal_bytes'] / MiB:.0f} MiB of WAL in "
            f"{figures['workload']['seconds']:.0f} s; archived through {last} ({figures['drain']:.1f} s after)")
        time.sleep(1)  # let the shipper's catalog rows settle
        # The workload left gigabytes of dirty pages: flush them now, or the
        # first recovery measured shares the disk and a core with the source's checkpoint.
        with connect("postgres", cluster.server) as conn:
            conn.execute("CHECKPOINT")
        os.sync()
        ours_wal = [p for p in (work / "site" / "backups").rglob("*") if p.is_file() and "wal" in p.parts]
        figures["ours_wal_stored"], figures["ours_wal_files"] = sum(p.stat().st_size for p in ours_wal), len(ours_wal)
        theirs_wal = [p for p in (work / "pgbackrest" / "repo" / "archive").rglob("*") if p.is_file()
                      and re.match(r"^[0-9A-F]{24}-", p.name)]
        figures["theirs_wal_stored"] = sum(p.stat().st_size for p in theirs_wal)
        figures["theirs_wal_files"] = len(theirs_wal)

        figures["recoveries"] = []
        for index in range(args.rounds):
            sides = [("ours", lambda: ours_recover(site, recovered_parent, f"ours-{index + 1}", work)),
                     ("pgBackRest", lambda: pgbackrest_recover(config, recovered_parent, f"pgbr-{index + 1}", work))]
            if index % 2:
                sides.reverse()
            done = {}
            for side, action in sides:
                log(f"round {index + 1}: recovery, {side} ...")
                try:
                    done[side] = action()
                finally:
                    for name in (f"ours-{index + 1}", f"pgbr-{index + 1}"):
                        if (recovered_parent / name).exists() and not any(r["data_dir"].name == name for r in live):
                            live.append({"data_dir": recovered_parent / name,
                                         "log": recovered_parent / f"{name}.log", "port": 0})
                check_recovered(side, done[side], expected)
                remove_recovered(done[side])  # each side recovers without the other's server running
                log(f"round {index + 1}: recovery {side} {done[side]['run'].wall:.2f} s, data checked")
            figures["recoveries"].append((done["ours"], done["pgBackRest"]))
        report(args, figures)
    finally:
        for recovered in live:
            remove_recovered(recovered)
        if shipper is not None and shipper.poll() is None:
            shipper.terminate()
            try:
                shipper.wait(30)
            except subprocess.TimeoutExpired:
                shipper.kill()
        cluster.stop()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
