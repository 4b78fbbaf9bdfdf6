"""PostgreSQL: connections to the shared server or a private cluster, and private PostgreSQL 15 clusters.

A private cluster is made with initdb as the postgres OS user in its own
temporary directory, on a free port, with its socket in that directory; it
is stopped by its postmaster's PID (never by name) and removed.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from bench.servers import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SHARED = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


def connect(dbname: str = "postgres", server: dict | None = None, **kwargs) -> psycopg.Connection:
    """An autocommit connection to ``dbname`` on ``server`` (the shared server by default)."""
    params = dict(server or SHARED)
    params.update(kwargs)
    return psycopg.connect(dbname=dbname, autocommit=True, **params)


class PrivateCluster:
    """A PostgreSQL 15 cluster of our own: ``start`` it, use ``server`` to connect, ``stop`` it by PID."""

    def __init__(self, password: str | None = None, settings: str = ""):
        self.password = password
        self.settings = settings  # extra postgresql.conf lines
        self.dir = Path(tempfile.mkdtemp(prefix="covet-pgcluster-", dir="/tmp"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.pid: int | None = None
        self.children: list[int] = []

    @property
    def server(self) -> dict:
        params = {"host": "127.0.0.1", "port": self.port, "user": "postgres"}
        if self.password:
            params["password"] = self.password
        return params

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=120)

    def start(self) -> "PrivateCluster":
        shutil.chown(self.dir, "postgres", "postgres")
        auth = ["--auth=trust"]
        if self.password:
            pwfile = self.dir / "pwfile"
            pwfile.write_text(self.password + "\n")
            shutil.chown(pwfile, "postgres", "postgres")
            auth = ["--auth-local=scram-sha-256", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8",
                          "--locale=C.UTF-8", "--no-sync", *auth)
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{self.dir}'\nfsync = off\nfull_page_writes = off\n"
                       "synchronous_commit = off\nshared_buffers = 32MB\nmax_connections = 30\n"
                       f"{self.settings}\n")
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"),
                          "-w", "-t", "60", "start")
        self.pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        return self

    def configure(self, **settings: str) -> None:
        """ALTER SYSTEM each setting and restart the server so all of them apply."""
        with connect("postgres", self.server) as conn:
            for name, value in settings.items():
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        self.restart()

    def restart(self) -> None:
        """Restart the server (fast shutdown) on the same data directory and port."""
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"),
                          "-m", "fast", "-w", "-t", "60", "restart")
        self.pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])

    def record_children(self) -> None:
        """Remember the server's processes, so they can be ended by PID after its postmaster was killed."""
        import psutil

        with_children = psutil.Process(self.pid).children(recursive=True)
        self.children = [child.pid for child in with_children]

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would."""
        self.record_children()
        os.kill(self.pid, signal.SIGKILL)

    def stop(self) -> None:
        """Stop the server by its PID (fast shutdown, SIGKILL after 30 s) and remove its directory."""
        if self.pid and alive(self.pid):
            os.kill(self.pid, signal.SIGINT)  # fast shutdown
            deadline = time.monotonic() + 30
            while alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if alive(self.pid):
                os.kill(self.pid, signal.SIGKILL)
        for pid in self.children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


def alive(pid: int) -> bool:
    """Whether process ``pid`` is running (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False
