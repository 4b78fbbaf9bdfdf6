"""The SQLite engine: the engine contract, consistent online backups under concurrent writes, and restores
that never leave a bad file."""

import io
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from covet.engines import ConnectionParams, open_engine
from covet.errors import DamagedError
from tests.helpers import wait_for

from tests.engine_contract import ContractDatabases, EngineContract

WRITER = textwrap.dedent("""
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    deadline = time.monotonic() + float(sys.argv[2])
    n = 0
    while time.monotonic() < deadline:
        with conn:
            conn.execute("INSERT INTO ledger (amount, note) VALUES (?, ?)", (n % 97, "x" * (n % 300)))
            conn.execute("UPDATE totals SET total = total + ?, entries = entries + 1", (n % 97,))
        n += 1
    print(n)
""")


@pytest.fixture
def engine(tmp_path):
    return open_engine("sqlite", ConnectionParams(), str(tmp_path / "scratch"))


class SqliteFiles(ContractDatabases):
    """SQLite databases are files, all in one directory that goes with the test's tmp_path."""

    def __init__(self, directory):
        self.directory = directory
        directory.mkdir()

    def table(self, name: str) -> str:
        return f"main.{name}"

    def create(self, rows: list[tuple]) -> str:
        path = self.new_name()
        conn = sqlite3.connect(path)
        with conn:
            conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, note TEXT)")
            conn.execute("CREATE TABLE empty (id INTEGER PRIMARY KEY)")
            conn.executemany("INSERT INTO items VALUES (?, ?)", rows)
        conn.close()
        return path

    def new_name(self) -> str:
        return str((self.directory / f"{uuid.uuid4().hex[:10]}.db").resolve())

    def rows(self, database: str) -> list[tuple]:
        conn = sqlite3.connect(database)
        try:
            return conn.execute("SELECT id, note FROM items ORDER BY id").fetchall()
        finally:
            conn.close()

    def traces(self, database: str) -> list[str]:
        name = database.rsplit("/", 1)[-1]
        # The restore writes .NAME.*.restoring beside its target before it renames it.
        return sorted(p.name for p in self.directory.iterdir() if p.name == name or p.name.startswith(f".{name}."))


class TestSqliteEngineContract(EngineContract):
    @pytest.fixture
    def databases(self, tmp_path):
        return SqliteFiles(tmp_path / "databases")


def make_ledger(path):
    conn = sqlite3.connect(path)
    conn.executescript("""
        PRAGMA journal_mode=WAL;
        CREATE TABLE ledger (id INTEGER PRIMARY KEY, amount INTEGER, note TEXT);
        CREATE TABLE totals (total INTEGER, entries INTEGER);
        INSERT INTO totals VALUES (0, 0);
    """)
    conn.close()


def ledger_rows(path) -> int:
    """Return how many ledger rows are committed in the database at ``path``."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        return conn.execute("SELECT count(*) FROM ledger").fetchone()[0]
    finally:
        conn.close()


def test_a_backup_taken_during_writes_restores_to_a_consistent_database(engine, tmp_path):
    source = tmp_path / "ledger.db"
    make_ledger(source)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(source), "6"], stdout=subprocess.PIPE, text=True)
    try:
        # Its first commit, not a guess at how long it takes to start, says the writer is going.
        wait_for(lambda: ledger_rows(source) > 0, timeout=30, interval=0.05, message="the writer's first commit")
        snapshots = []
        for i in range(3):
            with engine.dump(str(source)) as dump:
                target = tmp_path / f"copy{i}.db"
                engine.restore(dump.stream, str(target))
            snapshots.append(target)
            time.sleep(0.5)
    finally:
        written = int(writer.communicate(timeout=30)[0])
    assert written > 100
    counts = []
    for target in snapshots:
        conn = sqlite3.connect(target)
        total, entries = conn.execute("SELECT total, entries FROM totals").fetchone()
        count, amount = conn.execute("SELECT count(*), coalesce(sum(amount), 0) FROM ledger").fetchone()
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
        assert (count, amount) == (entries, total)  # every transaction whole, none half
        counts.append(count)
    assert counts == sorted(counts) and counts[-1] > 0


def test_the_dump_is_the_database_file_itself(engine, sample_sqlite):
    with engine.dump(str(sample_sqlite)) as dump:
        assert dump.stream.read(16) == b"SQLite format 3\x00"


def test_a_restore_of_garbage_leaves_no_file(engine, tmp_path):
    with pytest.raises(DamagedError, match="not a SQLite database"):
        engine.restore(io.BytesIO(b"garbage" * 1000), str(tmp_path / "out.db"))
    assert list(tmp_path.iterdir()) == []
