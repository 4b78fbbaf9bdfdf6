"""PostgreSQL helpers for the engine tests: admin connections, throw-away databases and private clusters.

A private cluster is made with initdb as the postgres OS user in its own
temporary directory, on a free port, with its socket in that directory; it
is stopped by its postmaster's PID (never by name) and removed.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SHARED = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


def unique(prefix: str = "covet_t_") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def connect(dbname: str = "postgres", server: dict | None = None, **kwargs) -> psycopg.Connection:
    """An autocommit connection to ``dbname`` on ``server`` (the shared server by default)."""
    params = dict(server or SHARED)
    params.update(kwargs)
    return psycopg.connect(dbname=dbname, autocommit=True, **params)


def drop_database(name: str, server: dict | None = None) -> None:
    with connect("postgres", server) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def database_exists(name: str, server: dict | None = None) -> bool:
    with connect("postgres", server) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def table_checksums(dbname: str, server: dict | None = None) -> dict[str, tuple[int, str]]:
    """Return {schema.table: (rows, checksum)} for every user table; the checksum ignores row order."""
    with connect(dbname, server) as conn:
        tables = conn.execute("""
            SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg\\_toast%' ORDER BY 1, 2""").fetchall()
        result = {}
        for schema, table in tables:
            query = sql.SQL("SELECT count(*), md5(coalesce(string_agg(md5(t::text), ',' ORDER BY md5(t::text)), '')) "
                            "FROM {}.{} t").format(sql.Identifier(schema), sql.Identifier(table))
            result[f"{schema}.{table}"] = tuple(conn.execute(query).fetchone())
        return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
        if self.pid and _alive(self.pid):
            os.kill(self.pid, signal.SIGINT)  # fast shutdown
            deadline = time.monotonic() + 30
            while _alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(self.pid):
                os.kill(self.pid, signal.SIGKILL)
        for pid in self.children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def processes(match: str) -> list[tuple[int, str, dict]]:
    """Return (pid, command line, environment) of live processes whose command line contains ``match``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if match not in cmdline:
                continue
            environ = dict(item.split("=", 1) for item in
                           (entry / "environ").read_bytes().decode(errors="replace").split("\0") if "=" in item)
        except OSError:
            continue
        found.append((int(entry.name), cmdline, environ))
    return found
