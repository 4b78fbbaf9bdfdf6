"""Benchmark WAL archiving: our archive_command + shipper against pgBackRest's archive-push, RPO and pgbench.

Run from the repository root as root (private clusters run as postgres):

    .venv/bin/python bench/wal_push.py                 # all three parts
    .venv/bin/python bench/wal_push.py --only capacity --segments 64

Parts, each on a private PostgreSQL 15 cluster (bench/servers/postgres.py, with
full_page_writes on) and a private Covet site (catalog, default key, local
storage) in a temporary directory:

- capacity: with archive_mode on and an empty archive_command, an insert
  workload of shop-like rows (words, amounts, timestamps, tracking numbers:
  not all-zero, zstd -3 ratio printed) leaves ``--segments`` ready segments.
  The same segments are then pushed, one at a time and in order, exactly as
  PostgreSQL calls archive_command (``sh -c`` with the command string, as the
  postgres user, in the data directory), through the archive_command that
  ``setup_pitr`` prints (our shipper running, started by
  ``manage.py run_shipper``) and through ``pgbackrest archive-push``
  (compress-type zst level 3, aes-256-cbc, one local repository; its default
  synchronous mode). The files are read once beforehand so both find them
  in the page cache. The pushes go in blocks of 16, each pushed by both
  sides, alternating which goes first (a shared machine's noise then falls
  on both); only the current block's .ready files are visible, and ours
  are renamed .done after each push as PostgreSQL does. Printed: segments/s and CPU ms per segment, from
  getrusage(RUSAGE_CHILDREN) around the pushes (the commands and what they
  start); for ours also the shipper's own CPU (from /proc), which does the
  compression and encryption that pgBackRest does in its child.
- rpo: archive_timeout 5 s, archive_command ours, one row committed every
  50 ms; every 0.5 s for 30 s the newest commit time covered by the newest
  archived segment is compared with now. Printed: median and worst RPO.
- pgbench: ``pgbench -c 4 -j 2 -T 20`` with archiving through ours; printed:
  the WAL rate pgbench produced, the archive rate, the largest ready backlog
  seen, and how long the backlog took to drain after pgbench stopped.

Not a test: it prints figures and asserts nothing about them.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))  # run as a script: the root, so covet and bench import by their package names

from bench.servers.postgres import PG_BIN, PrivateCluster, connect  # noqa: E402

PYTHON = sys.executable
MANAGE = str(REPO / "manage.py")
SEGMENT = 16 * 1024 * 1024
TICK = os.sysconf("SC_CLK_TCK")
# Segments pushed by one side before the other pushes the same ones: alternating blocks spread the
# noise of a shared machine over both sides.
BLOCK = 16
WORDS = ("the of and to in order shipped delayed refund invoice customer payment pending warehouse backorder express "
         "standard priority returned damaged gift wrap coupon great quality product arrived late works fine buy "
         "again size color fits small large box broken quickly service support battery cable charger screen sound "
         "light heavy cheap price value recommend love hate okay poor excellent London Paris Berlin Madrid").split()


class Site:
    """A private Covet site under ``root``: catalog, default key, local storage, socket directory."""

    def __init__(self, root: Path):
        self.root = root
        self.run_dir = root / "run"
        self.run_dir.mkdir(parents=True)
        self.run_dir.chmod(0o755)
        self.env = {key: value for key, value in os.environ.items()
                    if not key.startswith("COVET_") and key not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
        self.env.update(COVET_VAR_DIR=str(root / "var"), COVET_BACKUP_DIR=str(root / "backups"),
                        COVET_TMP_DIR=str(root / "tmp"), COVET_RUN_DIR=str(self.run_dir),
                        COVET_ADMIN_PASSWORD="bench-only-password", LOG_LEVEL="WARNING")
        self.manage("migrate", "--verbosity", "0")
        self.manage("covet_setup")

    def manage(self, *argv: str) -> str:
        done = subprocess.run([PYTHON, MANAGE, *argv], env=self.env, cwd=REPO, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"manage.py {' '.join(argv)} failed: {done.stderr}{done.stdout}")
        return done.stdout

    def pitr_target(self, name: str, cluster: PrivateCluster) -> str:
        """Register the cluster as a target, set archiving up; return the archive_command setup_pitr prints."""
        self.manage("target", "add", name, "--database", "postgresql", "--name", "postgres", "--host", "127.0.0.1",
                    "--port", str(cluster.port), "--user", "postgres")
        out = self.manage("setup_pitr", "--target", name)
        line = next(line for line in out.splitlines() if line.strip().startswith("archive_command = "))
        return line.split("= ", 1)[1].strip()[1:-1].replace("''", "'")

    def start_shipper(self, name: str, extra: list[str]) -> subprocess.Popen:
        log = open(self.root / f"shipper-{name}.log", "wb")
        proc = subprocess.Popen([PYTHON, MANAGE, "run_shipper", "--target", name, *extra],
                                env={**self.env, "LOG_LEVEL": "INFO"}, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        socket = self.run_dir / f"wal-{name}.sock"
        while not socket.exists():
            if proc.poll() is not None:
                raise RuntimeError((self.root / f"shipper-{name}.log").read_text())
            time.sleep(0.05)
        return proc

    def archived(self) -> dict[str, float]:
        """Return {segment name: archived_at as a Unix time} from the site's catalog."""
        with sqlite3.connect(self.root / "var" / "catalog.sqlite3", timeout=30) as db:
            rows = db.execute("SELECT name, archived_at FROM backups_archivedlog WHERE kind = 'wal'").fetchall()
        return {name: _unix(stamp) for name, stamp in rows}


