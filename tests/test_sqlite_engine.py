"""The SQLite engine: consistent online backups under concurrent writes; restores that never leave a bad file."""

import io
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from covet.engines import ConnectionParams, open_engine
from covet.errors import DamagedError, NotFoundError, UsageError
from tests.conftest import wait_for

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


def test_the_temporary_copy_is_removed(engine, tmp_path, sample_sqlite):
    with engine.dump(str(sample_sqlite)) as dump:
        assert dump.stream.read(16) == b"SQLite format 3\x00"
    assert list((tmp_path / "scratch").iterdir()) == []


def test_a_missing_database_is_not_found(engine, tmp_path):
    with pytest.raises(NotFoundError):
        with engine.dump(str(tmp_path / "none.db")):
            pass
    assert not (tmp_path / "none.db").exists()


def test_a_restore_of_garbage_leaves_no_file(engine, tmp_path):
    with pytest.raises(DamagedError, match="not a SQLite database"):
        engine.restore(io.BytesIO(b"garbage" * 1000), str(tmp_path / "out.db"))
    assert list(tmp_path.iterdir()) == []


def test_a_stream_that_fails_half_way_leaves_no_file(engine, tmp_path, sample_sqlite):
    data = sample_sqlite.read_bytes()

    class Failing(io.BytesIO):
        def read(self, n=-1):
            if self.tell() > len(data) // 2:
                raise DamagedError("frame 3 failed authentication")
            return super().read(min(n, 4096))

    with pytest.raises(DamagedError):
        engine.restore(Failing(data), str(tmp_path / "out.db"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.sqlite3"]


def test_a_restore_never_replaces_an_existing_file(engine, sample_sqlite):
    with pytest.raises(UsageError, match="already exists"):
        engine.restore(io.BytesIO(b""), str(sample_sqlite))
