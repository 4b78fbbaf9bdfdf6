"""MariaDB: connections over a socket, quoting, order-independent table checksums, and private mariadbd servers
(with their binary log on, for PITR) in temporary directories, stopped by PID."""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pymysql

from bench.servers import free_port

SHARED_SOCKET = "/run/mysqld/mysqld.sock"


def connect(socket_path: str = SHARED_SOCKET, user: str = "root", password: str = "", database: str | None = None,
            **kwargs) -> pymysql.connections.Connection:
    """Connect to a MariaDB server over its socket (autocommit)."""
    try:
        return pymysql.connect(unix_socket=socket_path, user=user, password=password, database=database,
                               charset="utf8mb4", autocommit=True, **kwargs)
    except pymysql.err.OperationalError as exc:
        raise RuntimeError(f"MariaDB is not reachable at {socket_path}: {exc}; "
                           "start it first (scripts/ensure_databases.sh)") from exc


def q(name: str) -> str:
    """Quote an identifier."""
    return "`" + name.replace("`", "``") + "`"


def execute(conn, *statements: str, args=None) -> list:
    """Run statements; return the rows of the last."""
    rows = []
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement, args)
            rows = list(cur.fetchall())
    return rows


def table_checksum(conn, schema: str, table: str) -> tuple:
    """Return an order-independent checksum of a table's rows: count, sum of CRC32 and XOR of MD5 halves."""
    columns = [row[0] for row in execute(
        conn, "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
              "ORDER BY ORDINAL_POSITION", args=(schema, table))]
    # HEX of the binary form keeps NULL ('N') apart from '' and every byte of blobs and text.
    row = "CONCAT_WS(',', " + ", ".join(f"COALESCE(HEX(CAST({q(c)} AS BINARY)), 'N')" for c in columns) + ")"
    return tuple(execute(conn, f"SELECT COUNT(*), COALESCE(SUM(CRC32({row})), 0), "
                               f"COALESCE(BIT_XOR(CAST(CONV(LEFT(MD5({row}), 16), 16, 10) AS UNSIGNED)), 0) "
                               f"FROM {q(schema)}.{q(table)}")[0])


class PrivateMariaDB:
    """A mariadbd of the caller's own (binary log on), in a temporary directory; stopped by PID."""

    def __init__(self, base: Path, binlog: bool = True):
        self.base = base
        self.datadir = base / "data"
        self.socket = str(base / "mysqld.sock")
        self.port = free_port()
        self.binlog = binlog
        self.process: subprocess.Popen | None = None

    def start(self) -> "PrivateMariaDB":
        if not self.datadir.exists():
            done = subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={self.datadir}", "--user=root",
                                   "--auth-root-authentication-method=normal", "--skip-test-db"],
                                  capture_output=True, text=True, timeout=120)
            if done.returncode != 0:
                raise RuntimeError(f"mariadb-install-db failed: {done.stderr[-2000:]}")
        args = ["/usr/sbin/mariadbd", "--no-defaults", f"--datadir={self.datadir}", f"--socket={self.socket}",
                f"--port={self.port}", "--bind-address=127.0.0.1", "--user=root", "--skip-name-resolve",
                f"--pid-file={self.base / 'mysqld.pid'}", f"--log-error={self.base / 'error.log'}",
                "--innodb-buffer-pool-size=128M", "--character-set-server=utf8mb4"]
        if self.binlog:
            args += [f"--log-bin={self.datadir / 'binlog'}", "--server-id=4242", "--binlog-format=ROW"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"private mariadbd exited: {(self.base / 'error.log').read_text()[-2000:]}")
            try:
                pymysql.connect(unix_socket=self.socket, user="root").close()
                return self
            except pymysql.err.OperationalError:
                time.sleep(0.1)
        raise RuntimeError("private mariadbd did not accept connections within 60 s")

    def connect(self, **kwargs):
        return connect(self.socket, **kwargs)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """Stop the server by its PID (SIGTERM, SIGKILL after 30 s) and remove its directory."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.base, ignore_errors=True)


class BinlogServer(PrivateMariaDB):
    """A private mariadbd with --log-bin, --server-id and binlog_format=ROW that keeps its data across restarts."""

    def restart(self) -> None:
        """Stop the server cleanly (SIGTERM, by PID) and start it again on the same datadir, port and socket."""
        self.process.terminate()
        self.process.wait(timeout=60)
        self.start()

    def binlog_path(self, name: str) -> Path:
        return self.datadir / name


def master_status(conn) -> tuple[str, int]:
    """Return the server's current binlog file and position."""
    name, position = execute(conn, "SHOW MASTER STATUS")[0][:2]
    return name, int(position)


def private_base() -> Path:
    """A new private directory for a server's data and socket, with a short path."""
    # Short paths: a Unix socket path must fit in 108 bytes.
    return Path(tempfile.mkdtemp(prefix="covet-my-", dir="/tmp"))
