"""Benchmark our PostgreSQL and MariaDB backups and restores against the bare tools.

Run from the repository root (PostgreSQL on 127.0.0.1:5432 as postgres,
MariaDB on 127.0.0.1:3306 as root, both without a password):

    .venv/bin/python bench/engines.py                  # every database, 3 rounds
    .venv/bin/python bench/engines.py --only pg --rounds 7 --keep
    .venv/bin/python bench/engines.py --only realistic --keep   # reuse what --keep left

Databases (created on first use, dropped at the end unless --keep; a kept
one is reused only when it was completely made with the same settings):

- covet_bench_pgbench: ``pgbench -i -s 50`` (about 750 MB; its dump compresses ~100x);
- covet_bench_realistic (PostgreSQL): customers, orders and reviews from
  bench/realistic.py, about 800 MB, whose dump compresses about 2.5x under zstd -3;
- covet_bench_realistic (MariaDB): the same rows, about 650 MB of InnoDB data.
The sizes and the ratio actually measured are printed.

Per database, ``--rounds`` pairs of each operation, measured side by side
after one unmeasured dump that warms the cache (the order alternates: ours
first in odd rounds, bare first in even ones):

- backup: ``manage.py backup_database ... --compress zstd --compress-level 3
  --encrypt aes-256-gcm`` into local storage, versus
  ``pg_dump -Fc -Z0 -d DB | zstd -3 -T0 > file``
  (MariaDB: ``mariadb-dump --single-transaction DB | zstd -3 -T0 > file``);
- restore of that round's backup: ``manage.py restore_database --backup-id ID
  --target-database NEW`` (creates the database, restores, compares row
  counts with the backup's manifest), versus ``createdb NEW && zstd -dc file
  | pg_restore -d NEW`` (MariaDB: ``CREATE DATABASE`` then ``zstd -dc file |
  mariadb NEW``). Restored databases and both sides' files are removed after
  each round.

Each command is timed whole (wall time, including manage.py's start-up)
from a tiny wrapper (bench/measure.py) that also reports the peak RSS of the
largest single process the command ran, and the CPU seconds of all of them.
Printed: medians over the rounds, and the ratio ours/bare as the median of
the per-pair ratios; also what the restore's row-count check costs alone.
Our site (catalog, key, storage) lives in a temporary directory set up with
``manage.py migrate`` and ``manage.py covet_setup``. Not a test: it prints
figures and asserts nothing about them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pymysql
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: the root, so covet and bench import by their package names

from bench import realistic  # noqa: E402
from bench.harness import MiB, Run, Site, load_pg_realistic, measure, pipeline, run, tsv_files  # noqa: E402

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
MY_HOST, MY_PORT, MY_USER = "127.0.0.1", 3306, "root"
PG_CLI = ["-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, "--no-password"]
MY_CLI = [f"--host={MY_HOST}", f"--port={MY_PORT}", f"--user={MY_USER}"]
PREFIX = "covet_bench_"
PGBENCH_DB = PREFIX + "pgbench"
REALISTIC_DB = PREFIX + "realistic"


# Databases -----------------------------------------------------------------------

def pg_connect(database: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=database, autocommit=True)


def my_connect(database: str | None = None) -> pymysql.connections.Connection:
    return pymysql.connect(host=MY_HOST, port=MY_PORT, user=MY_USER, password="", database=database,
                           autocommit=True, local_infile=True, charset="utf8mb4")


def pg_marker(name: str) -> str | None:
    with pg_connect() as conn:
        row = conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                           (name,)).fetchone()
    return None if row is None else (row[0] or "")


def pg_drop(name: str) -> None:
    with pg_connect() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def pg_create(name: str) -> None:
    with pg_connect() as conn:
        ident = sql.Identifier(name)
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(ident))


def pg_mark(name: str, marker: str) -> None:
    with pg_connect() as conn:
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(name), sql.Literal(marker)))


def pg_size(name: str) -> int:
    with pg_connect() as conn:
        return conn.execute("SELECT pg_database_size(%s)", (name,)).fetchone()[0]


def my_marker(name: str) -> str | None:
    with my_connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT schema_comment FROM information_schema.schemata WHERE schema_name = %s", (name,))
        row = cur.fetchone()
    return None if row is None else (row[0] or "")


def my_drop(name: str) -> None:
    with my_connect() as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


def my_size(name: str) -> int:
    with my_connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT sum(data_length + index_length) FROM information_schema.tables WHERE table_schema = %s",
                    (name,))
        return int(cur.fetchone()[0] or 0)


@dataclass
class Database:
    """One benchmarked database and how to make it."""

    key: str  # pgbench | realistic | mariadb
    engine: str  # postgresql | mysql
    name: str
    marker: str
    label: str
    size: int = 0
    made_seconds: float | None = None
    results: dict = field(default_factory=dict)


def make_pgbench(db: Database, args, work: Path) -> None:
    pg_create(db.name)
    run(["pgbench", "-i", "-q", "-s", str(args.scale), *PG_CLI[:-1], db.name],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with pg_connect(db.name) as conn:
        conn.execute("VACUUM (FREEZE, ANALYZE)")
        conn.execute("CHECKPOINT")


def make_pg_realistic(db: Database, args, work: Path) -> None:
    files = tsv_files(work, args.realistic_scale)
    pg_create(db.name)
    with pg_connect(db.name) as conn:
        load_pg_realistic(conn, files)
        conn.execute("VACUUM (FREEZE, ANALYZE)")
        conn.execute("CHECKPOINT")


def make_my_realistic(db: Database, args, work: Path) -> None:
    files = tsv_files(work, args.realistic_scale)
    with my_connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{db.name}` CHARACTER SET utf8mb4")
        cur.execute(f"USE `{db.name}`")
        cur.execute("SET unique_checks = 0, foreign_key_checks = 0, time_zone = '+00:00'")
        for statement in realistic.MARIADB_DDL:
            cur.execute(statement)
        for table in realistic.TABLES:
            path, _rows = files[table]
            cur.execute(f"LOAD DATA LOCAL INFILE %s INTO TABLE `{table}` CHARACTER SET utf8mb4", (str(path),))
        for table in realistic.TABLES:
            cur.execute(f"ANALYZE TABLE `{table}`")
            cur.fetchall()


MAKERS = {"pgbench": make_pgbench, "realistic": make_pg_realistic, "mariadb": make_my_realistic}


def prepare(db: Database, args, work: Path) -> None:
    """Create ``db``, or reuse a complete one with the same marker (--keep)."""
    engine_marker, drop, size = ((pg_marker, pg_drop, pg_size) if db.engine == "postgresql"
                                 else (my_marker, my_drop, my_size))
    existing = engine_marker(db.name)
    if existing == db.marker:
        print(f"  reusing {db.label} ({db.name})", flush=True)
    else:
        if existing is not None:
            print(f"  {db.name} exists but is not a complete '{db.marker}'; recreating it", flush=True)
            drop(db.name)
        print(f"  creating {db.label} ({db.name}) ...", flush=True)
        started = time.perf_counter()
        try:
            MAKERS[db.key](db, args, work)
        except BaseException:
            drop(db.name)
            raise
        # The marker goes last: a half-made database is never reused.
        if db.engine == "postgresql":
            pg_mark(db.name, db.marker)
        else:
            with my_connect() as conn, conn.cursor() as cur:
                cur.execute(f"ALTER DATABASE `{db.name}` COMMENT = %s", (db.marker,))
        db.made_seconds = time.perf_counter() - started
        print(f"  created in {db.made_seconds:.0f} s", flush=True)
    db.size = size(db.name)


# The pairs -------------------------------------------------------------------------

class Pairs:
    """Backup and restore pairs of one database."""

    def __init__(self, db: Database, site: Site, work: Path):
        self.db = db
        self.site = site
        self.work = work
        self.restored: list[str] = []

    # backup

    def ours_backup(self) -> tuple[Run, dict]:
        if self.db.engine == "postgresql":
            where = ["--database", "postgresql", "--host", PG_HOST, "--user", PG_USER]
        else:
            where = ["--database", "mysql", "--host", MY_HOST, "--port", str(MY_PORT), "--user", MY_USER]
        result = measure(self.site.manage("backup_database", *where, "--name", self.db.name, "--compress", "zstd",
                                          "--compress-level", "3", "--encrypt", "aes-256-gcm",
                                          "--output-format", "json"), self.site.env, self.work)
        summary = json.loads(result.stdout)
        result.job = summary["duration_seconds"]
        return result, summary

    def bare_backup(self, path: Path) -> Run:
        if self.db.engine == "postgresql":
            dump = shlex.join(["pg_dump", *PG_CLI, "-Fc", "-Z0", "-d", self.db.name])
        else:
            dump = shlex.join(["mariadb-dump", *MY_CLI, "--single-transaction", self.db.name])
        return measure(pipeline(f"{dump} | zstd -3 -T0 -q > {shlex.quote(str(path))}"), work=self.work)

    # restore

    def ours_restore(self, backup_id: str, target: str) -> Run:
        self.restored.append(target)
        result = measure(self.site.manage("restore_database", "--backup-id", backup_id, "--target-database", target,
                                          "--output-format", "json"), self.site.env, self.work)
        summary = json.loads(result.stdout)
        result.job = summary["duration_seconds"]
        counts = summary.get("row_counts") or {}
        if counts.get("differences"):
            raise RuntimeError(f"our restore of {backup_id} reports row count differences: {counts}")
        return result

    def bare_restore(self, path: Path, target: str) -> Run:
        self.restored.append(target)
        file = shlex.quote(str(path))
        if self.db.engine == "postgresql":
            create = shlex.join(["createdb", *PG_CLI, "-T", "template0", target])
            load = shlex.join(["pg_restore", *PG_CLI, "-d", target])
        else:
            create = shlex.join(["mariadb", *MY_CLI, "-e", f"CREATE DATABASE `{target}`"])
            load = shlex.join(["mariadb", *MY_CLI, target])
        return measure(pipeline(f"{create} && zstd -dc -q {file} | {load}"), work=self.work)

    def drop_restored(self) -> None:
        drop = pg_drop if self.db.engine == "postgresql" else my_drop
        for name in self.restored:
            drop(name)
        self.restored.clear()

    def warm_up(self) -> None:
        """Read the database once so the first measured run does not pay for a cold cache."""
        if self.db.engine == "postgresql":
            argv = ["pg_dump", *PG_CLI, "-Fc", "-Z0", "-d", self.db.name]
        else:
            argv = ["mariadb-dump", *MY_CLI, "--single-transaction", self.db.name]
        run(argv, stdout=subprocess.DEVNULL)

    def rounds(self, count: int) -> dict:
        tag = f"{os.getpid()}"
        figures = {key: [] for key in ("backup", "restore", "dump_bytes", "ours_stored", "bare_stored", "row_counts")}
        for index in range(count):
            bare_file = self.work / f"{self.db.key}-{index}.zst"
            ours_first = index % 2 == 0
            if ours_first:
                ours, summary = self.ours_backup()
                bare = self.bare_backup(bare_file)
            else:
                bare = self.bare_backup(bare_file)
                ours, summary = self.ours_backup()
            figures["backup"].append((ours, bare))
            figures["dump_bytes"].append(summary["source_bytes"])
            figures["ours_stored"].append(summary["stored_bytes"])
            figures["bare_stored"].append(bare_file.stat().st_size)
            ours_target = f"{PREFIX}r{tag}_{self.db.key}_ours_{index}"
            bare_target = f"{PREFIX}r{tag}_{self.db.key}_bare_{index}"
            try:
                if ours_first:
                    ours_r = self.ours_restore(summary["backup_id"], ours_target)
                    bare_r = self.bare_restore(bare_file, bare_target)
                else:
                    bare_r = self.bare_restore(bare_file, bare_target)
                    ours_r = self.ours_restore(summary["backup_id"], ours_target)
                # What our restore's row-count check costs on a fresh copy (untouched by any query yet).
                figures["row_counts"].append(row_count_seconds(self.db, bare_target, summary, self.work))
            finally:
                self.drop_restored()
            figures["restore"].append((ours_r, bare_r))
            # Both sides' files go after each round, so neither pays for a page cache the other left to grow.
            bare_file.unlink()
            shutil.rmtree(self.site.root / "backups")
            print(f"    round {index + 1}: backup ours {ours.wall:6.2f} s, bare {bare.wall:6.2f} s; "
                  f"restore ours {ours_r.wall:6.2f} s, bare {bare_r.wall:6.2f} s", flush=True)
        return figures


def row_count_seconds(db: Database, database: str, summary: dict, work: Path) -> tuple[float, float]:
    """Time the engine's row_counts on ``database``: for the tables our restore compares, then for all tables."""
    from covet.engines import ConnectionParams, compared_tables, open_engine

    sidecar = Path(urllib.parse.urlparse(summary["storage_location"]).path).with_suffix(".json")
    compared = compared_tables(json.loads(sidecar.read_text())["manifest"])
    host, port, user = (PG_HOST, PG_PORT, PG_USER) if db.engine == "postgresql" else (MY_HOST, MY_PORT, MY_USER)
    engine = open_engine(db.engine, ConnectionParams(host=host, port=port, user=user), str(work / "tmp"))
    started = time.perf_counter()
    if compared:
        engine.row_counts(database, compared)
    middle = time.perf_counter()
    engine.row_counts(database)
    return middle - started, time.perf_counter() - middle


