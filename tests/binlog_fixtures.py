"""Helpers for the binlog PITR tests: loads on a private mariadbd (bench.servers.mariadb.BinlogServer),
binlog listings and checksums, and waiting for the next second."""

import hashlib
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pymysql

from bench.servers.mariadb import PrivateMariaDB, execute, q


def server_binlogs(conn) -> list[str]:
    return [row[0] for row in execute(conn, "SHOW BINARY LOGS")]


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def insert(conn, schema: str, ids) -> None:
    """Insert one row per id, each in its own autocommitted transaction."""
    for number in ids:
        execute(conn, f"INSERT INTO {q(schema)}.orders (id, note) VALUES (%s, %s)", args=(number, f"order {number}"))


def ids(conn, schema: str) -> list[int]:
    return [row[0] for row in execute(conn, f"SELECT id FROM {q(schema)}.orders ORDER BY id")]


def schema_exists(conn, schema: str) -> bool:
    return bool(execute(conn, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                        args=(schema,))[0][0])


def next_second() -> datetime:
    """Sleep into the next wall-clock second (binlog times have one-second resolution); return the time then."""
    now = time.time()
    time.sleep(1.05 - (now % 1))
    return datetime.now(timezone.utc)


class Load(threading.Thread):
    """Insert rows steadily and rotate the binlog now and then; survive a server restart by reconnecting."""

    def __init__(self, server: PrivateMariaDB, schema: str, first_id: int = 1, rotate_every: float = 0.7):
        super().__init__(daemon=True)
        self.server = server
        self.schema = schema
        self.rotate_every = rotate_every
        self.stopping = threading.Event()
        self.next_id = first_id
        self.errors = 0

    def run(self) -> None:
        conn = None
        rotated = time.monotonic()
        while not self.stopping.is_set():
            try:
                if conn is None:
                    conn = pymysql.connect(unix_socket=self.server.socket, user="root", autocommit=True)
                insert(conn, self.schema, [self.next_id])
                self.next_id += 1
                if time.monotonic() - rotated > self.rotate_every:
                    execute(conn, "FLUSH BINARY LOGS")
                    rotated = time.monotonic()
                time.sleep(0.005)
            except pymysql.MySQLError:
                # The server is restarting; the row may or may not have committed: skip its id.
                self.errors += 1
                self.next_id += 1
                conn = None
                time.sleep(0.1)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)
