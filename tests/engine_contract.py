"""Contract tests every database engine must pass, written once (like Django's session backend tests).

covet/engines/base.py states the contract: ``estimate_size``, ``dump`` (a
stream and the row-count manifest of its snapshot), ``restore`` (into a new
database, refusing a non-empty one unless ``clean``, leaving no half-made new
target when it fails), ``row_counts``. A test module subclasses
``EngineContract`` and provides two fixtures: ``engine``, the engine under
test with a temporary directory of its own, and ``databases``, a
``ContractDatabases`` for the same server. Nothing here knows which engine
it is talking to.
"""

import io
from pathlib import Path

import pytest

from covet.engines import RestoreOptions, compare_manifests
from covet.errors import DamagedError, NotFoundError, UsageError

# Rows of the ``items`` table every source database holds: text a dump must keep byte for byte.
ROWS = [(1, "plain"), (2, None), (3, ""), (4, "żółć ✓ 日本語 🎉"),
        (5, "quote ' double \" backslash \\ semicolon ; newline \n tab \t end")]
ROWS += [(number, f"row {number} " + "x" * (number % 40)) for number in range(6, 201)]


class ContractDatabases:
    """What the contract needs from a server besides the engine: one subclass per engine.

    ``create`` makes a new database holding ``items (id integer primary key,
    note text)`` with the given rows and an empty table ``empty``; the
    fixture that returns it drops, at teardown, every database it made and
    every name ``new_name`` handed out.
    """

    def table(self, name: str) -> str:
        """The table's name as the engine's manifests spell it (e.g. "public.items")."""
        raise NotImplementedError

    def create(self, rows: list[tuple]) -> str:
        """A new database with ``items`` holding ``rows`` and an empty table ``empty``; return its name."""
        raise NotImplementedError

    def new_name(self) -> str:
        """A database name nothing uses yet."""
        raise NotImplementedError

    def rows(self, database: str) -> list[tuple]:
        """The rows of ``items`` in ``database``, by id."""
        raise NotImplementedError

    def traces(self, database: str) -> list[str]:
        """What exists of ``database``: the database itself or files a restore into it would write; [] for none."""
        raise NotImplementedError


class BreaksHalfway(io.RawIOBase):
    """A plaintext stream whose second half fails authentication, as a damaged backup's would."""

    def __init__(self, data: bytes):
        self.data = io.BytesIO(data)
        self.limit = len(data) // 2

    def readable(self):
        return True

    def read(self, size=-1):
        if self.data.tell() >= self.limit:
            raise DamagedError("frame 3 failed authentication")
        room = self.limit - self.data.tell()
        return self.data.read(room if size is None or size < 0 else min(size, room))


def dumped(engine, database: str):
    """Dump ``database`` whole; return the plaintext and the Dump (its manifest and meta)."""
    with engine.dump(database) as dump:
        data = b"".join(iter(lambda: dump.stream.read(64 * 1024), b""))
    return data, dump


def leftovers(engine) -> list[str]:
    """What is in the engine's temporary directory (every dump and restore must clean up after itself)."""
    tmp = Path(engine.tmp_dir)
    return sorted(path.name for path in tmp.iterdir()) if tmp.exists() else []


class EngineContract:
    """Behaviour shared by every engine."""

    def test_a_dump_restores_into_a_new_database_with_the_same_rows(self, engine, databases):
        source = databases.create(ROWS)
        data, dump = dumped(engine, source)
        target = databases.new_name()
        result = engine.restore(io.BytesIO(data), target)
        assert databases.rows(target) == databases.rows(source) == ROWS
        assert target in result.location
        assert compare_manifests(dump.manifest, engine.row_counts(target)) == {
            "compared": 2, "differences": [], "skipped": []}

    def test_the_manifest_counts_every_table_of_the_dumped_snapshot(self, engine, databases):
        source = databases.create(ROWS)
        _, dump = dumped(engine, source)
        assert dump.manifest == {"consistent": True, "tables": {
            databases.table("empty"): {"rows": 0, "exact": True},
            databases.table("items"): {"rows": len(ROWS), "exact": True}}}

    def test_row_counts_counts_every_table_or_only_those_named(self, engine, databases):
        source = databases.create(ROWS[:7])
        items, empty = databases.table("items"), databases.table("empty")
        assert engine.row_counts(source) == {"consistent": True, "tables": {
            empty: {"rows": 0, "exact": True}, items: {"rows": 7, "exact": True}}}
        assert engine.row_counts(source, (items,))["tables"] == {items: {"rows": 7, "exact": True}}

    def test_the_size_estimate_is_a_positive_number_of_bytes(self, engine, databases):
        size = engine.estimate_size(databases.create(ROWS))
        assert isinstance(size, int) and size > 0

    def test_a_missing_database_is_not_found_and_not_created(self, engine, databases):
        missing = databases.new_name()
        with pytest.raises(NotFoundError):  # on entering the dump or, from its tool, while it streams
            dumped(engine, missing)
        try:  # the contract allows "unknown" (None) for a database it cannot see
            size = engine.estimate_size(missing)
        except NotFoundError:
            size = None
        assert size is None
        assert databases.traces(missing) == []
        assert leftovers(engine) == []

    def test_a_restore_that_fails_half_way_leaves_no_new_database(self, engine, databases):
        data, _ = dumped(engine, databases.create(ROWS))
        target = databases.new_name()
        with pytest.raises(DamagedError, match="frame 3"):
            engine.restore(BreaksHalfway(data), target)
        assert databases.traces(target) == []
        assert leftovers(engine) == []

    def test_a_database_that_is_not_empty_is_replaced_only_with_clean(self, engine, databases):
        data, _ = dumped(engine, databases.create(ROWS))
        occupied = databases.create(ROWS[:3])
        with pytest.raises(UsageError, match="already exists"):
            engine.restore(io.BytesIO(data), occupied)
        assert databases.rows(occupied) == ROWS[:3]
        engine.restore(io.BytesIO(data), occupied, RestoreOptions(clean=True))
        assert databases.rows(occupied) == ROWS

    def test_nothing_is_left_in_the_engines_temporary_directory(self, engine, databases):
        source = databases.create(ROWS)
        data, _ = dumped(engine, source)
        engine.restore(io.BytesIO(data), databases.new_name())
        engine.row_counts(source)
        engine.estimate_size(source)
        assert leftovers(engine) == []