def _unix(stamp: str) -> float:
    from datetime import datetime, timezone

    parsed = datetime.fromisoformat(stamp.replace(" ", "T"))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()


def as_postgres() -> dict:
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


def cpu_of(pid: int) -> float:
    """Return the CPU seconds (user + system, all threads) a live process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def new_cluster() -> PrivateCluster:
    cluster = PrivateCluster().start()
    cluster.configure(full_page_writes="on", max_wal_size="4GB", archive_mode="on", archive_command="",
                      wal_keep_size="0")
    return cluster


# Capacity --------------------------------------------------------------------------------------

def make_ready_segments(cluster: PrivateCluster, count: int) -> list[str]:
    """Insert shop-like rows until ``count`` segments are ready; return the oldest ``count`` ready names."""
    status = cluster.data / "pg_wal" / "archive_status"
    words = "ARRAY[" + ",".join(f"'{word}'" for word in WORDS) + "]"
    word = f"({words})[1 + floor(random() * {len(WORDS)})::int]"
    with connect("postgres", cluster.server) as conn:
        conn.execute("CREATE TABLE orders (id bigint, customer int, placed timestamptz, amount numeric(12,2), "
                     "status text, tracking text, note text)")
        batch = 0
        while len(list(status.glob("*.ready"))) < count + 1:
            conn.execute(f"""
                INSERT INTO orders SELECT g, (random() * 400000)::int,
                    timestamptz '2024-01-01' + random() * interval '700 days', (random() * 900)::numeric(12, 2),
                    (ARRAY['new','paid','shipped','delivered','delivered','cancelled'])[1 + floor(random() * 6)::int],
                    '1Z' || upper(substr(md5(g::text), 1, 16)),
                    {word} || ' ' || {word} || ' ' || {word} || ' ' || {word} || ' ' || {word} || ' ' || {word}
                FROM generate_series({batch * 200000 + 1}, {(batch + 1) * 200000}) g""")
            batch += 1
    return sorted(path.name[:-6] for path in status.glob("*.ready") if len(path.name) == 30)[:count]


def zstd_ratio(path: Path) -> float:
    import zstandard

    data = path.read_bytes()
    return len(data) / len(zstandard.ZstdCompressor(level=3).compress(data))


def push_all(command: str, names: list[str], data: Path, mark_done: bool) -> tuple[float, float]:
    """Run ``command`` once per segment as PostgreSQL does; return (wall seconds, children's CPU seconds).

    ``mark_done`` renames each .ready to .done after its push, as PostgreSQL does.
    """
    status = data / "pg_wal" / "archive_status"
    cpu, started = children_cpu(), time.perf_counter()
    for name in names:
        done = subprocess.run(["sh", "-c", command.replace("%p", f"pg_wal/{name}")], cwd=data,
                              capture_output=True, text=True, **as_postgres())
        if done.returncode:
            raise RuntimeError(f"archive command failed on {name}: {done.stderr}")
        if mark_done:
            (status / f"{name}.ready").rename(status / f"{name}.done")
    return time.perf_counter() - started, children_cpu() - cpu


def pgbackrest_config(work: Path, cluster: PrivateCluster) -> Path:
    """Write a pgBackRest config (zst 3, aes-256-cbc, one repository) and create the stanza; return its path."""
    for sub in ("repo", "lock", "log", "spool"):
        (work / sub).mkdir(parents=True)
    shutil.chown(work, "postgres", "postgres")
    for sub in ("repo", "lock", "log", "spool"):
        shutil.chown(work / sub, "postgres", "postgres")
    config = work / "pgbackrest.conf"
    passphrase = os.urandom(24).hex()  # only in this 0600 file, as pgBackRest expects it
    config.write_text(f"""[global]
repo1-path={work}/repo
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass={passphrase}
compress-type=zst
compress-level=3
lock-path={work}/lock
log-path={work}/log
spool-path={work}/spool
log-level-console=warn
log-level-file=off
start-fast=y

[bench]
pg1-path={cluster.data}
pg1-port={cluster.port}
pg1-socket-path={cluster.dir}
""")
    config.chmod(0o600)
    shutil.chown(config, "postgres", "postgres")
    subprocess.run(["pgbackrest", f"--config={config}", "--stanza=bench", "stanza-create"], check=True,
                   capture_output=True, **as_postgres())
    return config


def capacity(work: Path, count: int, shipper_args: list[str]) -> None:
    cluster = new_cluster()
    try:
        print(f"preparing {count} ready segments ...", flush=True)
        names = make_ready_segments(cluster, count)
        data = cluster.data
        ratio = statistics.mean(zstd_ratio(data / "pg_wal" / name) for name in names[::8])
        for name in names:  # both sides then read them from the page cache
            (data / "pg_wal" / name).read_bytes()
        site = Site(work / "site")
        ours = site.pitr_target("bench", cluster)
        config = pgbackrest_config(work / "pgbackrest", cluster)
        theirs = f"pgbackrest --config={config} --stanza=bench archive-push %p"
        shipper = site.start_shipper("bench", shipper_args)
        status = data / "pg_wal" / "archive_status"
        for ready in status.glob("*.ready"):  # shown block by block, so a block's read-ahead stays in it
            ready.rename(ready.with_suffix(".hidden"))
        totals = {"ours": [0.0, 0.0, 0.0], "theirs": [0.0, 0.0, 0.0]}  # wall, children's CPU, shipper CPU
        try:
            for index in range(0, count, BLOCK):
                block = names[index:index + BLOCK]
                for name in block:
                    (status / f"{name}.hidden").rename(status / f"{name}.ready")
                sides = ["ours", "theirs"] if index // BLOCK % 2 == 0 else ["theirs", "ours"]
                for side in sides:
                    before = cpu_of(shipper.pid)
                    wall, cpu = push_all(ours if side == "ours" else theirs, block, data, mark_done=side == "ours")
                    totals[side][0] += wall
                    totals[side][1] += cpu
                    totals[side][2] += cpu_of(shipper.pid) - before if side == "ours" else 0.0
        finally:
            shipper.terminate()
            shipper.wait(30)
        stored = sum(p.stat().st_size for p in (work / "site" / "backups").rglob("*.covet") if p.name[:24] in names)
        theirs_stored = sum(p.stat().st_size for p in (work / "pgbackrest" / "repo" / "archive").rglob("*.zst"))
    finally:
        cluster.stop()
    (our_wall, our_cpu, shipper_cpu), (their_wall, their_cpu, _) = totals["ours"], totals["theirs"]
    print(f"\ncapacity: {count} ready segments ({names[0]} .. {names[-1]}), zstd -3 ratio {ratio:.2f}, "
          f"in blocks of {BLOCK} alternating which side goes first")
    print(f"  archive_command: {ours}")
    per_segment = (our_cpu + shipper_cpu) / count * 1000
    print(f"  ours        {count / our_wall:6.1f} segments/s  {per_segment:6.1f} ms CPU/segment "
          f"({our_cpu / count * 1000:.1f} in archive_command, {shipper_cpu / count * 1000:.1f} in the shipper)  "
          f"stored {stored / 2**20:.0f} MiB")
    print(f"  pgBackRest  {count / their_wall:6.1f} segments/s  {their_cpu / count * 1000:6.1f} ms CPU/segment"
          f"{'':>43}stored {theirs_stored / 2**20:.0f} MiB")
    print(f"  ratio ours/pgBackRest: {their_wall / our_wall:.2f}x the throughput, "
          f"{(our_cpu + shipper_cpu) / their_cpu:.2f}x the CPU per segment")


# RPO -------------------------------------------------------------------------------------------

def rpo(work: Path, shipper_args: list[str], seconds: float = 30.0) -> None:
    cluster = new_cluster()
    site = Site(work / "site-rpo")
    command = site.pitr_target("rpo", cluster)
    shipper = site.start_shipper("rpo", shipper_args)
    commits: list[tuple[float, int]] = []
    stop = threading.Event()

    def load() -> None:
        with connect("postgres", cluster.server) as conn:
            conn.execute("CREATE TABLE ticks (id serial, at timestamptz default now(), note text)")
            while not stop.is_set():
                conn.execute("INSERT INTO ticks (note) VALUES (md5(random()::text))")
                lsn = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
                commits.append((time.time(), _lsn(lsn)))
                time.sleep(0.05)

    try:
        with connect("postgres", cluster.server) as conn:
            conn.execute(f"ALTER SYSTEM SET archive_command = '{command}'")
            conn.execute("ALTER SYSTEM SET archive_timeout = '5s'")
            conn.execute("SELECT pg_reload_conf()")
        writer = threading.Thread(target=load)
        writer.start()
        time.sleep(6)
        samples = []
        deadline = time.time() + seconds
        while time.time() < deadline:
            time.sleep(0.5)
            newest = max((name for name in site.archived() if len(name) == 24), default=None)
            if newest is None:
                continue
            end = (int(newest[8:16], 16) * 256 + int(newest[16:], 16) + 1) * SEGMENT
            covered = max((at for at, lsn in list(commits) if lsn <= end), default=None)
            if covered:
                samples.append(time.time() - covered)
        stop.set()
        writer.join()
    finally:
        shipper.terminate()
        shipper.wait(30)
        cluster.stop()
    print(f"\nRPO with archive_timeout 5s, a commit every 50 ms, {len(samples)} samples over {seconds:.0f}s: "
          f"median {statistics.median(samples):.1f}s, worst {max(samples):.1f}s")


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


# pgbench ---------------------------------------------------------------------------------------

def pgbench(work: Path, shipper_args: list[str], seconds: int = 20) -> None:
    cluster = new_cluster()
    site = Site(work / "site-pgbench")
    command = site.pitr_target("pgbench", cluster)
    shipper = site.start_shipper("pgbench", shipper_args)
    status = cluster.data / "pg_wal" / "archive_status"
    target = ["-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres"]
    try:
        subprocess.run([str(PG_BIN / "pgbench"), *target, "-i", "-s", "20", "-q", "postgres"], check=True,
                       capture_output=True)
        with connect("postgres", cluster.server) as conn:
            conn.execute(f"ALTER SYSTEM SET archive_command = '{command}'")
            conn.execute("SELECT pg_reload_conf()")
            conn.execute("CHECKPOINT")
            start_lsn = _lsn(conn.execute("SELECT pg_switch_wal()::text").fetchone()[0])
        _wait(lambda: not list(status.glob("*.ready")), 120)
        before = len(site.archived())
        backlog, started = 0, time.time()
        bench = subprocess.Popen([str(PG_BIN / "pgbench"), *target, "-c", "4", "-j", "2", "-T", str(seconds), "-n",
                                  "postgres"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        while bench.poll() is None:
            backlog = max(backlog, len(list(status.glob("*.ready"))))
            time.sleep(0.2)
        ran = time.time() - started
        tps = next((line for line in bench.stdout.read().splitlines() if line.startswith("tps")), "tps ?")
        with connect("postgres", cluster.server) as conn:
            end_lsn = _lsn(conn.execute("SELECT pg_switch_wal()::text").fetchone()[0])
        during = len(site.archived()) - before
        stopped = time.time()
        _wait(lambda: not list(status.glob("*.ready")), 300)
        drain = time.time() - stopped
    finally:
        shipper.terminate()
        shipper.wait(30)
        cluster.stop()
    wal_mib = (end_lsn - start_lsn) / 2**20
    print(f"\npgbench -c 4 -j 2 -T {seconds} (scale 20, full_page_writes on): {tps.split('(')[0].strip()}")
    print(f"  WAL written {wal_mib:.0f} MiB = {wal_mib / ran:.1f} MiB/s ({wal_mib / 16 / ran:.1f} segments/s); "
          f"archived while it ran {during} segments ({during / ran:.1f}/s); largest ready backlog {backlog}; "
          f"backlog drained {drain:.1f}s after it stopped")


def _wait(predicate, timeout: float) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise RuntimeError("timed out waiting for the archive to catch up")
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["capacity", "rpo", "pgbench"], action="append")
    parser.add_argument("--segments", type=int, default=64)
    parser.add_argument("--shipper-args", default="", help="extra run_shipper options, e.g. '--workers 2'")
    args = parser.parse_args(argv)
    parts = args.only or ["capacity", "rpo", "pgbench"]
    extra = args.shipper_args.split()
    work = Path(tempfile.mkdtemp(prefix="covet-bench-wal-", dir="/tmp"))
    work.chmod(0o755)
    try:
        if "capacity" in parts:
            capacity(work, args.segments, extra)
        if "rpo" in parts:
            rpo(work, extra)
        if "pgbench" in parts:
            pgbench(work, extra)
    finally:
        if not os.environ.get("COVET_BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