def startup_seconds(site: Site, work: Path) -> float:
    """Median wall time of ``manage.py backup_database --help``: Django's start-up on the command path."""
    return statistics.median(measure(site.manage("backup_database", "--help"), site.env, work).wall
                             for _ in range(5))


# Report ----------------------------------------------------------------------------

def ratio(pairs: list[tuple[Run, Run]]) -> float:
    return statistics.median(ours.wall / bare.wall for ours, bare in pairs)


def job_ratio(pairs: list[tuple[Run, Run]]) -> float:
    """Median per-pair ratio of our job's own duration (what a worker-run backup takes) to the bare wall time."""
    return statistics.median(ours.job / bare.wall for ours, bare in pairs)


def median_of(pairs: list[tuple[Run, Run]], side: int, attribute: str) -> float:
    return statistics.median(getattr(pair[side], attribute) for pair in pairs)


def print_report(databases: list[Database], args, startup: float) -> None:
    print()
    print(f"{args.rounds} round(s) per operation, order alternating (ours first in rounds 1, 3, ...); "
          f"medians; ratio = median of per-pair ours/bare wall times. "
          f"{os.cpu_count()} cores, python {sys.version.split()[0]}.")
    print("bare backup: pg_dump -Fc -Z0 | zstd -3 -T0 > file (mariadb-dump --single-transaction | zstd -3 -T0): "
          "zstd multi-threaded, one worker per core")
    print("bare restore: createdb && zstd -dc file | pg_restore -d NEW "
          "(CREATE DATABASE && zstd -dc file | mariadb NEW)")
    print("ours: manage.py backup_database --compress zstd --compress-level 3 --encrypt aes-256-gcm (local storage, "
          "fsynced) / manage.py restore_database (creates the database, restores, compares row counts)")
    print()
    header = (f"{'database':32} {'operation':9} {'ours s':>7} {'bare s':>7} {'ratio':>6} {'job s':>6} {'job r':>6} "
              f"{'ours RSS':>9} {'bare RSS':>9} {'ours CPU':>9} {'bare CPU':>9}")
    print(header)
    print("-" * len(header))
    for db in databases:
        for operation in ("backup", "restore"):
            pairs = db.results[operation]
            print(f"{db.label:32} {operation:9} {median_of(pairs, 0, 'wall'):7.2f} {median_of(pairs, 1, 'wall'):7.2f} "
                  f"{ratio(pairs):6.3f} {median_of(pairs, 0, 'job'):6.2f} {job_ratio(pairs):6.3f} "
                  f"{median_of(pairs, 0, 'peak_rss') / MiB:6.0f} MiB "
                  f"{median_of(pairs, 1, 'peak_rss') / MiB:6.0f} MiB {median_of(pairs, 0, 'cpu'):7.2f} s "
                  f"{median_of(pairs, 1, 'cpu'):7.2f} s")
    print("(ratio: whole commands, manage.py start-up included; job s / job r: our Backup's or Restore's own "
          "duration in the catalog, started to finished, as a worker runs it without a process start, and its ratio "
          "to the bare wall time; RSS: the largest single process of the command; CPU: user + system seconds of "
          "all its processes, not the database server's)")
    print()
    print(f"{'database':32} {'db size':>9} {'dump':>9} {'ours stored':>12} {'bare stored':>12} {'zstd-3 ratio':>12}"
          f" {'counts: compared':>16} {'all':>6}")
    for db in databases:
        dump = statistics.median(db.results["dump_bytes"])
        ours = statistics.median(db.results["ours_stored"])
        bare = statistics.median(db.results["bare_stored"])
        compared = statistics.median(pair[0] for pair in db.results["row_counts"])
        everything = statistics.median(pair[1] for pair in db.results["row_counts"])
        print(f"{db.label:32} {db.size / MiB:5.0f} MiB {dump / MiB:5.0f} MiB {ours / MiB:8.1f} MiB "
              f"{bare / MiB:8.1f} MiB {dump / bare:11.2f}x {compared:15.2f}s {everything:5.2f}s")
    print("(dump: plaintext bytes our backup read from the tool; zstd-3 ratio: dump / bare file; row counts: "
          "the restore's row-count check alone on the bare restore's fresh copy: the tables our restore counts, "
          "the exact ones in the manifest, then every table)")
    print(f"\nmanage.py start-up (backup_database --help, median of 5): {startup:.2f} s")
    print()
    for db in databases:
        verdicts = []
        for operation in ("backup", "restore"):
            for label, value in (("", ratio(db.results[operation])), (" job", job_ratio(db.results[operation]))):
                verdicts.append(f"{operation}{label} {value:.2f}x ({'within' if value <= args.target else 'above'} "
                                f"{args.target:.2f}x)")
        print(f"{db.label}: " + ", ".join(verdicts))


