"""What the benchmarks share: running a command under bench/measure.py, polling while it runs, a private
Covet site, and the realistic shop rows written once and loaded into PostgreSQL.

Not a benchmark itself: bench/engines.py, pitr.py and binlog_replay.py import it.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench import realistic

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
MANAGE = str(REPO / "manage.py")
MEASURE = str(BENCH / "measure.py")
MiB = 1 << 20


# Running commands ------------------------------------------------------------------

@dataclass
class Run:
    """One measured command."""

    wall: float
    peak_rss: int
    cpu: float
    stdout: str
    job: float | None = None  # ours only: the job's own duration from the catalog (no manage.py start-up)


def measure(argv: list[str], env: dict | None = None, work: Path | None = None) -> Run:
    """Run ``argv`` under bench/measure.py; raise with its stderr if it fails."""
    with tempfile.NamedTemporaryFile(dir=work, prefix="stdout-") as out:
        done = subprocess.run([PYTHON, MEASURE, out.name, "--", *argv], env=env, cwd=REPO,
                              capture_output=True, text=True, check=False)
        figures = json.loads(done.stdout) if done.stdout.strip() else {"returncode": done.returncode}
        stdout = Path(out.name).read_text(errors="replace")
    if figures["returncode"] != 0:
        raise RuntimeError(f"command failed ({figures['returncode']}): {shlex.join(argv)}\n"
                           f"{done.stderr[-3000:]}{stdout[-2000:]}")
    return Run(figures["wall"], figures["peak_rss"], figures["cpu"], stdout)


class Poller:
    """Call ``poll(now)`` every ``interval`` seconds on a thread while a ``with`` block runs (a command is
    measured); subclasses note in ``seen`` when what they watch for happened."""

    interval = 0.1

    def __init__(self):
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll(time.time())
            time.sleep(self.interval)

    def poll(self, now: float) -> None:
        raise NotImplementedError

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def pipeline(command: str) -> list[str]:
    """Return the argv running a shell pipeline that fails when any stage fails."""
    return ["bash", "-o", "pipefail", "-c", command]


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run ``argv`` unmeasured; raise CalledProcessError when it fails."""
    return subprocess.run(argv, check=True, **kwargs)


class Site:
    """A private Covet site: catalog, default key and local storage under one temporary directory."""

    def __init__(self, root: Path):
        self.root = root
        self.env = {key: value for key, value in os.environ.items()
                    if not key.startswith("COVET_") and key not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
        self.env.update(COVET_VAR_DIR=str(root / "var"), COVET_BACKUP_DIR=str(root / "backups"),
                        COVET_TMP_DIR=str(root / "tmp"), COVET_ADMIN_PASSWORD="bench-only-password",
                        LOG_LEVEL="WARNING")
        for argv in (["migrate", "--verbosity", "0"], ["covet_setup"]):
            run([PYTHON, MANAGE, *argv], env=self.env, cwd=REPO, stdout=subprocess.DEVNULL)

    def manage(self, *argv: str) -> list[str]:
        return [PYTHON, MANAGE, *argv]


# The realistic rows ------------------------------------------------------------------

def tsv_files(work: Path, scale: float) -> dict:
    """Write the realistic rows once per run (both servers load the same files)."""
    directory = work / "realistic-rows"
    if not directory.exists():
        directory.mkdir()
        started = time.perf_counter()
        files = realistic.write_tables(directory, scale)
        size = sum(path.stat().st_size for path, _ in files.values())
        print(f"  wrote {size / MiB:.0f} MiB of realistic rows in {time.perf_counter() - started:.0f} s", flush=True)
        (directory / "rows.json").write_text(json.dumps({t: [str(p), n] for t, (p, n) in files.items()}))
    return {t: (Path(p), n) for t, (p, n) in json.loads((directory / "rows.json").read_text()).items()}


def load_pg_realistic(conn, files: dict) -> None:
    """Create the realistic tables over ``conn`` and COPY in the rows of ``files`` (from tsv_files), indexed."""
    conn.execute("SET TIME ZONE 'UTC'")
    conn.execute(realistic.POSTGRES_DDL)
    for table in realistic.TABLES:
        path, _rows = files[table]
        with conn.cursor() as cur, cur.copy(f"COPY {table} FROM STDIN") as copy, open(path, "rb") as rows:
            while data := rows.read(MiB):
                copy.write(data)
    conn.execute(realistic.POSTGRES_INDEXES)
