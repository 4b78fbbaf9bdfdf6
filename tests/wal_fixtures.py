"""Helpers for the WAL shipping tests: archiving private clusters, a reachable socket directory, the shipper process.

PostgreSQL runs archive_command as the postgres user, so the socket
directory must be reachable by it: pytest's own temporary directories
(/tmp/pytest-of-root, 0700) are not, so these live in 0755 directories of
their own under /tmp.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from archiving import covet_wal
from bench.servers.postgres import PrivateCluster, connect
from tests.helpers import REPO, worker_env

ENTRY_POINT = REPO / "archiving" / "covet_wal.py"
# The interpreter PostgreSQL's user can run (the venv lives under /root); the entry point needs only the stdlib.
SYSTEM_PYTHON = "/usr/bin/python3"


class ArchivingCluster(PrivateCluster):
    """A private cluster (settings changed with ``configure``) that closes WAL segments on demand."""

    def switch_segments(self, count: int) -> list[str]:
        """Write a little WAL and close the segment, ``count`` times; return the closed segments' names."""
        names = []
        with connect("postgres", self.server) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS covet_wal_test (id serial, note text)")
            for index in range(count):
                conn.execute("INSERT INTO covet_wal_test (note) SELECT md5(g::text) FROM generate_series(1, 200) g")
                names.append(conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0])
        return names

    def archiver(self) -> dict:
        """Return PostgreSQL's own archiver counters."""
        with connect("postgres", self.server) as conn:
            row = conn.execute("SELECT archived_count, failed_count FROM pg_stat_archiver").fetchone()
        return {"archived_count": row[0], "failed_count": row[1]}


def reachable_dir(prefix: str) -> Path:
    """Return a new 0755 directory under /tmp that the postgres user can reach."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


class ShipperProcess:
    """``manage.py run_shipper`` as a child process on the test catalog."""

    def __init__(self, settings, target: str, socket_dir: Path, *extra: str):
        self.socket = socket_dir / f"wal-{target}.sock"
        self.log = Path(tempfile.mkstemp(prefix="covet-shipper-", suffix=".log")[1])
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "run_shipper", "--target", target, "--socket-dir", str(socket_dir),
                 "--status-interval", "0.5", *extra],
                cwd=REPO, env=worker_env(settings), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.target = target
        deadline = time.monotonic() + 30
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the shipper did not start:\n{self.output()}")
            time.sleep(0.05)

    def answers(self) -> bool:
        """Return whether the shipper answers a ping.

        The socket file appears at bind(), before its chmod and listen(): a push
        then would be refused, so only an answer says the shipper is serving.
        """
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(5)
            probe.connect(str(self.socket))
            probe.sendall(covet_wal.encode_request("ping", self.target))
            ok, _, _ = covet_wal.parse_reply(covet_wal.read_line(probe, time.monotonic() + 5, "a ping"))
            return ok
        except (OSError, covet_wal.Failure):
            return False
        finally:
            probe.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM the shipper, wait for it, return its exit status."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.unlink(missing_ok=True)
        return self.proc.returncode


def push(target: str, socket: Path, wal_path: Path, user: str | None = None, timeout: float = 30,
         cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the archive entry point exactly as archive_command does (optionally as another OS user)."""
    argv = [SYSTEM_PYTHON, "-I", "-S", str(ENTRY_POINT), "push", "--target", target, "--socket", str(socket),
            "--timeout", f"{timeout:g}", str(wal_path)]
    if user:
        argv = ["runuser", "-u", user, "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 30, cwd=cwd)


def fetch_command(spool: Path, name: str, destination: Path) -> list[str]:
    """Return the restore entry point's command line, as restore_command runs it."""
    return [SYSTEM_PYTHON, "-I", "-S", str(ENTRY_POINT), "fetch", "--spool", str(spool), name, str(destination)]


def fetch(spool: Path, name: str, destination: Path) -> subprocess.CompletedProcess:
    """Run the restore entry point as restore_command does."""
    return subprocess.run(fetch_command(spool, name, destination), capture_output=True, text=True, timeout=30)


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