# Main ------------------------------------------------------------------------------

def selected(only: list[str] | None) -> list[str]:
    keys = []
    for choice in only or ["pg", "mysql"]:
        keys += {"pg": ["pgbench", "realistic"], "mysql": ["mariadb"], "pgbench": ["pgbench"],
                 "realistic": ["realistic"]}[choice]
    return [key for key in ("pgbench", "realistic", "mariadb") if key in keys]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="pairs of each operation per database (default 3)")
    parser.add_argument("--only", action="append", choices=["pg", "mysql", "pgbench", "realistic"],
                        help="only these databases (repeatable): pg = pgbench + realistic (PostgreSQL), "
                             "mysql = MariaDB; default all")
    parser.add_argument("--keep", action="store_true",
                        help="keep the source databases for the next run (and reuse kept ones)")
    parser.add_argument("--scale", type=int, default=50, help="pgbench scale (default 50, about 750 MB)")
    parser.add_argument("--realistic-scale", type=float, default=1.0,
                        help="fraction of the realistic rows (default 1.0, about 800 MB in PostgreSQL)")
    parser.add_argument("--work-dir", type=Path, help="where the site, dumps and row files go (default: a temp dir)")
    parser.add_argument("--target", type=float, default=1.10, help="the ratio to compare against (default 1.10)")
    args = parser.parse_args(argv)
    keys = selected(args.only)
    rows = f"realistic rows x{args.realistic_scale:g}, data v3"
    catalog = {
        "pgbench": Database("pgbench", "postgresql", PGBENCH_DB, f"covet bench: pgbench scale {args.scale}",
                            f"PostgreSQL pgbench (scale {args.scale})"),
        "realistic": Database("realistic", "postgresql", REALISTIC_DB, f"covet bench: {rows}",
                              "PostgreSQL realistic"),
        "mariadb": Database("mariadb", "mysql", REALISTIC_DB, f"covet bench: {rows}", "MariaDB realistic"),
    }
    databases = [catalog[key] for key in keys]
    if args.work_dir:
        args.work_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="covet-bench-engines-", dir=args.work_dir))
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"work directory {work}")
    try:
        site = Site(work / "site")
        startup = startup_seconds(site, work)
        for db in databases:
            print(f"{db.label}:", flush=True)
            prepare(db, args, work)
            pairs = Pairs(db, site, work)
            pairs.warm_up()
            db.results = pairs.rounds(args.rounds)
        print_report(databases, args, startup)
    finally:
        if not args.keep:
            for db in databases:
                (pg_drop if db.engine == "postgresql" else my_drop)(db.name)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
